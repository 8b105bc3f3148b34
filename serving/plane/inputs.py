"""The inputs of every protocol, checked and converted into the arrays the backends take.

Each protocol gathers its request's values into one column of `(where,
value)` pairs per signature input (`where` names the example in error
messages: `instance 2`, `inputs.targets[2]`, `images[0]`), TF Serving's JSON
formats in `serving.tf_serving.rest_formats`, tensors (V2's and gRPC's) in
`tensor_columns` here. `convert_columns` then checks every value, by one
function per input, so every protocol answers a bad value with the same
message.

Everything the ONNX graphs do not check is checked here: shapes, dtypes,
finite pixels in [0, 1], targets in [0, K), rho > 0, 1 <= steps (and
SmoothGrad's samples) <= the cap, noise >= 0, seeds in range, finite
baselines, and the request's total work. So are the sizes a request
declares (a tensor's shape, a length, a version), before anything is
allocated by them: `check_tensor_size` and `parse_decimal`.
"""

import base64
import binascii
import io
import math

import numpy as np
import PIL.Image

from keras_robust.common.defaults import MAX_RHO
from keras_robust.common.validation import check_pixels
from keras_robust.explanations.noise import SEED_RANGE
from keras_robust.export.card import signature_defaults
from keras_robust.serving.plane.errors import ServingError, bad_request, show

# The inputs a request must give; explain's rho and steps and the attribution methods' settings default to the card's.
REQUIRED = ("images", "targets")
IMAGE_MODES = {1: "L", 3: "RGB"}
# The value of a full-scale pixel in Pillow's modes of more than 8 bits per channel,
# which `convert` to L or RGB would clip at 255 (all white) instead of scaling. 16-bit
# PNGs open as I;16, 16-bit PGMs as I; F is taken as [0, 1] already. A value above
# full scale (a 32-bit I image) is then refused by the pixel check, never clipped.
HIGH_DEPTH_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1}
# No input has more dimensions than images' 4; numpy refuses more than 64.
MAX_TENSOR_RANK = 8
# Sizes, lengths and versions written in text have at most this many digits
# (below 2**63), so that none is a number too large to handle.
MAX_DIGITS = 18


def convert_columns(columns, card, limits, stop_if_cancelled=None):
    """Validates each column, `{name: [(where, value), ...]}`, into the array the
    backends take, `{name: np.ndarray}` in the columns' order. `stop_if_cancelled()`
    runs before each value, so that decoding images stops at the request's deadline."""
    shape = tuple(card["input"]["shape"][1:])
    names = {name: i for i, name in enumerate(card["class_names"])}
    cap = min(limits.max_steps, card["explain_defaults"]["max_steps"])
    passes = min(limits.max_steps, card.get("attribution_defaults", {}).get("max_passes", cap))
    converters = {
        "images": lambda where, value: _image(where, value, shape, limits),
        "targets": lambda where, value: _target(where, value, names),
        "rho": _rho,
        "steps": lambda where, value: _count(where, value, "steps", cap),
        "samples": lambda where, value: _count(where, value, "samples", passes),
        "noise": _noise,
        "seed": _seed,
        "baseline": lambda where, value: _baseline(where, value, shape),
    }
    def convert(name, where, value):
        if stop_if_cancelled is not None:
            stop_if_cancelled()
        return converters[name](where, value)

    return {name: np.stack([convert(name, where, value) for where, value in column])
            for name, column in columns.items()}


def parse_decimal(text):
    """`text` as an int if it is 1 to MAX_DIGITS ASCII digits, else None.

    `str.isdigit` also takes other scripts' digits (`"١"`, which `int` reads
    as 1, and `"²"`, which it refuses): a version or a length in a request is
    ASCII digits only.
    """
    if isinstance(text, str) and 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def nested_shape(value):
    """The sizes of a nested list along its first elements (`[]` for a scalar): its
    shape if it is not ragged, found without converting it."""
    dims = []
    while isinstance(value, list) and value:
        dims.append(len(value))
        value = value[0]
    return dims


def check_tensor_size(where, shape, datatype, itemsize, limits):
    """The element count of a tensor of `shape`, checked before anything of that size is allocated.

    `shape` is what the request declares (V2's `shape`, a `TensorProto`'s
    dims): a list of at most MAX_TENSOR_RANK integers >= 0, the first (the
    batch) at most `max_batch` (400), and no more than `max_request_bytes` of
    `datatype` values (413), computed in Python integers, which cannot overflow.
    """
    valid = (isinstance(shape, list) and len(shape) <= MAX_TENSOR_RANK
             and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape))
    if not valid:
        raise bad_request(
            f"{where}: shape is a list of at most {MAX_TENSOR_RANK} integer sizes >= 0. Received: shape={show(shape)}"
        )
    if shape:
        check_batch_size(shape[0], limits, f"{where}: a tensor's first dimension (the batch)")
    # Zero-size dimensions count as 1, so that [0, 10**30] is refused too.
    extent = 1
    for size in shape:
        extent *= max(size, 1)
        if extent * itemsize > limits.max_request_bytes:
            raise ServingError(
                413, f"{where}: a tensor holds at most max_request_bytes={limits.max_request_bytes} bytes. "
                     f"Received: shape={show(shape)} of {datatype} ({itemsize} bytes each)"
            )
    return extent if all(shape) else 0


def check_batch_size(size, limits, what="A request"):
    if size > limits.max_batch:
        raise bad_request(f"{what} holds at most max_batch={limits.max_batch} examples. Received: {show(size)}")


def check_work(signature, inputs, limits):
    """The cap on a request's work: its examples' passes through the network (explanation steps, SmoothGrad's
    noisy copies, Integrated Gradients' points), summed."""
    passes = {"explain": lambda: inputs["steps"], "smoothgrad": lambda: inputs["samples"],
              "integrated_gradients": lambda: inputs["steps"] + 1}
    if signature not in passes:
        return
    each = passes[signature]()
    total = int(np.sum(each))
    if total > limits.max_image_steps:
        raise bad_request(
            f"A request makes at most max_image_steps={limits.max_image_steps} image-steps (the sum over its "
            "examples of explanation steps, SmoothGrad samples or Integrated Gradients points); send fewer images "
            f"or steps. Received: {len(each)} examples, {total} image-steps"
        )


def tensor_columns(tensors, parameters, signature, card, limits):
    """The columns of `{name: np.ndarray}` tensors (V2's or gRPC's) and request parameters.

    `images` is `[B, H, W, C]`; `targets` one entry per image; every other
    input of `signature` (explain's `rho` and `steps`, the attribution
    methods' settings) one per image or one for all, as a tensor or a
    parameter, else the card's default. A baseline is an image per entry
    (`[B or 1, H, W, C]`) or one number.
    """
    names = card["signatures"][signature]["inputs"]
    shape = list(card["input"]["shape"][1:])
    images = tensors["images"]
    if images.ndim != 1 + len(shape) or list(images.shape[1:]) != shape or len(images) == 0:
        raise bad_request(
            f"images has shape [B, {', '.join(map(str, shape))}], B >= 1. Received: shape {list(images.shape)}"
        )
    batch = len(images)
    check_batch_size(batch, limits)
    columns = {"images": [(f"images[{b}]", image) for b, image in enumerate(images)]}
    defaults = signature_defaults(card, signature)
    for name in names[1:]:  # targets (required), then the signature's settings
        if name in tensors and name in parameters:
            raise bad_request(f"Give {name} as an input tensor or a request parameter, not both. Received: both")
        if name in tensors:
            columns[name] = _per_image(name, tensors[name], batch, allow_one=name != "targets")
        elif name in parameters:
            columns[name] = [(f"parameters.{name}", parameters[name])] * batch
        else:
            columns[name] = [(f"{name} (the card's default)", defaults[name])] * batch
    return columns


def _per_image(name, array, batch, allow_one):
    """`[(where, value)] * batch` from a `[B]`, `[B, 1]` (or, if allowed, `[1]`) tensor; a baseline's rows are
    images."""
    if name == "baseline" and array.ndim > 1:
        if len(array) not in (batch, 1):
            raise bad_request(f"baseline has shape [B or 1, H, W, C] with B = {batch}, or is one number. "
                              f"Received: shape {list(array.shape)}")
        return [(f"baseline[{b}]", array[b if len(array) == batch else 0]) for b in range(batch)]
    values = array.reshape(-1).tolist()
    shaped = array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)
    if not shaped or len(values) not in ((batch, 1) if allow_one else (batch,)):
        one = " or [1] (one for all)" if allow_one else ""
        raise bad_request(f"{name} has shape [B] or [B, 1] with B = {batch}{one}. Received: shape {list(array.shape)}")
    if len(values) == 1:
        values = values * batch
    return [(f"{name}[{b}]", value) for b, value in enumerate(values)]


def _image(where, value, shape, limits):
    """One image `(H, W, C)` float32 in [0, 1], from a nested list, an array or `{"b64": ...}`."""
    if isinstance(value, dict):
        return _decode_b64(where, value, shape, limits)
    if isinstance(value, list) and tuple(nested_shape(value)) != shape:
        raise bad_request(
            f"{where}: images must have shape {list(shape)}. Received: shape {show(nested_shape(value))}"
        )
    try:
        array = np.asarray(value)
    except ValueError:
        raise bad_request(
            f"{where}: images must be a nested list of shape {list(shape)}. Received: a ragged list"
        ) from None
    if array.dtype.kind not in "iuf":
        raise bad_request(
            f"{where}: images must hold numbers (pixels in [0, 1]) or be {{\"b64\": ...}}. "
            f"Received: {show(value)}"
        )
    if array.shape != shape:
        raise bad_request(f"{where}: images must have shape {list(shape)}. Received: shape {list(array.shape)}")
    return _check_pixels(where, array.astype(np.float32))


def _check_pixels(where, array):
    try:
        check_pixels(array, what=f"{where}: images")
    except ValueError as error:
        raise bad_request(str(error)) from None
    return array


def _decode_b64(where, value, shape, limits):
    """Decodes a PNG/JPEG/... image and resizes it (bilinear) to the model's input."""
    text = value.get("b64")
    if set(value) != {"b64"} or not isinstance(text, str):
        raise bad_request(f"{where}: an encoded image is {{\"b64\": \"<base64>\"}}. Received: {show(value)}")
    if len(text) * 3 // 4 > limits.max_image_bytes:
        raise ServingError(
            413, f"{where}: an encoded image has at most max_image_bytes={limits.max_image_bytes} bytes. "
                 f"Received: about {len(text) * 3 // 4} bytes"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: images.b64 is not valid base64. Received: {show(text)}") from None
    height, width, channels = shape
    if channels not in IMAGE_MODES:
        raise bad_request(f"{where}: encoded images need a model with 1 or 3 channels. Received: {channels}")
    image = _open_image(where, data, limits)
    try:
        if image.mode in HIGH_DEPTH_FULL_SCALE:
            pixels = _high_depth_pixels(image, width, height, channels)
        else:
            image = image.convert(IMAGE_MODES[channels])
            if image.size != (width, height):
                image = image.resize((width, height), PIL.Image.BILINEAR)
            pixels = np.asarray(image, np.float32) / 255.0
    except (OSError, ValueError) as error:  # truncated or corrupt image data
        raise bad_request(f"{where}: images.b64 is not a readable image. Received: {error}") from None
    return _check_pixels(where, pixels.reshape(shape))


def _high_depth_pixels(image, width, height, channels):
    """A one-channel image of more than 8 bits (16-bit PNG, PGM, float TIFF), scaled by
    its depth into [0, 1] and resized in floats; repeated for a 3-channel model."""
    scaled = np.asarray(image, np.float64) / HIGH_DEPTH_FULL_SCALE[image.mode]
    image = PIL.Image.fromarray(scaled.astype(np.float32))  # mode F
    if image.size != (width, height):
        image = image.resize((width, height), PIL.Image.BILINEAR)
    return np.repeat(np.asarray(image, np.float32)[..., None], channels, axis=-1)


def _open_image(where, data, limits):
    """Opens (reads the header of) an image, refusing more than max_image_pixels."""
    too_large = (
        f"{where}: an encoded image has at most max_image_pixels={limits.max_image_pixels} pixels. Received: "
    )
    try:
        image = PIL.Image.open(io.BytesIO(data))
    except PIL.Image.DecompressionBombError as error:
        raise ServingError(413, too_large + str(error)) from None
    except (PIL.UnidentifiedImageError, OSError, ValueError):
        raise bad_request(
            f"{where}: images.b64 is not an image PIL can read (PNG, JPEG, ...). "
            f"Received: {len(data)} bytes starting {data[:8]!r}"
        ) from None
    if image.width * image.height > limits.max_image_pixels:
        raise ServingError(413, too_large + f"{image.width}x{image.height}")
    return image


def _target(where, value, names):
    index = names.get(value) if isinstance(value, str) else value
    valid = isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(names)
    if not valid:
        raise bad_request(
            f"{where}: targets must be a class index in [0, {len(names)}) or a class name "
            f"({_list(names)}). Received: {show(value)}"
        )
    return np.int32(index)


def _rho(where, value):
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and 0 < value <= MAX_RHO):
        raise bad_request(
            f"{where}: rho must be a number in (0, {MAX_RHO:g}] (an RMSE in [0, 1] pixel units, "
            f"docs/method.md §5). Received: {show(value)}"
        )
    return np.float32(value)


def _count(where, value, name, cap):
    """Explanation or Integrated Gradients steps, SmoothGrad samples: an integer in [1, cap]."""
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= cap):
        raise bad_request(
            f"{where}: {name} must be an integer in [1, {cap}] (the server's max_steps). Received: {show(value)}"
        )
    return np.int32(value)


def _noise(where, value):
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
        raise bad_request(
            f"{where}: noise must be a number >= 0 (SmoothGrad's noise as a fraction of the image's value range). "
            f"Received: {show(value)}"
        )
    return np.float32(value)


def _seed(where, value):
    low, high = SEED_RANGE
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise bad_request(f"{where}: seed must be an integer in [{low}, {high}]. Received: {show(value)}")
    return np.int32(value)


def _baseline(where, value, shape):
    """Integrated Gradients' baseline: an image `(H, W, C)` of finite values, or one number for every pixel."""
    if _is_number(value):
        array = np.full(shape, value, np.float32)
    else:
        try:
            array = np.asarray(value, np.float32)
        except (TypeError, ValueError):
            array = None
        if array is None or array.shape != shape:
            raise bad_request(f"{where}: baseline is an image of shape {list(shape)} or one number. "
                              f"Received: {show(value)}")
    if not np.all(np.isfinite(array)):
        raise bad_request(f"{where}: baseline must be finite. Received: a non-finite value")
    return array


def _is_number(value):
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _list(names, limit=12):
    shown = ", ".join(list(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")
