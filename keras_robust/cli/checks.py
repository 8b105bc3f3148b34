"""The command line's checks of parsed arguments, run before TensorFlow is imported.

Each check raises `ValueError` or `FileNotFoundError` naming the flag, so a
mistyped command answers at once instead of after seconds of start-up.
"""

import dataclasses
import os

from keras_robust.common.validation import (
    check_explanation_settings,
    check_momentum,
    check_positive_int,
    check_range,
    check_steps,
    check_strategy_environment,
)
from keras_robust.data.options import check_source
from keras_robust.training.config import TrainingConfig


def training_config_from(args):
    """The `TrainingConfig` that parsed `keras-robust train` arguments ask for."""
    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainingConfig)}
    if args.l2_min:
        if settings["adversarial_training"] not in (None, True, "l2min"):
            raise ValueError(f"--l2-min asks for the l2min attack, --adversarial-training for "
                             f"{settings['adversarial_training']}: give one of them")
        settings["adversarial_training"] = "l2min"
    return TrainingConfig(**settings)


def check_arguments(args):
    """Runs the checks of `args.command`, and refuses an output folder that is a file."""
    positional = "OUT" if args.command == "export" else "--out"  # `export MODEL OUT`
    for flag, out in ((positional, getattr(args, "out", None)), ("--out", getattr(args, "out_flag", None))):
        if out is not None and os.path.isfile(out):
            raise ValueError(f"{flag} names a file; it is the folder the command writes into. Give a folder's "
                             f"path (new or existing). Received: {flag} {out}")
    CHECKS[args.command](args)


def _check_images_or_data(args, required=True):
    if args.images and args.data:
        raise ValueError("Give image files or --data, not both")
    if required and not args.images and not args.data:
        raise ValueError("Nothing to explain: give image files or --data")
    if args.data:
        check_source(args.data)


def _check_demo(args):
    _check_images_or_data(args, required=False)
    check_steps(args.steps)
    check_steps(args.attack_steps)
    for index in args.indices or ():
        check_range("--indices", index, low=0)


def _check_train(args):
    check_strategy_environment(training_config_from(args).strategy)
    check_source(args.data)
    for name in ("limit_train", "limit_test"):
        if getattr(args, name) is not None:
            check_positive_int(name, getattr(args, name))


def _check_explain(args):
    _check_images_or_data(args)
    missing = [path for path in args.images if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(f"No image file at {missing[0]}")
    check_explanation_settings(args.rho, args.steps, args.overshoot)


def _check_evaluate(args):
    check_source(args.data)
    check_positive_int("n_images", args.n_images)
    check_positive_int("batch_size", args.batch_size)
    check_steps(args.steps)
    check_range("rho", args.rho, low=0, strict=True)
    check_momentum(args.momentum)
    for eps in args.eps or ():
        check_range("eps", eps, low=0, strict=True)
    if args.norm != "L2" and not args.autoattack:
        raise ValueError("--norm Linf needs --autoattack: the paper's attack measures L2 perturbations only. "
                         f"Received: --norm {args.norm}")
    check_strategy_environment(TrainingConfig(strategy=args.strategy).strategy)


def _check_compare(args):
    check_source(args.data)
    check_positive_int("n_images", args.n_images)


def _check_export(args):
    from keras_robust.export.export_folder import check_export_settings

    if (args.out is None) == (args.out_flag is None):
        raise ValueError("Give the output folder once: `export MODEL OUT` or `export MODEL --out OUT`. "
                         f"Received: out={args.out!r}, --out={args.out_flag!r}")
    args.out = args.out or args.out_flag

    onnx = args.model.lower().endswith(".onnx")
    if onnx and args.layout is None:
        raise ValueError("An .onnx model needs --layout NCHW (PyTorch) or NHWC: the graph does not say which "
                         f"axis holds the channels. Received: model={args.model!r}")
    if onnx and "savedmodel" in args.formats and args.formats != ["savedmodel", "onnx"]:
        raise ValueError("An .onnx model exports to ONNX only (there is no TensorFlow graph to save). "
                         f"Received: --formats {' '.join(args.formats)}")
    onnx_only = [flag for flag, value in (("--layout", args.layout), ("--mean", args.mean), ("--std", args.std),
                                          ("--image-size", args.image_size)) if value is not None]
    if onnx_only and not onnx:
        raise ValueError(f"{', '.join(onnx_only)} describe an .onnx model's input; a Keras model's is fixed. "
                         f"Received: model={args.model!r}")
    name = args.name or "model"
    check_export_settings(name, args.version, args.rho, args.steps, args.overshoot)


def _check_serve(args):
    from keras_robust.serving.plane.limits import Limits

    Limits(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Limits)})
    if not os.path.isdir(args.export_dir):
        raise FileNotFoundError(f"No export folder at {args.export_dir}")


CHECKS = {
    "demo": _check_demo,
    "train": _check_train,
    "explain": _check_explain,
    "evaluate": _check_evaluate,
    "compare-explanations": _check_compare,
    "export": _check_export,
    "serve": _check_serve,
}
