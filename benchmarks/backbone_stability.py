"""Robust training of every `keras.applications` backbone and the paper's ResNets: finite or not.

Each network (`keras_robust.models.backbones`, converted with
`with_half_huber_relu`; random weights) takes `--steps` robust steps of
`RobustModel` with its defaults and coupled weight decay 1e-4, SGD with
momentum 0.9, on batches of the JPEG CIFAR-10's training images, at each
`--lrs` learning rate; `--paper-psi` runs the same with the paper's ψ
unbounded (`max_gradient_ratio=None`), and `--standard` standard training (no
regulariser), at the first learning rate, for comparison. One subprocess per run; each
result is added to `--json` as it ends, so an interrupted run resumes where it
stopped (a run already recorded is not repeated).

    python benchmarks/backbone_stability.py --data ../shared/data/cifar10-jpeg.tar.gz --paper-psi --standard
    python benchmarks/backbone_stability.py --data ... --networks MobileNetV2 resnet20 --lrs 0.1 --steps 20
    python benchmarks/backbone_stability.py --report     # its table into docs/method.md §3a
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

from keras_robust.common.atomic import write_atomically
from keras_robust.common.machine import cpu_summary
from keras_robust.models.backbones import BACKBONES

RESNETS = ("resnet20", "resnet44")
VARIANTS = {"default": {}, "paper_psi": {"max_gradient_ratio": None}, "standard": {"robust": False}}
# The steps whose mean cross-entropy and accuracy end a run's record.
LAST_STEPS = 20
METHOD_PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "method.md")


def run_one(network, learning_rate, variant, steps, batch_size, data):
    """One run in this process; returns its record."""
    import keras_robust
    import keras
    import numpy as np
    from keras_robust.method.non_finite_guard import NonFiniteTrainingError
    from keras_robust.models.backbones import backbone

    keras.utils.set_random_seed(0)
    if network in RESNETS:
        classifier = keras_robust.resnet(depth=int(network[len("resnet"):]))
    else:
        classifier = backbone(network)
    size = classifier.input_shape[1]
    loaded = keras_robust.data.load_dataset(data, "train", batch_size=batch_size, limit=steps * batch_size,
                                            image_size=None if size == 32 else (size, size), drop_remainder=True)
    model = keras_robust.RobustModel(classifier, weight_decay=1e-4, **VARIANTS[variant])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    rows = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rows.append(
        [logs["ce"], logs.get("l_adv", 0.0), logs.get("psi", 0.0), logs["accuracy"]]))
    failure = None
    start = time.perf_counter()
    try:
        # One step an epoch, so that every logged value is that step's own.
        model.fit(loaded.dataset.repeat(), steps_per_epoch=1, epochs=steps, verbose=0, callbacks=[record])
    except NonFiniteTrainingError as error:
        failure = {"step": len(rows) + 1, "message": str(error)}
    seconds = time.perf_counter() - start
    values = np.array(rows, dtype="float64").reshape(-1, 4)
    finite_weights = all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in model.variables)
    return {
        "network": network, "learning_rate": learning_rate, "variant": variant, "input_size": size,
        "steps_done": len(rows), "failure": failure, "weights_finite": bool(finite_weights),
        "first_gradient_ratio": float(keras.ops.convert_to_numpy(model.first_gradient_ratio)),
        "psi_final": model.psi, "psi_last": float(values[-1, 2]) if len(values) else None,
        "l_adv_first": float(values[0, 1]) if len(values) else None,
        "l_adv_max": float(np.max(values[:, 1])) if len(values) else None,
        "ce_last": float(np.mean(values[-LAST_STEPS:, 0])) if len(values) else None,
        "accuracy_last": float(np.mean(values[-LAST_STEPS:, 3])) if len(values) else None,
        "seconds_per_step": seconds / max(len(rows), 1),
    }


def key_of(network, learning_rate, variant):
    return f"{network} lr={learning_rate} {variant}"


# A run "ends broken" if its last steps' mean cross-entropy is above this: 4.3x chance on ten classes.
BROKEN_CE = 10.0


VARIANT_TITLES = {"default": "bounded", "paper_psi": "paper's ψ", "standard": "standard"}


def _variant_sentence(what, chosen, steps):
    """How the runs `chosen` ended: finite through all steps, stopped on a non-finite step, or broken."""
    stopped = [f"{run['network']} at lr {run['learning_rate']:g}" for run in chosen if run["failure"]]
    broken = [f"{run['network']} at lr {run['learning_rate']:g}" for run in chosen
              if not run["failure"] and run["ce_last"] > BROKEN_CE]
    finite = [run for run in chosen
              if not run["failure"] and run["weights_finite"] and math.isfinite(run["psi_final"])]
    parts = [f"{what}, {len(finite)} of {len(chosen)} runs took all {steps} steps with finite losses, weights and ψ"]
    if stopped:
        parts.append(f"{', '.join(stopped)} stopped on a non-finite step (the guard stopped it; nothing non-finite "
                     "was applied or saved)")
    if broken:
        parts.append(f"{', '.join(broken)} ended with a cross-entropy above {BROKEN_CE:g}")
    return "; ".join(parts) + "."


def outcome(run):
    """A run's end in a few words: its last steps' cross-entropy, or where it stopped."""
    if run is None:
        return "not run"
    if run["failure"]:
        return f"non-finite at step {run['failure']['step']}"
    return f"CE {run['ce_last']:.2f}"


def stability_markdown(results):
    """The table of docs/method.md §3a and the sentences on it, from a `--json` record."""
    runs = results["runs"]
    lrs = {variant: sorted({run["learning_rate"] for run in runs.values() if run["variant"] == variant})
           for variant in VARIANTS}
    networks = list(dict.fromkeys(run["network"] for run in runs.values()))
    get = lambda network, lr, variant: runs.get(key_of(network, lr, variant))  # noqa: E731
    columns = [(variant, lr) for variant in VARIANTS for lr in lrs[variant]]
    header = ["network", "input", "first ratio", *(f"{VARIANT_TITLES[v]}, lr {lr:g}" for v, lr in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for network in networks:
        first = get(network, lrs["default"][0], "default")
        ratio = "–" if first is None else f"{first['first_gradient_ratio']:.3g}"
        size = "–" if first is None else f"{first['input_size']}²"
        cells = [outcome(get(network, lr, variant)) for variant, lr in columns]
        lines.append(f"| {network} | {size} | {ratio} | " + " | ".join(cells) + " |")
    bounded = [run for run in runs.values() if run["variant"] == "default"]
    sentences = [_variant_sentence("With the bound", bounded, results["steps"])]
    ratios = {run["network"]: run["first_gradient_ratio"] for run in bounded}
    ours = {n: r for n, r in ratios.items() if n in RESNETS}
    theirs = [r for n, r in ratios.items() if n not in RESNETS and r > 0]
    if theirs:
        sentences.append(f"On their first batch the regulariser's gradient was {min(theirs):.3g} to "
                         f"{max(theirs):.3g} times the cross-entropy's for the keras.applications networks with "
                         "normalisation layers"
                         + (f", and {' and '.join(f'{r:.2g}' for r in ours.values())} for "
                            f"{' and '.join(ours)}." if ours else "."))
    for variant, what in (("paper_psi", "With the paper's ψ unbounded"), ("standard", "Trained standard")):
        chosen = [run for run in runs.values() if run["variant"] == variant]
        if chosen:
            sentences.append(_variant_sentence(what, chosen, results["steps"]))
    caption = (f"`{results['command']}`: {results['steps']} robust steps of batches of {results['batch_size']} "
               f"JPEG CIFAR-10 training images, SGD with momentum 0.9, weight decay 1e-4; "
               f"\"CE\" is the mean cross-entropy of the last {LAST_STEPS} steps (chance: 2.30); {results['machine']}.")
    return "\n".join([caption, "", *lines, "", " ".join(sentences)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="CIFAR-10 archive or folder of class folders")
    parser.add_argument("--networks", nargs="+", default=[*BACKBONES, *RESNETS],
                        choices=[*BACKBONES, *RESNETS])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.1])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--paper-psi", action="store_true",
                        help="also run each network with the paper's psi0 kept, at the first learning rate")
    parser.add_argument("--standard", action="store_true",
                        help="also train each network without the regulariser, at the first learning rate")
    parser.add_argument("--json", default="docs/figures/backbone_stability.json")
    parser.add_argument("--report", action="store_true", help="write the table of --json into docs/method.md")
    parser.add_argument("--one", nargs=3, metavar=("NETWORK", "LR", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:
        from run_all import replace_section

        with open(args.json, encoding="utf-8") as file:
            replace_section(METHOD_PAGE, stability_markdown(json.load(file)), "", marker="backbone_stability")
        return
    if not args.data:
        parser.error("--data is required to train")
    if args.one:
        network, learning_rate, variant = args.one
        print(json.dumps(run_one(network, float(learning_rate), variant, args.steps, args.batch_size, args.data)))
        return
    results = {"runs": {}}
    if os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as file:
            results = json.load(file)
    results.update(machine=cpu_summary(), steps=args.steps, batch_size=args.batch_size, data=args.data)
    # The first command names the whole table; a later one may fill in part of it.
    results.setdefault("command", "python benchmarks/backbone_stability.py " + " ".join(sys.argv[1:] if argv is None else argv))
    plan = [(n, lr, "default") for n in args.networks for lr in args.lrs]
    if args.paper_psi:
        plan += [(n, args.lrs[0], "paper_psi") for n in args.networks]
    if args.standard:
        plan += [(n, args.lrs[0], "standard") for n in args.networks]
    for network, learning_rate, variant in plan:
        key = key_of(network, learning_rate, variant)
        if key in results["runs"]:
            continue
        command = [sys.executable, __file__, "--data", args.data, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--one", network, str(learning_rate), variant]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{key} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
        results["runs"][key] = json.loads(done.stdout.strip().splitlines()[-1])
        write_atomically(args.json, json.dumps(results, indent=2))
        row = results["runs"][key]
        print(f"{key}: {row['steps_done']} steps, failure {bool(row['failure'])}, l_adv max {row['l_adv_max']}, "
              f"ce last {row['ce_last']}, first gradient ratio {row['first_gradient_ratio']:.3g}, "
              f"{row['seconds_per_step']:.2f} s/step",
              flush=True)


if __name__ == "__main__":
    main()
