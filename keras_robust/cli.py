"""The `keras-robust` command line."""

import argparse
import json
import os
import sys


def main(argv=None):
    """Entry point of the `keras-robust` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"keras-robust {args.command}: error: {error}", file=sys.stderr)
        return 1


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-robust",
        description="Robust training and adversarial explanations (Woods et al. 2019).",
    )
    commands = parser.add_subparsers(dest="command")
    train = commands.add_parser(
        "train",
        help="train a ResNet with the reference recipe (resumable)",
        description="Train a pre-activation ResNet with the reference recipe (SPEC §3). "
        "Rerunning the same command with the same --out resumes after an interruption.",
    )
    train.add_argument("--data", required=True,
                       help="tfds:NAME, or a folder / .tar.gz of class folders "
                            "(e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    train.add_argument("--out", required=True, help="output folder (checkpoints, logs, model.keras)")
    train.add_argument("--robust", action="store_true",
                       help="Lipschitz regulariser + adaptive psi + half-Huber ReLU")
    train.add_argument("--adversarial-training", action="store_true",
                       help="train on attacked batches (bounded, rho 0.01, 7 steps)")
    train.add_argument("--l2-min", action="store_true",
                       help="with --adversarial-training: the L2,min attack, rho 0.1")
    train.add_argument("--depth", type=int, default=44, help="ResNet depth 6n+2 (default 44)")
    train.add_argument("--epochs", type=int, default=200,
                       help="epochs; the lr drops scale with it (default 200)")
    train.add_argument("--batch-size", type=int, default=128, help="per replica (default 128)")
    train.add_argument("--lr", type=float, default=0.1, help="per replica (default 0.1)")
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--strategy", choices=["default", "mirrored", "multiworker"],
                       default="default", help="tf.distribute strategy")
    train.add_argument("--jit-compile", choices=["auto", "on", "off"], default="auto",
                       help="XLA; auto = on for one replica, off under mirrored")
    train.add_argument("--limit-train", type=int, help="train on this many images only")
    train.add_argument("--limit-test", type=int, help="evaluate on this many test images only")
    train.add_argument("--data-dir", help="TFDS data directory")
    train.add_argument("--cache-dir", help="decoded-image cache (default ~/.cache/keras_robust)")
    train.add_argument("--seed", type=int, default=1776)
    train.set_defaults(run=_train)
    return parser


def _train(args):
    from keras_robust.training import TrainingConfig, train

    config = TrainingConfig(
        depth=args.depth,
        robust=args.robust,
        adversarial_training=args.adversarial_training,
        l2_min=args.l2_min,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        strategy=args.strategy,
        jit_compile=args.jit_compile,
        seed=args.seed,
    )
    summary = train(
        config,
        args.data,
        args.out,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        verbose="auto" if sys.stdout.isatty() else 2,
    )
    psi = summary["psi"]
    print(
        f"test accuracy {summary['test']['accuracy']:.4f} on "
        f"{summary['test']['num_examples']} images; final psi "
        f"{'n/a (standard training)' if psi is None else f'{psi:,.1f}'}; "
        f"model: {os.path.join(args.out, 'model.keras')}"
    )
    print(json.dumps({"test": summary["test"], "psi": psi}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
