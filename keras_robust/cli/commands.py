"""The commands of the `keras-robust` command line.

Each function runs one parsed and checked command (`keras_robust.cli.parser`,
`keras_robust.cli.checks`) and returns the exit code; TensorFlow loads here.
"""

import dataclasses
import json
import os
import re
import sys
import zipfile

from keras_robust.cli.checks import training_config_from
from keras_robust.data.options import DataOptions
from keras_robust.training.run_folder import RunFolder


def _train(args):
    from keras_robust.training.loop import train

    config = training_config_from(args)
    summary = train(
        config,
        args.data,
        args.out,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        data_options=DataOptions.from_args(args),
        force=args.force,
        verbose="auto" if sys.stdout.isatty() else 2,
    )
    psi = summary["psi"]
    if summary.get("already_complete"):
        print(f"{args.out} already holds this run, complete after {summary['config']['epochs']} epochs; "
              "use another --out (or more --epochs with --force) to train again")
    print(
        f"test accuracy {summary['test']['accuracy']:.4f} on "
        f"{summary['test']['num_examples']} images; final psi "
        f"{'n/a (standard training)' if psi is None else f'{psi:,.1f}'}; "
        f"model: {RunFolder(args.out).model}"
    )
    print(json.dumps({"test": summary["test"], "psi": psi}))
    return 0


def _load_model(spec):
    """A shipped network by name, or a `.keras` file (a RobustModel gives its classifier)."""
    import keras

    import keras_robust

    if spec in keras_robust.pretrained_names():
        return keras_robust.pretrained(spec)
    if not os.path.exists(spec):
        raise FileNotFoundError(
            f"No model file at {spec} (shipped networks: {', '.join(keras_robust.pretrained_names())})"
        )
    if spec.endswith(".keras") and not zipfile.is_zipfile(spec):
        # Keras would answer "File not found" for a file that is there but damaged.
        raise ValueError(f"{spec} is not a readable Keras model file: a .keras file is a zip archive, and this "
                         "one is not (truncated or corrupt)")
    try:
        model = keras.saving.load_model(spec, compile=False)
    except TypeError as error:
        if "Could not locate" not in str(error):
            raise
        raise ValueError(
            f"{spec} uses a layer or model class that is not registered with Keras ({error}). "
            "keras-robust's own classes are registered by `import keras_robust`; import the module "
            "that defines any other custom class before loading"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{spec} is not a readable Keras model file ({error})") from None
    return getattr(model, "classifier", model)


def _test_split(args, num_classes, n_images=None, indices=None):
    """Images and labels from the data source's test split, and its class names; refuses a data set of
    another number of classes than the model's `num_classes` (None: unknown), whose labels would be read as
    the model's first classes."""
    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import evaluation_indices

    data = load_dataset(args.data, "test", batch_size=1024, **DataOptions.from_args(args).load_keywords())
    if num_classes is not None and num_classes != len(data.class_names):
        raise ValueError(
            f"The model has {num_classes} classes and the data set {len(data.class_names)} "
            f"({', '.join(data.class_names[:10])}{', ...' if len(data.class_names) > 10 else ''}): its labels would "
            f"be read as the model's first {len(data.class_names)} classes. Give data with the model's classes. "
            f"Received: --data {args.data}"
        )
    images, labels = data.arrays()
    if indices is None:
        indices = evaluation_indices(len(images), min(n_images, len(images)))
    bad = [i for i in indices if not 0 <= i < len(images)]
    if bad:
        raise ValueError(f"Index {bad[0]} is outside the test split of {len(images)} images")
    return images[indices], labels[indices], data.class_names


def _class_names(args, model, model_spec, fallback):
    """--class-names, else the shipped network's card, else summary.json beside the model."""
    if args.class_names:
        return list(args.class_names)
    card = getattr(model, "pretrained_card", None)
    if card:
        return list(card["class_names"])
    summary = RunFolder.of_model(model_spec)
    return (summary.read_json(summary.summary) or {}).get("class_names") or fallback


def _out_dir(args):
    os.makedirs(args.out, exist_ok=True)
    print(f"writing to {os.path.abspath(args.out)}")
    return args.out


def _explain(args):
    import numpy as np

    from keras_robust.method.model_calls import num_classes_of
    from keras_robust.common.atomic import save_npz_atomically
    from keras_robust.data.image_files import load_images
    from keras_robust.explanations.adversarial import AdversarialExplainer
    from keras_robust.explanations.outcome import ExplanationSanityError
    from keras_robust.reporting import findings, plots, report

    model = _load_model(args.model)
    if args.images:
        images = load_images(args.images, model.input_shape[1:3])
        labels, names, image_names = None, None, [os.path.basename(p) for p in args.images]
    else:
        images, labels, names = _test_split(args, num_classes_of(model), indices=args.indices)
        image_names = [f"test image {i}" for i in args.indices]
    names = _class_names(args, model, args.model, names)
    explainer = AdversarialExplainer(model, rho=args.rho, overshoot=args.overshoot,
                                     steps=args.steps, class_names=names,
                                     sanity_check=not args.no_sanity_check, progress=True)
    standard = args.targets == ["standard"]
    if standard:
        targets = explainer.standard_targets(images, labels)
    elif all(re.fullmatch(r"-?\d+", t) for t in args.targets):
        targets = np.array([[int(t) for t in args.targets]] * len(images))
    else:
        targets = np.array([args.targets] * len(images))  # class names
    try:
        result = explainer.explain(images, targets)
    except ExplanationSanityError as error:
        raise ValueError(error.describe("rerun with --no-sanity-check")) from None
    out = _out_dir(args)
    grid = plots.explanation_grid(result, os.path.join(out, "explanations.png"), max_images=len(images))
    save_npz_atomically(os.path.join(out, "explanations.npz"), images=result.images, delta=result.delta,
                        targets=result.targets, confidence_before=result.confidence_before,
                        confidence_after=result.confidence_after, original=result.original,
                        first_met_step=result.first_met_step, target_is_top=result.target_is_top,
                        outcome=result.outcome)
    roles = _target_roles(standard, labels is not None, result.targets.shape[1])
    rows = [
        {"image": image_names[i], "target": result.target_name(i, j), "role": roles[j],
         "confidence_before": float(result.confidence_before[i, j]),
         "confidence_after": float(result.confidence_after[i, j]),
         "budget_reached_at_step": int(result.first_met_step[i, j]),
         "target_on_top": bool(result.target_is_top[i, j]), "outcome": str(result.outcome[i, j])}
        for i in range(len(images)) for j in range(result.targets.shape[1])
    ]
    report.write_report(os.path.join(out, "report.html"), "Adversarial explanations", [
        {"heading": "Explanations", "text": f"rho={args.rho}, overshoot={args.overshoot}, steps={args.steps}"
                                            "\n\n" + plots.EXPLANATION_GRID_GUIDE + "\n\n"
                                            + findings.outcome_findings(result, args.steps),
         "figures": [(grid, f"Explanations by {findings.network_label(args.model)}")], "table": rows},
    ])
    for row in rows:
        role = f" ({row['role']})" if row["role"] else ""
        short = "" if row["outcome"] == "reached" else f"  [short of rho: {row['outcome']}]"
        print(f"{row['image']}: toward {row['target'] + role:<24} confidence "
              f"{row['confidence_before']:.3f} -> {row['confidence_after']:.3f}{short}")
    print(findings.outcome_findings(result, args.steps))
    print(f"wrote explanations.png, report.html, explanations.npz to {out}")
    return 0


def _target_roles(standard, labelled, count):
    """What each standard target is: the true or predicted class, the runner-up, then every class."""
    if not standard:
        return [""] * count
    return ["true class" if labelled else "predicted", "runner-up"] + [""] * (count - 2)


def _demo(args):
    from keras_robust.data.image_files import load_readable_images
    from keras_robust.models.zoo import pretrained_card
    from keras_robust.reporting import demo

    labels, note = None, demo.RESIZED_NOTE
    if args.data:
        indices = args.indices
        images, labels, _ = _test_split(args, len(pretrained_card(args.model)["class_names"]), n_images=4,
                                        indices=indices)
        image_names = [f"test image {i}" for i in (indices or range(len(images)))]
        note = demo.TEST_IMAGES_NOTE
    elif args.images:
        images, image_names, skipped = load_readable_images(args.images)
        for path, reason in skipped:
            print(f"skipping {path}: {reason}", file=sys.stderr)
        if not image_names:
            raise ValueError("None of the image files could be read")
        print("images are resized to 32x32, the networks' input size")
    else:
        images, image_names, _ = demo.sample_images()
        note = demo.SHIPPED_PHOTOS_NOTE
        print(f"explaining the sample photos shipped with keras-robust: {', '.join(image_names)} "
              "(resized to 32x32)")
    path = demo.run_demo(images, image_names, out_dir=args.out, model=args.model, labels=labels,
                         steps=args.steps, attack_steps=args.attack_steps, all_networks=args.all_networks,
                         images_note=note)
    print(f"report: {os.path.abspath(path)}")
    return 0


def _evaluate(args):
    import numpy as np

    from keras_robust.method.model_calls import num_classes_of
    from keras_robust.common.atomic import save_npz_atomically, write_atomically
    from keras_robust.common.strategies import is_chief, make_strategy
    from keras_robust.common.defaults import ROBUST_ACCURACY_EPS
    from keras_robust.evaluation.accuracy_robustness import ara
    from keras_robust.evaluation.autoattack.ensemble import autoattack
    from keras_robust.method.attacks import AttackSanityError
    from keras_robust.reporting import findings, plots, report

    # First: a multi-worker strategy must exist before other TensorFlow work.
    strategy = make_strategy(args.strategy)
    model = _load_model(args.model)
    images, labels, _ = _test_split(args, num_classes_of(model), n_images=args.n_images)
    out = args.out
    chief = is_chief(strategy)
    print(f"{'writing to' if chief else 'sharing the work of the chief, which writes to'} {os.path.abspath(out)}")
    # Rerunning the command continues from the last finished batch.
    try:
        result = ara(model, images, labels, steps=args.steps, rho=args.rho, momentum=args.momentum,
                     batch_size=args.batch_size, checkpoint=os.path.join(out, "ara-checkpoint.npz"),
                     strategy=strategy, progress=chief, sanity_check=not args.no_sanity_check)
    except AttackSanityError as error:
        advice = "" if args.no_sanity_check else "; or rerun with --no-sanity-check to count those images instead"
        raise ValueError(f"{error}{advice}") from None
    dims = float(np.prod(images.shape[1:]))
    eps_values = args.eps or ROBUST_ACCURACY_EPS[args.norm]
    robust = {f"robust_accuracy_l2_{eps:g}": float(result.robust_accuracy(eps / np.sqrt(dims)))
              for eps in eps_values if args.norm == "L2"}
    found = [autoattack(model, images, labels, norm=args.norm, eps=eps, batch_size=args.batch_size,
                        strategy=strategy, progress=chief,
                        checkpoint=os.path.join(out, f"autoattack-{args.norm}-{eps:g}.npz"))
             for eps in eps_values] if args.autoattack else []
    robust.update({f"autoattack_{args.norm.lower()}_{attacked.eps:g}": attacked.robust_accuracy
                   for attacked in found})
    summary = {**result.to_dict(), **robust}
    if not chief:
        print(f"accuracy {result.clean_accuracy:.4f}; attack ARA {result.attack_ara:.4f}; "
              f"BTR ARA {result.btr_ara:.4f} (written by the chief)")
        return 0
    curve = plots.ara_curve(result, os.path.join(out, "ara_curve.png"), autoattack=found)
    save_npz_atomically(os.path.join(out, "min_rmse.npz"), attack=result.attack_min_rmse, btr=result.btr_min_rmse)
    write_atomically(os.path.join(out, "evaluation.json"), json.dumps(summary, indent=2))
    report.write_report(os.path.join(out, "report.html"), "Accuracy-Robustness Area", [
        {"heading": "Summary", "table": [summary], "figures": [curve],
         "text": " ".join([f"{len(images)} test images, {args.steps} steps, rho={args.rho}, momentum={args.momentum}.",
                           *findings.autoattack_findings(robust, args.norm)])},
    ])
    print(f"accuracy {result.clean_accuracy:.4f} on {len(images)} images; "
          f"attack ARA {result.attack_ara:.4f}; BTR ARA {result.btr_ara:.4f}")
    for name, value in robust.items():
        print(f"{name}: {value:.4f}")
    if result.attack_late_images or result.btr_late_images:
        print(f"loose bound: {result.attack_late_images} images changed class and {result.btr_late_images} fell "
              f"to 1/K only after step {args.steps // 2}; their minimal perturbations may be overestimated")
    if result.attack_unbroken_images or result.btr_unbroken_images:
        print(f"unbroken: {result.attack_unbroken_images} images never changed class and "
              f"{result.btr_unbroken_images} never fell to 1/K within rho={args.rho:g}; they count as correct "
              "up to the largest perturbation that broke another image")
    return 0


def _compare(args):
    import numpy as np

    from keras_robust.method.model_calls import num_classes_of
    from keras_robust.common.atomic import write_atomically
    from keras_robust.explanations import attributions
    from keras_robust.explanations.comparison import compare_explanations
    from keras_robust.reporting import findings, plots, report

    model = _load_model(args.model)
    # An image misclassified from the start has no class change to explain, so
    # the first n correctly classified images of the fixed permutation are used.
    images, labels, names = _test_split(args, num_classes_of(model), n_images=4 * args.n_images)
    correct = np.flatnonzero(np.argmax(model.predict(images, verbose=0), axis=1) == labels)
    if correct.size == 0:
        raise ValueError("The model classifies none of the sampled test images correctly")
    images, labels = images[correct[: args.n_images]], labels[correct[: args.n_images]]
    names = _class_names(args, model, args.model, names)
    result = compare_explanations(model, images, labels,
                                  methods=args.methods or tuple(attributions.METHODS))
    out = _out_dir(args)
    panel = plots.comparison_panel(result, os.path.join(out, "comparison.png"),
                                   max_images=len(images), class_names=names)
    summary = result.summary()
    network = findings.network_label(args.model)
    report.write_report(os.path.join(out, "report.html"), "Attribution maps under attack", [
        {"heading": "Summary", "table": [findings.comparison_row(network, summary)],
         "figures": [(panel, f"Attribution maps under attack on {network}")],
         "text": "Each map explains the class predicted on that image. A high rank correlation ρs while "
                 "the class changed means the map does not explain the decision.\n\n"
                 + findings.comparison_findings(network, summary)},
    ])
    write_atomically(os.path.join(out, "comparison.json"), json.dumps(summary, indent=2))
    for key, value in summary.items():
        print(f"{key}: {value:.4f}")
    return 0


def _export(args):
    if args.model.lower().endswith(".onnx"):
        return _export_onnx(args)
    from keras_robust.export import export_model

    model = _load_model(args.model)
    # A shipped network's card stands in for the training summary of a run folder.
    run = RunFolder.of_model(args.model)
    training = getattr(model, "pretrained_card", None) or run.read_json(run.summary)
    if args.evaluation and not os.path.exists(args.evaluation):
        raise FileNotFoundError(f"No evaluation file at {args.evaluation}")
    class_names = args.class_names or (training or {}).get("class_names")
    paths = export_model(
        model, args.out, name=args.name, version=args.version, class_names=class_names,
        rho=args.rho, steps=args.steps, overshoot=args.overshoot, formats=tuple(args.formats),
        methods=args.methods, grad_cam_layer=args.grad_cam_layer, training=training,
        ara=RunFolder.read_json(args.evaluation), overwrite=args.overwrite,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _export_onnx(args):
    """An ONNX classifier from any framework: its ONNX endpoints, without TensorFlow."""
    from keras_robust.export import export_onnx_classifier

    paths = export_onnx_classifier(
        args.model, args.out, name=args.name, version=args.version, layout=args.layout, mean=args.mean,
        std=args.std, image_size=args.image_size, class_names=args.class_names, rho=args.rho, steps=args.steps,
        overshoot=args.overshoot, methods=args.methods, grad_cam_layer=args.grad_cam_layer, overwrite=args.overwrite,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _serve(args):

    from keras_robust.serving import serve
    from keras_robust.serving.plane.limits import Limits

    limits = {field.name: getattr(args, field.name) for field in dataclasses.fields(Limits)}
    serve(args.export_dir, host=args.host, port=args.port, backend=args.backend, device=args.device,
          log_level=args.log_level, grpc_port=args.grpc_port, client_header=args.client_header, **limits)
    return 0


COMMANDS = {
    "demo": _demo,
    "train": _train,
    "explain": _explain,
    "evaluate": _evaluate,
    "compare-explanations": _compare,
    "export": _export,
    "serve": _serve,
}

