"""Standard against robust training of `keras.applications` backbones on CIFAR-10: clean accuracy and ARA.

Each network (`keras_robust.models.backbones.backbone`: random weights, [0, 1]
input, half-Huber activations, the same converted network for every run; or
`resnetD`, the paper's half-Huber CIFAR ResNet of depth D, as a reference and
for short checks) is trained three ways, each run in its own folder under `--out`:

- standard: `RobustModel(robust=False)`, `--epochs` epochs;
- robust: `RobustModel` with its defaults (regulariser, adaptive ψ), the same epochs;
- finetune: robust training from the standard run's final weights, ceil(epochs / 3) epochs.

All use SGD with momentum 0.9, coupled weight decay, batch 128, augmented
training images and a cosine learning rate over the run's epochs. After each
run its clean accuracy on the whole test split and its attack and BTR ARA on
the same `--ara-images` test images (`evaluation_indices`) are added to
`--json`. A kill at any instant loses at most the epoch or ARA batch under
way: training resumes from the run's last checkpoint (`RunState`), the ARA
from its own (`ara(checkpoint=...)`), and a run already in `--json` is not
repeated, so the same command, run again, continues where it stopped. Goals
(issue): robust ARA >= 3x the standard network's at an accuracy within 10
points; fine-tuned ARA >= 2x at an accuracy within 5 points; no non-finite
value in any run.

    PYTHONUNBUFFERED=1 nohup python benchmarks/robust_backbones.py \
        --data ../shared/data/cifar10-jpeg.tar.gz >> runs/robust_backbones.log 2>&1 &
    python benchmarks/robust_backbones.py --report      # the table and the goals, from the JSON
    python benchmarks/robust_backbones.py --data ... --networks resnet8 --epochs 1 --limit-train 256 \
        --limit-test 64 --ara-images 8 --ara-steps 40 --out /tmp/rb --json /tmp/rb.json   # a check in a minute
"""

import argparse
import json
import math
import os
import re
import sys
import time

from keras_robust.common.atomic import write_atomically  # first: keras_robust before TensorFlow (oneDNN kernels)
from keras_robust.common.defaults import ARA_STEPS, SEED
from keras_robust.common.machine import cpu_summary

NETWORKS = ("MobileNetV2", "EfficientNetB0", "MobileNetV3Small")
RUNS = ("standard", "robust", "finetune")
# The issue's goals: (attack and BTR ARA at least this many times the standard network's, accuracy at most this many
# points below it; a more accurate network meets the second part).
GOALS = {"robust": (3.0, 10.0), "finetune": (2.0, 5.0)}
MOMENTUM = 0.9
ARA_FILE = "ara.npz"
RECALIBRATION_BATCHES = 100
# The paper's CIFAR ResNets (`keras_robust.resnet`), depth 6n + 2.
RESNET = re.compile(r"resnet(\d+)")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="CIFAR-10 archive or folder of class folders (32x32)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS),
                        help=f"keras.applications names or resnetD (default: {' '.join(NETWORKS)})")
    parser.add_argument("--epochs", type=int, default=15, help="standard and robust runs; finetune takes a third")
    parser.add_argument("--lr", type=float, default=0.05, help="initial learning rate of the cosine schedule")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ara-images", type=int, default=500, help="test images of every ARA")
    parser.add_argument("--ara-steps", type=int, default=ARA_STEPS, help=f"attack steps of the ARA ({ARA_STEPS})")
    parser.add_argument("--limit-train", type=int, help="train on this many images only (short checks)")
    parser.add_argument("--limit-test", type=int, help="test on this many images only (short checks)")
    parser.add_argument("--out", default="runs/robust_backbones", help="run folders: OUT/<network>/<run>")
    parser.add_argument("--json", default="docs/figures/robust_backbones.json")
    parser.add_argument("--report", action="store_true", help="only print the table of --json and the goals")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_arguments(argv)
    if args.report:
        results = read_results(args.json)
        if not results["runs"]:
            raise SystemExit(f"robust_backbones: no results in {args.json}; run the benchmark first")
        print(report_markdown(results))
        return
    check_arguments(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = "python benchmarks/robust_backbones.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = read_results(args.json)
    settings = run_settings(args)
    for key, record in results["runs"].items():
        if record["network"] in args.networks and record["settings"] != settings:
            raise SystemExit(f"robust_backbones: {args.json} holds the {key} run with other settings "
                             f"({record['settings']}); use another --json and --out, or the same options")
    test = None
    for network in args.networks:
        for run_name in RUNS:
            key = f"{network} {run_name}"
            if key in results["runs"]:
                print(f"{key}: complete, in {args.json}", flush=True)
                continue
            test = test or evaluation_split(args)
            record = run_one(network, run_name, args, settings, test)
            record.update(machine=cpu_summary(), data=args.data, command=command)
            results["runs"][key] = record
            write_atomically(args.json, json.dumps(results, indent=2))
            print(f"{key}: {record['epochs_done']} epochs, clean accuracy "
                  f"{_number(record.get('clean_accuracy'), '.4f')}, attack ARA "
                  f"{_number(record.get('attack_ara'), '.5f')}, BTR ARA {_number(record.get('btr_ara'), '.5f')}, "
                  f"{record['wall_seconds']:.0f} s, non-finite {record['non_finite']}", flush=True)
    print(report_markdown(results), flush=True)


def check_arguments(args):
    """One-line errors for what would otherwise fail deep inside a run."""
    if not args.data:
        raise SystemExit("robust_backbones: --data is required (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    if not str(args.data).startswith("tfds:") and not os.path.exists(args.data):
        raise SystemExit(f"robust_backbones: no data at {args.data}; give --data the CIFAR-10 archive or a folder "
                         "of class folders (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    from keras_robust.models.backbones import BACKBONES

    unknown = [n for n in args.networks if n not in BACKBONES and not is_resnet(n)]
    if unknown:
        raise SystemExit(f"robust_backbones: unknown network {', '.join(unknown)}; choose from {', '.join(BACKBONES)} "
                         "or resnetD with D = 6n + 2 (resnet8, resnet20, ...)")
    for name in ("epochs", "batch_size", "ara_images", "ara_steps", "limit_train", "limit_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"robust_backbones: --{name.replace('_', '-')} must be at least 1. Received: {value}")


def is_resnet(network):
    match = RESNET.fullmatch(network)
    return bool(match) and int(match.group(1)) >= 8 and (int(match.group(1)) - 2) % 6 == 0


def classifier_of(network):
    """The untrained half-Huber classifier of [0, 1] CIFAR-10 images that every run of `network` starts from."""
    import keras_robust
    from keras_robust.models.backbones import backbone

    if is_resnet(network):
        return keras_robust.resnet(depth=int(RESNET.fullmatch(network).group(1)), num_classes=10)
    return backbone(network, num_classes=10)


def run_settings(args):
    """What a run's figures depend on besides the network and the data: runs recorded with others are not comparable."""
    names = ("epochs", "lr", "weight_decay", "batch_size", "limit_train", "limit_test", "ara_images", "ara_steps")
    return {name: getattr(args, name) for name in names}


def read_results(path):
    if not os.path.exists(path):
        return {"runs": {}}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def run_epochs(run_name, epochs):
    return math.ceil(epochs / 3) if run_name == "finetune" else epochs


def cosine_learning_rate(epoch, epochs, learning_rate):
    """The learning rate of 0-based `epoch`: a function of the epoch alone, so a resumed run continues the curve."""
    return learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def evaluation_split(args):
    """`(test data, ARA images, ARA labels)`: every run is measured on the same images."""
    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import evaluation_indices

    test = load_dataset(args.data, "test", batch_size=500, limit=args.limit_test, seed=SEED)
    images, labels = test.arrays()
    if args.ara_images > len(labels):
        raise SystemExit(f"robust_backbones: --ara-images {args.ara_images} is more than the {len(labels)} test images")
    chosen = evaluation_indices(len(labels), args.ara_images)
    return test, images[chosen], labels[chosen]


def run_one(network, run_name, args, settings, test):
    """Trains (or resumes) one run, then evaluates it; returns its record for the JSON."""
    import numpy as np

    from keras_robust.training.run_folder import RunFolder

    run = RunFolder(os.path.join(args.out, network, run_name)).make()
    epochs = run_epochs(run_name, settings["epochs"])
    model, rows, failure = train(run, network, run_name, epochs, args)
    test_data, ara_images, ara_labels = test
    start = time.perf_counter()
    evaluation = evaluate(model, run, test_data, ara_images, ara_labels, args) if rows else {}
    evaluate_seconds = time.perf_counter() - start
    last = rows[-1] if rows else {}
    logged = [value for row in rows for value in row.values()]
    train_seconds = sum(row.get("seconds", 0.0) for row in rows)
    return {
        "network": network, "run": run_name, "epochs": epochs, "epochs_done": len(rows), "settings": settings,
        "train_ce": last.get("ce"), "train_l_adv": last.get("l_adv"), "train_psi": last.get("psi"),
        "train_accuracy": last.get("accuracy"), **evaluation,
        "non_finite": failure is not None or not all(np.isfinite(v) for v in [*logged, *evaluation.values()]),
        "failure": failure,
        # Training time is the finished epochs' own, so an interrupted run's lost work is not counted.
        "train_seconds": train_seconds, "evaluate_seconds": evaluate_seconds,
        "wall_seconds": train_seconds + evaluate_seconds, "run_folder": run.path,
    }


def build(network, run_name, args, standard_run=None):
    """The compiled `RobustModel` of a run; a new finetune run starts from `standard_run`'s final weights."""
    import keras

    import keras_robust
    from keras_robust.training.checkpoint import restore_latest

    # The same seed for every run: standard and robust start from the same weights.
    keras.utils.set_random_seed(SEED)
    classifier = classifier_of(network)
    if standard_run is not None:
        # The standard run's own model around the same classifier object, restored from its last checkpoint.
        donor = compiled(keras_robust.RobustModel(classifier, robust=False, weight_decay=args.weight_decay), args)
        restore(donor, standard_run, restore_latest(standard_run.backup))
    model = keras_robust.RobustModel(classifier, robust=run_name != "standard", weight_decay=args.weight_decay)
    return compiled(model, args)


def compiled(model, args):
    import keras

    model.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=MOMENTUM))
    return model


def restore(model, run, restored):
    """Loads checkpoint `restored` into the compiled `model` as a resumed `fit` does; returns its epochs' log rows."""
    from keras_robust.training.checkpoint import RunState

    state = RunState(run, restored, write=False)
    state.set_model(model)
    state.on_train_begin()
    return state.rows


def train(run, network, run_name, epochs, args):
    """`(model, log rows of the finished epochs, failure message or None)`, resuming from the run's checkpoint."""
    import keras

    from keras_robust.data import load_dataset
    from keras_robust.method.non_finite_guard import NonFiniteTrainingError
    from keras_robust.reporting.training_report import TrainingReport
    from keras_robust.training.checkpoint import RunState, restore_latest
    from keras_robust.training.run_folder import RunFolder

    identity = {"network": network, "run": run_name, "epochs": epochs, "learning_rate": args.lr,
                "weight_decay": args.weight_decay, "batch_size": args.batch_size, "limit_train": args.limit_train}
    recorded = run.read_json(run.identity)
    if recorded and recorded != identity:
        # Its checkpoints belong to other settings: resuming them would mix two runs.
        raise SystemExit(f"robust_backbones: {run.path} holds a run started with other settings ({recorded}); "
                         "use another --out, or that run's options")
    run.remove_leftovers()
    run.write_json(run.identity, identity)
    restored = restore_latest(run.backup)
    start = restored[1]["epoch"] if restored else 0
    standard = None
    if run_name == "finetune" and restored is None:
        standard = RunFolder(os.path.join(args.out, network, "standard"))
        if restore_latest(standard.backup) is None:
            raise SystemExit(f"robust_backbones: {network} finetune needs the standard run's checkpoint in "
                             f"{standard.backup}")
    model = build(network, run_name, args, standard)
    if start >= epochs:
        # Trained, but killed before its evaluation was recorded.
        print(f"{network} {run_name}: trained ({epochs} epochs), evaluating", flush=True)
        return model, restore(model, run, restored), None
    print(f"{network} {run_name}: epochs {start + 1}-{epochs} of {epochs}"
          + (f" (resumed after epoch {start})" if start else ""), flush=True)
    # The epoch stream starts at `start`, so a resumed run sees the batches an uninterrupted one would.
    train_data = load_dataset(args.data, "train", batch_size=args.batch_size, augment=True, limit=args.limit_train,
                              seed=SEED, first_epoch=start)
    run_state = RunState(run, restored)
    # In this order, as in `keras_robust.training.loop`: each saved log row holds the epoch's learning rate and time.
    callbacks = [keras.callbacks.LearningRateScheduler(lambda epoch: cosine_learning_rate(epoch, epochs, args.lr)),
                 epoch_timer(), run_state, TrainingReport(run, run_state)]
    failure = None
    try:
        model.fit(train_data.dataset, epochs=epochs, steps_per_epoch=train_data.steps_per_epoch,
                  callbacks=callbacks, verbose=2)
    except NonFiniteTrainingError as error:
        failure = str(error)
    failure = failure or run_state.failure
    if failure is None:
        return model, run_state.rows, None
    # Evaluated as its last good epoch left it, and recorded with the failure.
    print(f"{network} {run_name}: {failure}", flush=True)
    restored = restore_latest(run.backup)
    return model, restore(model, run, restored) if restored else [], failure


def epoch_timer():
    """A callback adding each epoch's seconds to its logs, so the checkpointed rows hold every finished epoch's time."""
    import keras

    began = {}
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: began.update(at=time.perf_counter()),
        on_epoch_end=lambda epoch, logs: logs.update(seconds=time.perf_counter() - began["at"]))


def evaluate(model, run, test, ara_images, ara_labels, args):
    """Clean accuracy on the test split, and attack and BTR ARA, resumable through the run's ARA checkpoint.

    First the batch-normalization statistics are recomputed over `RECALIBRATION_BATCHES` training batches
    (`keras_robust.recalibrate_batch_norm`): `keras.applications` networks keep them with momentum 0.999,
    and the standard MobileNetV2's stale ones left it at chance in inference mode. The accuracy before is
    recorded too.

    Images broken only after step N/2 (docs/method.md §4's sanity check), or never, are counted rather than
    stopping the benchmark: more steps do not help them (the standard MobileNetV2's one late image changed
    class at step 353 of 450 and was still late with 900; 10 of its first 100 images never fell to p_y = 1/K,
    their output flattening towards uniform as δ grows).
    """
    import keras

    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import ara
    from keras_robust.training.batch_norm import recalibrate_batch_norm

    stale = model.evaluate(test.dataset, verbose=0, return_dict=True)["accuracy"]
    layers = 0
    if any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.classifier._flatten_layers()):
        train = load_dataset(args.data, "train", batch_size=args.batch_size, augment=True, limit=args.limit_train,
                             seed=SEED)
        layers = recalibrate_batch_norm(model.classifier, train.dataset, RECALIBRATION_BATCHES)
    accuracy = model.evaluate(test.dataset, verbose=0, return_dict=True)["accuracy"]
    scores = ara(model.classifier, ara_images, ara_labels, steps=args.ara_steps, progress=False,
                 checkpoint=os.path.join(run.path, ARA_FILE), sanity_check=False)
    return {"clean_accuracy": float(accuracy), "clean_accuracy_before_recalibration": float(stale),
            "batch_norm_layers_recalibrated": layers, "test_images": test.num_examples, "attack_ara": scores.attack_ara,
            "btr_ara": scores.btr_ara, "ara_images": len(ara_labels), "ara_clean_accuracy": scores.clean_accuracy,
            **{f"{mode}_{what}_images": getattr(scores, f"{mode}_{what}_images")
               for mode in ("attack", "btr") for what in ("late", "unbroken")}}


def _late(record, mode):
    """A note on an ARA with images broken only after step N/2 or never, so that it is not exact."""
    notes = [f"{record[f'{mode}_{what}_images']} {what}" for what in ("late", "unbroken")
             if record.get(f"{mode}_{what}_images")]
    return f" ({', '.join(notes)})" if notes else ""


def _ratio(value, standard):
    if value is None or standard is None:
        return None
    if standard == 0:
        return math.inf if value > 0 else None
    return value / standard


def _times(ratio):
    return "n/a" if ratio is None else "∞" if math.isinf(ratio) else f"{ratio:.2f}×"


def _number(value, form):
    return "n/a" if value is None else format(value, form)


def comparison(record, standard):
    """`(attack ARA ratio, BTR ARA ratio, accuracy difference in points)` of `record` against `standard`."""
    if standard is None or record.get("clean_accuracy") is None or standard.get("clean_accuracy") is None:
        return None, None, None
    return (_ratio(record["attack_ara"], standard["attack_ara"]), _ratio(record["btr_ara"], standard["btr_ara"]),
            100.0 * (record["clean_accuracy"] - standard["clean_accuracy"]))


def report_markdown(results):
    """The markdown table of `results` (what `--json` holds) and one sentence per network on the issue's goals."""
    runs = results["runs"]
    networks = list(dict.fromkeys(record["network"] for record in runs.values()))
    lines = ["| network | run | epochs | clean accuracy | attack ARA | BTR ARA | ARA × standard (attack / BTR) | "
             "accuracy − standard |", "|---|---|---|---|---|---|---|---|"]
    sentences = []
    for network in networks:
        standard = runs.get(f"{network} standard")
        for run_name in RUNS:
            record = runs.get(f"{network} {run_name}")
            if record is None:
                continue
            attack, btr, points = comparison(record, standard)
            accuracy = record.get("clean_accuracy")
            relative = ("—", "—") if run_name == "standard" else (
                f"{_times(attack)} / {_times(btr)}", "n/a" if points is None else f"{points:+.1f} points")
            lines.append(f"| {network} | {run_name} | {record['epochs_done']} of {record['epochs']} | "
                         f"{_number(None if accuracy is None else 100 * accuracy, '.2f')} % | "
                         f"{_number(record.get('attack_ara'), '.5f')}{_late(record, 'attack')} | "
                         f"{_number(record.get('btr_ara'), '.5f')}{_late(record, 'btr')} | "
                         f"{relative[0]} | {relative[1]} |")
        sentences.append(goal_sentence(network, runs))
    first = next(iter(runs.values()))
    caption = (f"CIFAR-10 ({first['data']}); ARA on the same {first.get('ara_images')} test images "
               f"({first['settings']['ara_steps']} attack steps), clean accuracy on {first.get('test_images')}; "
               f"{first['machine']}. \"n late\": n images first broken after half the attack steps, so that "
               "ARA may be a loose upper bound; \"n unbroken\": n images the attack never broke, counted as "
               "correct up to the largest perturbation that broke another image.")
    return "\n".join([caption, "", *lines, "", *sentences]) + "\n"


def goal_sentence(network, runs):
    """Whether `network` met the issue's two goals, from its records."""
    standard = runs.get(f"{network} standard")
    if standard is None or standard.get("clean_accuracy") is None:
        return f"{network}: no standard run evaluated yet, so the goals cannot be judged."
    parts = []
    for run_name, (times, points_allowed) in GOALS.items():
        record = runs.get(f"{network} {run_name}")
        what = "robust training" if run_name == "robust" else "robust fine-tuning"
        if record is None or record.get("clean_accuracy") is None:
            parts.append(f"{what} is not measured yet")
            continue
        attack, btr, points = comparison(record, standard)
        met = (attack is not None and btr is not None and attack >= times and btr >= times
               and points >= -points_allowed)
        parts.append(f"{what} {'met' if met else 'did not meet'} its goal (attack and BTR ARA ≥ {times:g}× the "
                     f"standard network's, accuracy at most {points_allowed:g} points below it): attack ARA "
                     f"{_times(attack)}, BTR ARA {_times(btr)}, accuracy {points:+.1f} points")
    non_finite = [name for name in RUNS if (runs.get(f"{network} {name}") or {}).get("non_finite")]
    finite = (f"non-finite values in the {', '.join(non_finite)} run{'s' * (len(non_finite) > 1)}" if non_finite
              else "no non-finite value in any recorded run")
    return f"{network}: {'; '.join(parts)}; {finite}."


if __name__ == "__main__":
    main()
