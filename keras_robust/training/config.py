"""`TrainingConfig`: a training run's settings, and the `keras-robust train` flags built from them.

Imports nothing heavy, so the command line builds its flags, help and
defaults from these fields without loading TensorFlow.
"""

import dataclasses

from keras_robust.common.defaults import ADVERSARIAL_MODES, ADVERSARIAL_STEPS, SEED, STRATEGIES
from keras_robust.common.validation import (
    check_adversarial_mode,
    check_choice,
    check_momentum,
    check_positive_int,
    check_range,
    validate_depth,
)
from keras_robust.training.precision import PRECISIONS, check_precision
from keras_robust.training.recipes import RECIPES, get_recipe

JIT_COMPILE_CHOICES = ("auto", "on", "off")


def _setting(default, help, flag=None, recipe_default=False, **argparse_options):
    """A field whose command-line flag is `flag` (default `--field-name`) with this help.

    `recipe_default` fields default to None and take the recipe's value; their
    help lists each recipe's. `argparse_options` go to `add_argument`.
    """
    metadata = dict(help=help, flag=flag, recipe_default=recipe_default, argparse=argparse_options)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainingConfig:
    """A training run's settings; `epochs` scales the learning-rate drops (docs/method.md §3).

    Fields left at None take the recipe's value (`keras_robust.training.recipes`).

    Example:

    >>> config = TrainingConfig(depth=20, robust=True, adversarial_training="l2min")
    >>> config.epochs, config.batch_size, config.learning_rate
    (200, 128, 0.1)

    Attributes:
        recipe: `"cifar"` (the paper's recipe, `resnet`, in-memory data) or
            `"imagenet"` (`resnet50`, 224×224 crops streamed from files;
            docs/imagenet.md).
        depth: ResNet depth: 6n+2 for cifar (reference 44), 50 for imagenet.
        robust: Lipschitz regulariser, adaptive psi and half-Huber ReLU.
        adversarial_training: None, or train on attacked batches (7 steps):
            `"bounded"` (rho 0.01) or `"l2min"` (the L2,min attack, rho 0.1),
            as `RobustModel` takes it. `True` means `"bounded"` and `False`
            None.
        epochs: Number of epochs (cifar 200, drops at 170 and 195; imagenet
            90, drops at 30, 60 and 80).
        batch_size: Batch size per replica (cifar 128, imagenet 64).
        learning_rate: SGD learning rate per replica (cifar 0.1, imagenet
            0.025).
        momentum: SGD momentum (0.9).
        weight_decay: Coupled L2 weight decay on every parameter (1e-4).
        strategy: "default", "mirrored" or "multiworker".
        jit_compile: "auto" (on one device, XLA if a timed probe of this
            step on this machine says it is faster; off under several
            replicas), "on" or "off".
        precision: "fp32", "bf16" (mixed bfloat16: CPUs with AVX-512 BF16
            or AMX, TPUs, recent GPUs) or "fp16" (mixed float16 with loss
            scaling: GPUs); see `keras_robust.training.precision`.
        seed: Seed for weights, shuffling and augmentation.
    """

    recipe: str = _setting(
        "cifar", "cifar: the paper's recipe, ResNet-(6n+2), images decoded once; imagenet: ResNet-50, "
        "224x224 random-resized crops streamed from a folder of class folders or tfds:imagenet2012 "
        "(docs/imagenet.md)", choices=tuple(RECIPES))
    depth: int = _setting(None, "ResNet depth: 6n+2 for cifar, 50 for imagenet", recipe_default=True)
    robust: bool = _setting(False, "Lipschitz regulariser + adaptive psi + half-Huber ReLU")
    adversarial_training: str = _setting(
        None, f"train on attacked batches ({ADVERSARIAL_STEPS} steps); MODE: bounded (rho "
        f"{ADVERSARIAL_MODES['bounded']}, the default) or l2min (the L2,min attack, rho "
        f"{ADVERSARIAL_MODES['l2min']})", nargs="?", const=True, choices=tuple(ADVERSARIAL_MODES),
        metavar="MODE")
    epochs: int = _setting(None, "epochs; the lr drops scale with it", recipe_default=True)
    batch_size: int = _setting(None, "images per batch and replica", recipe_default=True)
    learning_rate: float = _setting(None, "SGD learning rate per replica, > 0", flag="--lr",
                                    recipe_default=True, metavar="LR")
    momentum: float = _setting(0.9, "SGD momentum in [0, 1)")
    weight_decay: float = _setting(1e-4, "coupled L2 weight decay on every parameter")
    strategy: str = _setting(
        "default", "tf.distribute strategy sharing the work: default = one device, mirrored = this "
        "machine's devices, multiworker = the workers in TF_CONFIG, each running this same command "
        "(docs/distributed.md)",
        choices=STRATEGIES)
    jit_compile: str = _setting(
        "auto", "XLA; auto = timed probe with and without XLA on one replica (cached per CPU), off "
        "with several replicas", choices=JIT_COMPILE_CHOICES)
    precision: str = _setting(
        "fp32", "fp32, or mixed precision: bf16 (CPUs with AVX-512 BF16/AMX, TPUs, recent GPUs), "
        "fp16 (GPUs, with loss scaling)", choices=tuple(PRECISIONS))
    seed: int = _setting(SEED, "seed of weights, shuffling and augmentation")

    def __post_init__(self):
        recipe = get_recipe(self.recipe)
        for name in ("depth", "epochs", "batch_size", "learning_rate"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(recipe, name))
        if not recipe.streamed:
            validate_depth(self.depth)
        elif self.depth != recipe.depth:
            raise ValueError(
                f"The {recipe.name} recipe trains ResNet-{recipe.depth} only. Received: depth={self.depth!r}")
        if isinstance(self.adversarial_training, bool):
            self.adversarial_training = "bounded" if self.adversarial_training else None
        check_adversarial_mode(self.adversarial_training)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("jit_compile", self.jit_compile, JIT_COMPILE_CHOICES)
        check_precision(self.precision)
        for name in ("epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_range("learning_rate", self.learning_rate, low=0.0, strict=True)
        check_momentum(self.momentum)
        check_range("weight_decay", self.weight_decay, low=0.0)
