"""Reading image files for explanation, with clear errors and size handling: every
image file the command line, the demo and the explainers read goes through `load_image`."""

import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_robust.common.validation import check_pixels


def check_images(images, unit_range=True):
    """Float images `(n, H, W, C)`, with values in [0, 1] if `unit_range`, as float32;
    clear errors otherwise."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"Images must have shape (n, H, W, C). Received: images.shape={images.shape}")
    check_pixels(images, unit_range=unit_range)
    return images.astype("float32")


def load_images(paths, size):
    """Reads image files as float RGB in [0, 1], resized to `size` if needed.

    Images of another size are resized bilinearly with a warning, rather than
    refused, so a photo can be explained by a CIFAR-sized model; the warning
    says that the model sees a resized image.

    Args:
        paths: Image file paths.
        size: `(height, width)` the model expects.

    Returns:
        A float32 array `(len(paths), height, width, 3)`.
    """
    if not paths:
        raise ValueError("No image files given. Received: paths=[]")
    return np.stack([load_image(path, size) for path in paths])


def load_image(path, size):
    """Reads one image file as float RGB `(height, width, 3)` in [0, 1].

    Raises `FileNotFoundError` for a missing file and `ValueError` naming the
    file for one that is not a readable image; see `load_images`.
    """
    height, width = size
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No image file at {path}")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (width, height):
                warnings.warn(
                    f"{path} is {image.size[0]}x{image.size[1]}; resizing it to the "
                    f"model's {width}x{height} input",
                    stacklevel=3,
                )
                image = image.resize((width, height), Image.BILINEAR)
            return np.asarray(image, dtype="float32") / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path} is not a readable image file ({error})") from None


def load_readable_images(paths, size=(32, 32)):
    """Reads the readable ones of `paths`, resized to `size` without a warning each,
    and names the others (the demo explains what it can read).

    Returns:
        `(images, names, skipped)`: a float32 array `(n, H, W, 3)` in [0, 1],
        the file names read, and `(path, reason)` for every file that could
        not be read.
    """
    images, names, skipped = [], [], []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                images.append(load_image(path, size))
            names.append(os.path.basename(path))
        except (OSError, ValueError) as error:
            skipped.append((path, str(error)))
    stacked = np.stack(images) if images else np.zeros((0, *size, 3), "float32")
    return stacked, names, skipped
