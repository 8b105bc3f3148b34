"""keras-robust: robust training and adversarial explanations for Keras.

Implements Woods, Chen & Teuscher, "Adversarial explanations for understanding
image classification decisions and improved neural network robustness"
(Nature Machine Intelligence, 2019).
"""

from keras_robust.activations import HalfHuberReLU, half_huber_relu
from keras_robust import attributions, data
from keras_robust.attacks import AttackResult, AttackSanityError, attack, attack_details
from keras_robust.explain import AdversarialExplainer, Explanation
from keras_robust.metrics import AraResult, ara
from keras_robust.model_zoo import pretrained, pretrained_card, pretrained_names
from keras_robust.resnet import resnet
from keras_robust.resnet50 import resnet50
from keras_robust.robust_model import RobustModel

__version__ = "0.1.0"

__all__ = [
    "AdversarialExplainer",
    "AraResult",
    "Explanation",
    "ara",
    "attributions",
    "data",
    "AttackResult",
    "AttackSanityError",
    "HalfHuberReLU",
    "RobustModel",
    "attack",
    "attack_details",
    "half_huber_relu",
    "pretrained",
    "pretrained_card",
    "pretrained_names",
    "resnet",
    "resnet50",
]
