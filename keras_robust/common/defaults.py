"""The defaults and bounds that the library, the exporters, the server and the
command line share, each named once. Imports nothing heavy: the command line
and the ONNX server read it without TensorFlow."""

# Weights, shuffling, augmentation, the regulariser's draws and the ARA's
# image subset all start from this seed.
SEED = 1776

# Adversarial explanations (docs/method.md §5): budget ρ (an RMSE of [0, 1]
# pixels), steps N and overshoot o.
EXPLAIN_RHO = 0.1
EXPLAIN_STEPS = 35
EXPLAIN_OVERSHOOT = 5.0
# One step cannot pass the budget check of docs/method.md §4 meaningfully (its
# floor(N/2) is step 0, before any move), so explanations take at least two.
MIN_EXPLAIN_STEPS = 2
# The most steps an explanation takes anywhere (library, command line, exported
# graphs): 35 is the paper's; far more only costs time, and a mistyped
# 100000000 would run for days.
MAX_EXPLAIN_STEPS = 10_000
# An explanation's budget is an RMSE of [0, 1] pixels: 1 already allows turning
# every pixel from black to white, and larger budgets only overflow.
MAX_RHO = 1.0

# The deepest CIFAR ResNet of He et al. (2016); deeper ones only take longer to build.
MAX_DEPTH = 1202

# The CIFAR-10 training images' per-channel mean and standard deviation, which the
# CIFAR ResNets' first layer removes.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.247, 0.243, 0.261)

# The smallest class-changing attack (Algorithm 1 in L2,min mode, and BTR for
# the ARA; docs/method.md §4 and §6): a budget ρ that never binds and the
# momentum μ; the ARA's steps N and images attacked at once; the steps of the
# Claim-1 comparison and the demo.
SMALLEST_CHANGE_RHO = 20.0
ATTACK_MOMENTUM = 0.9
ARA_STEPS = 450
ARA_BATCH_SIZE = 100
SMALLEST_CHANGE_STEPS = 200

# Adversarial training (docs/method.md §3): each mode's budget ρ, and the
# attack's steps N.
ADVERSARIAL_MODES = {"bounded": 0.01, "l2min": 0.1}
ADVERSARIAL_STEPS = 7

# The most the regulariser's weight gradient may be, in multiples of the
# cross-entropy's, on a network whose first training batch exceeds it
# (docs/method.md §3a, whose table has where networks start: the paper's
# ResNets below it, keras.applications networks far above).
MAX_GRADIENT_RATIO = 1.0
# The bound holds from the first batch on for networks that start past this
# fraction of the ratio, not only past the ratio itself: ConvNeXtTiny starts at
# 0.85 and, unbounded, diverged at lr 0.1 once its regulariser grew; the
# paper's ResNets start at 0.22 and 0.31.
BOUND_ENGAGES_AT = 0.5

# Open Inference Protocol (V2) clients reach model m's explain endpoint as the
# model named m + this suffix; an export may not take such a name beside m.
EXPLAINER_SUFFIX = "-explainer"
# Each attribution method's name in files (`<name>-<version>-<suffix>.onnx`) and, after a dash, in V2 model
# names (`m-grad-cam`), as the explainer's.
ATTRIBUTION_SUFFIXES = {"saliency": "saliency", "smoothgrad": "smoothgrad",
                        "integrated_gradients": "integrated-gradients", "grad_cam": "grad-cam"}
# The V2 model name suffix of each signature but predict's.
V2_SUFFIXES = {"explain": EXPLAINER_SUFFIX, **{method: "-" + suffix for method, suffix in ATTRIBUTION_SUFFIXES.items()}}


def v2_endpoints_named(name):
    """`[(model, signature)]`: each model whose `signature` endpoint V2 clients would reach as `name`."""
    return [(name[: -len(suffix)], signature) for signature, suffix in V2_SUFFIXES.items() if name.endswith(suffix)]

# The tf.distribute strategies a run can use (keras_robust.common.strategies).
STRATEGIES = ("default", "mirrored", "multiworker")

# Algorithm 1 divides each step's direction by 1e-8 + RMSE(direction)
# (docs/method.md §4): the TensorFlow attack and the ONNX explain graph alike.
RMSE_EPSILON = 1e-8

# The norms robust accuracy is reported at, per threat model: RobustBench's CIFAR-10 L2 0.5 with a
# smaller and a larger one, and its L∞ 8/255.
ROBUST_ACCURACY_EPS = {"L2": (0.25, 0.5, 1.0), "Linf": (8 / 255,)}

# The attribution methods (keras_robust.explanations.attributions): SmoothGrad's noisy copies, their noise as a
# fraction of the image's value range (the 10-20 % of Smilkov et al.) and seed; Integrated Gradients' quadrature
# intervals. The most copies or intervals a request may ask for, as MAX_EXPLAIN_STEPS bounds explanations.
SMOOTHGRAD_SAMPLES = 32
SMOOTHGRAD_NOISE = 0.15
SMOOTHGRAD_SEED = 0
INTEGRATED_GRADIENTS_STEPS = 64
MAX_ATTRIBUTION_PASSES = 10_000
