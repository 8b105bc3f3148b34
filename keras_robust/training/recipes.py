"""Training recipes: the reference CIFAR-10 recipe and an ImageNet-scale one (docs/imagenet.md).

A recipe fixes the network family, the input pipeline and the defaults of
the schedule; `TrainingConfig` fields left at None take the recipe's values.
"""

import dataclasses

from keras_robust.common.validation import check_choice


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Defaults of one recipe.

    Attributes:
        name: `"cifar"` or `"imagenet"`.
        depth: Default ResNet depth (cifar 6n+2; imagenet only 50, `resnet50`).
        epochs: Epochs of the full schedule.
        batch_size: Images per batch and replica.
        learning_rate: SGD learning rate per replica (it scales with the
            number of replicas, as the batch does).
        lr_drop_epochs: Epochs, out of `epochs`, after which the learning
            rate is divided by 10; a shorter or longer run scales them.
        streamed: Whether images are streamed from files each epoch (data
            sets too large to decode into memory) instead of decoded once.
        image_size: Side of the square training crop for streamed data.
    """

    name: str
    depth: int
    epochs: int
    batch_size: int
    learning_rate: float
    lr_drop_epochs: tuple
    streamed: bool = False
    image_size: int = None


RECIPES = {
    # docs/method.md §3: the paper's CIFAR-10 recipe (batch 128 and lr 0.1 per GPU).
    "cifar": Recipe("cifar", depth=44, epochs=200, batch_size=128, learning_rate=0.1, lr_drop_epochs=(170, 195)),
    # The paper gives no ImageNet schedule; this is the standard ResNet-50 one
    # (Goyal et al., 2017: lr 0.1 per 256 images, ÷10 at epochs 30, 60, 80 of 90).
    "imagenet": Recipe("imagenet", depth=50, epochs=90, batch_size=64, learning_rate=0.025,
                       lr_drop_epochs=(30, 60, 80), streamed=True, image_size=224),
}


def get_recipe(name):
    """The `Recipe` called `name`."""
    check_choice("recipe", name, RECIPES)
    return RECIPES[name]
