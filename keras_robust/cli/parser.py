"""The `keras-robust` command line's arguments: parsing only, without TensorFlow.

`--help` and argument errors answer here, before anything heavy loads. The
defaults shown are the library's own, imported from where they are defined.
"""

import argparse
import dataclasses

from keras_robust.common.defaults import (
    ARA_BATCH_SIZE,
    ARA_STEPS,
    ATTACK_MOMENTUM,
    EXPLAIN_OVERSHOOT,
    EXPLAIN_RHO,
    EXPLAIN_STEPS,
    SEED,
    SMALLEST_CHANGE_RHO,
    SMALLEST_CHANGE_STEPS,
)
from keras_robust.evaluation.autoattack.norms import NORMS
from keras_robust.export.card import ATTRIBUTION_METHODS
from keras_robust.models.zoo import pretrained_names
from keras_robust.models.zoo.catalog import CATALOG, DEMO_MODEL
from keras_robust.training.config import TrainingConfig
from keras_robust.training.recipes import RECIPES


def build_parser(with_serve_limits=False):
    """The argument parser; `serve`'s limit flags need the serving package, so
    they are added only when `serve` is the command."""
    parser = argparse.ArgumentParser(
        prog="keras-robust",
        description="Robust image classifiers and adversarial explanations "
        "(Woods, Chen & Teuscher, Nature Machine Intelligence 2019).",
        epilog="Start with `keras-robust demo`: it needs no data and no network.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's native log lines and library warnings")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _demo_parser(commands)
    _train_parser(commands)
    _explain_parser(commands)
    _evaluate_parser(commands)
    _compare_parser(commands)
    _export_parser(commands)
    _serve_parser(commands, with_serve_limits)
    return parser


def _demo_parser(commands):
    demo = commands.add_parser(
        "demo",
        help="the paper's networks explaining photos: offline, about a minute",
        description="Explain photos with the authors' robust ResNet-44 (N3) beside the standard one "
        "(N1): explanations toward the predicted class, the runner-up and every class, class "
        "prototypes drawn from a grey image, and saliency/Grad-CAM beside adversarial explanations "
        "under a small attack. Writes one HTML report. Without IMAGES it uses photos shipped with "
        "the package.",
    )
    demo.add_argument("images", nargs="*", help="image files to explain (resized to 32x32); "
                                                "default: the shipped sample photos")
    networks = ", ".join(f"{name} ({CATALOG[name]['paper_name']})" for name in pretrained_names())
    demo.add_argument("--model", default=DEMO_MODEL, choices=pretrained_names(),
                      help=f"the network whose explanations lead the report: {networks} (default {DEMO_MODEL})")
    demo.add_argument("--out", default="demo", help="output folder (default ./demo)")
    demo.add_argument("--data", help="explain test images of this data source instead of photos "
                                     "(e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    demo.add_argument("--indices", type=int, nargs="+",
                      help=f"with --data: test-split indices (default: the first 4 of the seed-{SEED} "
                           "permutation)")
    demo.add_argument("--all-networks", action="store_true",
                      help="also explain the images with all four shipped networks (paper's Figure 4)")
    demo.add_argument("--steps", type=int, default=EXPLAIN_STEPS, help=f"explanation steps N (default {EXPLAIN_STEPS})")
    demo.add_argument("--attack-steps", type=int, default=SMALLEST_CHANGE_STEPS,
                      help=f"steps of the smallest class-changing attack (default {SMALLEST_CHANGE_STEPS})")
    _data_options(demo)


def _train_parser(commands):
    train = commands.add_parser(
        "train",
        help="train a ResNet with the reference recipe (resumable)",
        description="Train a pre-activation ResNet with the reference recipe (docs/method.md). "
        "Rerunning the same command with the same --out resumes after an interruption.",
    )
    train.add_argument("--data", required=True,
                       help="tfds:NAME, or a folder / .tar.gz of class folders "
                            "(e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    train.add_argument("--out", required=True, help="output folder (checkpoints, logs, model.keras)")
    _add_dataclass_flags(train, TrainingConfig)
    train.add_argument("--l2-min", action="store_true",
                       help="the same as --adversarial-training l2min")
    train.add_argument("--limit-train", type=int, help="train on this many images only")
    train.add_argument("--limit-test", type=int, help="evaluate on this many test images only")
    train.add_argument("--force", action="store_true",
                       help="resume the run in --out even if it was started with other settings (they are named)")
    _data_options(train)


def _explain_parser(commands):
    explain = commands.add_parser(
        "explain",
        help="adversarial explanations of images",
        description="Explain a model's decisions with adversarial explanations: for each image, "
        "the true/predicted class, the most confident other class and every class.",
    )
    explain.add_argument("model", help="a .keras model mapping [0, 1] images to logits, "
                                       "or the name of a shipped network")
    explain.add_argument("images", nargs="*", help="image files (resized to the model's input with a note)")
    explain.add_argument("--data", help="instead of files: a data source (see train --data)")
    explain.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2, 3],
                         help="test-split indices to explain with --data (default 0 1 2 3)")
    explain.add_argument("--targets", nargs="+", default=["standard"],
                         help="'standard': the true (or predicted) class, the runner-up and every "
                              "class (default); or class names / indices")
    _attack_options(explain, rho=EXPLAIN_RHO, steps=EXPLAIN_STEPS)
    explain.add_argument("--overshoot", type=float, default=EXPLAIN_OVERSHOOT,
                         help=f"overshoot o >= 1: the steps sum to o*rho (default {EXPLAIN_OVERSHOOT:g})")
    explain.add_argument("--no-sanity-check", action="store_true",
                         help="show explanations that miss the budget check (non-robust networks) "
                              "instead of stopping")
    _output_options(explain, "explanations")


def _evaluate_parser(commands):
    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy, attack ARA, BTR ARA and robust accuracy (resumable)",
        description=f"Evaluate robustness on a fixed random subset (seed {SEED}) of the test split. "
        "Rerunning the same command continues an interrupted evaluation.",
    )
    evaluate.add_argument("model", help="a .keras model, or the name of a shipped network")
    evaluate.add_argument("--data", required=True, help="data source (see train --data)")
    evaluate.add_argument("--n-images", type=int, default=1000, help="test images for ARA (default 1000)")
    _attack_options(evaluate, rho=SMALLEST_CHANGE_RHO, steps=ARA_STEPS)
    evaluate.add_argument("--momentum", type=float, default=ATTACK_MOMENTUM,
                          help=f"attack momentum mu in [0, 1) (default {ATTACK_MOMENTUM})")
    evaluate.add_argument("--batch-size", type=int, default=ARA_BATCH_SIZE,
                          help=f"images attacked at once (default {ARA_BATCH_SIZE})")
    evaluate.add_argument("--eps", type=float, nargs="+",
                          help="norms for robust accuracy (default: L2 0.25 0.5 1.0; Linf 8/255)")
    evaluate.add_argument("--autoattack", action="store_true",
                          help="also AutoAttack's robust accuracy at each --eps (its standard version, as "
                               "RobustBench runs it; resumable, and slow: every attack on every image)")
    evaluate.add_argument("--norm", choices=NORMS, default="L2",
                          help="the norm of --eps (default L2; Linf needs --autoattack, the paper's attack "
                               "measures L2 only)")
    evaluate.add_argument("--no-sanity-check", action="store_true",
                          help="count images broken only after half the steps (a possibly loose bound) "
                               "instead of stopping")
    _add_dataclass_flags(evaluate, TrainingConfig, names=("strategy",))
    _output_options(evaluate, "evaluation")


def _compare_parser(commands):
    compare = commands.add_parser(
        "compare-explanations",
        help="attribution maps before/after a small attack, beside adversarial explanations",
        description="Claim 1 of the paper: attack each image minimally and compare saliency, "
        "SmoothGrad, Integrated Gradients and Grad-CAM maps before and after.",
    )
    compare.add_argument("model", help="a .keras model, or the name of a shipped network")
    compare.add_argument("--data", required=True, help="data source (see train --data)")
    compare.add_argument("--n-images", type=int, default=6,
                         help="correctly classified test images to compare (default 6)")
    compare.add_argument("--methods", nargs="+", default=None,
                         help="attribution methods: saliency smoothgrad integrated_gradients grad_cam "
                              "(default all)")
    _output_options(compare, "comparison")


def _export_parser(commands):
    export = commands.add_parser(
        "export",
        help="SavedModel (TF Serving layout) + ONNX predict/explain/attribution graphs + model card",
        description="Export a model to OUT/NAME/VERSION/ (SavedModel with serving_default, "
        "explain and one signature per attribution method), "
        "OUT/NAME/NAME-VERSION-{predict,explain,saliency,smoothgrad,integrated-gradients,grad-cam}.onnx "
        "and OUT/NAME/model_card.json.",
    )
    export.add_argument("model", help="a .keras model (a RobustModel exports its classifier), "
                                      "the name of a shipped network, or an .onnx image classifier "
                                      "from any framework (give --layout; ONNX only, no TensorFlow)")
    export.add_argument("out", nargs="?", help="base folder (TF Serving's model base path parent); or give --out")
    export.add_argument("--out", dest="out_flag", metavar="OUT", help="the base folder, as the other commands take it")
    export.add_argument("--name", help="model name in URLs (default: the model's name)")
    export.add_argument("--version", type=int, default=1, help="version subfolder (default 1)")
    export.add_argument("--formats", nargs="+", choices=["savedmodel", "onnx"],
                        default=["savedmodel", "onnx"],
                        help="what to write (default: savedmodel onnx)")
    _attack_options(export, rho=EXPLAIN_RHO, steps=EXPLAIN_STEPS)
    export.add_argument("--overshoot", type=float, default=EXPLAIN_OVERSHOOT,
                        help=f"explanation overshoot, fixed in the graphs (default {EXPLAIN_OVERSHOOT:g})")
    export.add_argument("--class-names", nargs="+",
                        help="one per class (default: summary.json beside the model, else 0..K-1)")
    export.add_argument("--methods", nargs="+", choices=ATTRIBUTION_METHODS,
                        help="attribution methods exported beside predict and explain (default: all four; "
                             "grad_cam only where the classifier has 4-D feature maps)")
    export.add_argument("--grad-cam-layer",
                        help="the feature maps Grad-CAM reads: a Keras layer's name, or a value's name in an "
                             ".onnx graph (default: the last 4-D activation before global pooling)")
    export.add_argument("--evaluation", help="evaluation.json from `keras-robust evaluate` for the card's ARA")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export of this version")
    onnx_input = export.add_argument_group(
        "an .onnx classifier's input", "the exported graphs take NHWC images in [0, 1] and feed the "
        "model what these describe")
    onnx_input.add_argument("--layout", choices=["NCHW", "NHWC"],
                            help="the model's input layout (PyTorch: NCHW); required for .onnx")
    onnx_input.add_argument("--mean", type=float, nargs="+",
                            help="per-channel mean the model subtracts from [0, 1] images, if it does not "
                                 "itself (torchvision ImageNet: 0.485 0.456 0.406)")
    onnx_input.add_argument("--std", type=float, nargs="+",
                            help="per-channel std it divides by (torchvision ImageNet: 0.229 0.224 0.225)")
    onnx_input.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                            help="for a model whose input size is dynamic")


def _serve_parser(commands, with_limits):
    serve = commands.add_parser(
        "serve",
        help="HTTP service: TF Serving REST API, KServe :explain and a browser page",
        description="Serve every model exported under EXPORT_DIR: POST /v1/models/NAME:predict "
        "(TF Serving REST shape, signature_name 'explain' for explanations), "
        "POST /v1/models/NAME:explain (KServe V1), and a browser page at /.",
    )
    serve.add_argument("export_dir", help="the OUT folder given to `keras-robust export`")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=_port, default=8501, help="port, 1-65535 (default 8501, TF Serving's REST port)")
    serve.add_argument("--backend", choices=["onnx", "savedmodel"], default="onnx",
                       help="onnx: ONNX Runtime, or savedmodel: TensorFlow on the SavedModel (default onnx)")
    serve.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                       help="cpu, or cuda: ONNX Runtime's CUDA provider (pip install onnxruntime-gpu) (default cpu)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                       help="server log level (default info)")
    serve.add_argument("--grpc-port", type=_port,
                       help="also serve TF Serving's gRPC PredictionService on this port (TF Serving uses 8500) "
                            "(default: no gRPC)")
    serve.add_argument("--client-header",
                       help="the header (gRPC: metadata key) a trusted proxy sets to name each client, e.g. "
                            "X-Forwarded-For, for fair admission; only behind such a proxy (default: the "
                            "connection's peer address)")
    if not with_limits:
        return
    from keras_robust.serving.plane.limits import Limits

    _add_dataclass_flags(serve.add_argument_group("limits (over a limit: 413, 400, 503 or 504 with a JSON error)"),
                         Limits)


def _add_dataclass_flags(parser, settings, names=None):
    """A flag for each field of the dataclass `settings` (or those in `names`), with its default.

    A field's metadata may give its `help`, its `flag`, further `argparse`
    options, and `recipe_default`: None, which takes each recipe's value.
    """
    for field in dataclasses.fields(settings):
        if names is None or field.name in names:
            parser.add_argument(field.metadata.get("flag") or f"--{field.name.replace('_', '-')}",
                                **_flag_options(field))


def _flag_options(field):
    meta = field.metadata
    help = meta.get("help", "")
    if meta.get("recipe_default"):
        help += f" (default: {', '.join(f'{r.name} {getattr(r, field.name)}' for r in RECIPES.values())})"
    elif field.default not in (None, False):
        help += f" (default: {field.default})" if help else f"default {field.default}"
    options = dict(dest=field.name, default=field.default, help=help, **meta.get("argparse", {}))
    if field.type is bool:
        options["action"] = "store_true"
    elif "nargs" not in options:
        options["type"] = field.type
    return options


def _attack_options(parser, rho, steps):
    parser.add_argument("--rho", type=float, default=rho, help=f"budget rho, an RMSE in [0, 1] pixel units (default {rho})")
    parser.add_argument("--steps", type=int, default=steps, help=f"attack steps N (default {steps})")


def _data_options(parser):
    parser.add_argument("--data-dir", help="TFDS data directory (for tfds:NAME sources)")
    parser.add_argument("--download", action="store_true",
                        help="let a tfds:NAME source download and prepare the data set (needs a network)")
    parser.add_argument("--cache-dir", help="decoded-image cache (default ~/.cache/keras_robust)")
    parser.add_argument("--manual-dir",
                        help="where TFDS finds manually downloaded archives (tfds:imagenet2012's tar files)")


def _output_options(parser, default_out):
    parser.add_argument("--out", default=default_out,
                        help=f"folder for PNGs, report.html and results (default ./{default_out})")
    _data_options(parser)
    parser.add_argument("--class-names", nargs="+", help="class names (default: from the data or summary.json)")


def _port(text):
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in 1-65535. Received: {text}")
    return port


def command_of(argv):
    """The subcommand named in `argv`, if any (the first word not starting with '-')."""
    return next((word for word in argv if not word.startswith("-")), None)
