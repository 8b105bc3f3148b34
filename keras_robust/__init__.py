"""keras-robust: robust training and adversarial explanations for Keras.

Implements Woods, Chen & Teuscher, "Adversarial explanations for understanding
image classification decisions and improved neural network robustness"
(Nature Machine Intelligence, 2019).

The public names load on first use, so that the parts that need no
TensorFlow (the ONNX server, the command line's parsing) start without it.
The Keras layers and models register with Keras as soon as Keras is imported,
before or after this package, so `keras.saving.load_model` finds them.
Imported before TensorFlow, it asks TensorFlow for its oneDNN CPU kernels
(`keras_robust.common.onednn`).
"""

from keras_robust import lazy_loading
from keras_robust.common.onednn import prefer_onednn

prefer_onednn()

__version__ = "0.1.0"

# Public name -> the module holding it.
_PUBLIC = {
    "HalfHuberReLU": "keras_robust.method.activations",
    "half_huber_relu": "keras_robust.method.activations",
    "attributions": "keras_robust.explanations.attributions",
    "data": "keras_robust.data",
    "AttackResult": "keras_robust.method.attacks",
    "AttackSettings": "keras_robust.method.attack_settings",
    "AttackSanityError": "keras_robust.method.attacks",
    "attack": "keras_robust.method.attacks",
    "attack_details": "keras_robust.method.attacks",
    "AdversarialExplainer": "keras_robust.explanations.adversarial",
    "Explanation": "keras_robust.explanations.adversarial",
    "ExplanationSanityError": "keras_robust.explanations.outcome",
    "FusedBatchNormalization": "keras_robust.models.fused_batch_norm",
    "NonFiniteTrainingError": "keras_robust.method.non_finite_guard",
    "AraResult": "keras_robust.evaluation.accuracy_robustness",
    "ara": "keras_robust.evaluation.accuracy_robustness",
    "AutoAttackResult": "keras_robust.evaluation.autoattack.ensemble",
    "autoattack": "keras_robust.evaluation.autoattack.ensemble",
    "pretrained": "keras_robust.models.zoo",
    "recalibrate_batch_norm": "keras_robust.training.batch_norm",
    "RecalibrateBatchNorm": "keras_robust.training.batch_norm",
    "pretrained_card": "keras_robust.models.zoo",
    "pretrained_names": "keras_robust.models.zoo",
    "resnet": "keras_robust.models.cifar_resnet",
    "resnet50": "keras_robust.models.imagenet_resnet",
    "RobustModel": "keras_robust.method.robust_model",
    "with_half_huber_relu": "keras_robust.method.smooth_activations",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_loading.lazy_attributes(globals(), _PUBLIC)

lazy_loading.install()
