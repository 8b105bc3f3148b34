"""TF Serving's REST request and response formats, validated into numpy.

A request is `{"signature_name": ..., "instances": [...]}` (row format) or
`{"signature_name": ..., "inputs": ...}` (columnar format), as in TF Serving's
REST API. Both are first gathered into one column of `(where, value)` pairs
per signature input, so each value is checked once, by one function, with an
error naming the instance it came from.

Everything the ONNX graphs do not check is checked here: shapes, dtypes,
finite pixels in [0, 1], targets in [0, K), rho > 0, 1 <= steps <= the cap.
"""

import base64
import binascii
import io
import json

import numpy as np
import PIL.Image

from keras_robust.common.defaults import MAX_RHO
from keras_robust.common.validation import check_pixels

REQUEST_KEYS = ("signature_name", "instances", "inputs")
REQUIRED = ("images", "targets")
IMAGE_MODES = {1: "L", 3: "RGB"}


class ServingError(Exception):
    """An error answered as TF Serving answers one: HTTP `status`, `{"error": message}`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message):
    return ServingError(400, message)


def parse_request(body, card, limits, verb="predict"):
    """Parses and validates a `:predict` or `:explain` request body.

    Args:
        body: The raw request body (bytes).
        card: The served version's model card.
        limits: The server's `Limits` (batch, image and step caps).
        verb: `"predict"` (any signature, default `serving_default`) or
            `"explain"` (KServe's verb: the `explain` signature only).

    Returns:
        `(signature, inputs, columnar)`: the signature name, `{input name:
        np.ndarray}` in the signature's input order, and whether the request
        used the columnar format (the response uses the same format).
    """
    payload = parse_json(body)
    signature = _signature(payload, card, verb)
    unknown = sorted(set(payload) - set(REQUEST_KEYS))
    if unknown:
        raise bad_request(
            "A request has the keys 'signature_name' and 'instances' or 'inputs'. "
            f"Received: unknown keys {unknown}"
        )
    if ("instances" in payload) == ("inputs" in payload):
        raise bad_request(
            "A request needs exactly one of 'instances' (row format) or 'inputs' "
            f"(columnar format). Received: keys {sorted(payload)}"
        )
    names = card["signatures"][signature]["inputs"]
    defaults = _defaults(card, names)
    shape = card["input"]["shape"][1:]
    if "instances" in payload:
        columns = _rows(payload["instances"], names, defaults, limits, shape)
    else:
        columns = _columns(payload["inputs"], names, defaults, limits, shape)
    inputs = convert_columns(columns, card, limits)
    if "steps" in inputs:
        check_work(inputs["steps"], limits)
    return signature, inputs, "inputs" in payload


def format_response(outputs, names, columnar):
    """TF Serving's response: `{"outputs": {name: list}}` (columnar) or
    `{"predictions": [{name: value}, ...]}` (row), outputs in `names` order."""
    values = {name: outputs[name].tolist() for name in names}
    if columnar:
        return {"outputs": values}
    return {"predictions": [dict(zip(names, row)) for row in zip(*values.values())]}


def encode_json(payload):
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_json(body):
    """The request body as a JSON object (a dict), or a 400 naming what is wrong."""
    try:
        payload = json.loads(body)
    except ValueError as error:  # JSONDecodeError and invalid UTF-8 are both ValueErrors
        raise bad_request(f"The request body is not valid JSON. Received: {error}") from None
    except RecursionError:
        raise bad_request("The request body nests JSON too deeply. Received: over 1000 levels") from None
    if not isinstance(payload, dict):
        raise bad_request(f"The request body must be a JSON object. Received: {type(payload).__name__}")
    return payload


def _signature(payload, card, verb):
    signature = payload.get("signature_name", "explain" if verb == "explain" else "serving_default")
    if not isinstance(signature, str) or signature not in card["signatures"]:
        raise bad_request(
            f"Model {card['name']!r} has the signatures {', '.join(card['signatures'])}. "
            f"Received: signature_name={show(signature)}"
        )
    if verb == "explain" and signature != "explain":
        raise bad_request(
            "The :explain verb runs the 'explain' signature; use :predict for the others. "
            f"Received: signature_name={signature!r}"
        )
    return signature


def _defaults(card, names):
    """The explain inputs a request may leave out: the card's defaults (docs/method.md §5)."""
    defaults = card["explain_defaults"]
    return {name: defaults[name] for name in ("rho", "steps") if name in names}


def _rows(instances, names, defaults, limits, shape):
    """`{name: [(where, value), ...]}` from the row format's instances."""
    if not isinstance(instances, list) or not instances:
        raise bad_request(
            "'instances' must be a non-empty list, one entry per example. "
            f"Received: {show(instances)}"
        )
    _check_batch(instances, limits, shape, "'instances'")
    columns = {name: [] for name in names}
    for i, instance in enumerate(instances):
        where = f"instance {i}"
        named = _named(instance, names, where)
        for name in names:
            columns[name].append((where, named.get(name, defaults.get(name))))
    return columns


def _named(instance, names, where):
    """One instance as `{input name: value}`.

    A one-input signature takes the bare tensor (or `{"b64": ...}`) too, as
    TF Serving does.
    """
    if len(names) == 1 and (not isinstance(instance, dict) or set(instance) == {"b64"}):
        return {names[0]: instance}
    if not isinstance(instance, dict):
        raise bad_request(
            f"{where}: the signature has several inputs, so an instance is an object "
            f"{{{', '.join(names)}}}. Received: {show(instance)}"
        )
    _check_names(instance, names, where)
    return instance


def _columns(inputs, names, defaults, limits, shape):
    """`{name: [(where, value), ...]}` from the columnar format's inputs.

    Inputs other than `images` may be one scalar for the whole batch.
    """
    if len(names) == 1 and not isinstance(inputs, dict):
        inputs = {names[0]: inputs}
    if not isinstance(inputs, dict):
        raise bad_request(
            f"For a signature with several inputs, 'inputs' is an object {{{', '.join(names)}}}. "
            f"Received: {show(inputs)}"
        )
    _check_names(inputs, names, "inputs")
    images = inputs["images"]
    if not isinstance(images, list) or not images:
        raise bad_request(f"inputs.images must be a non-empty list of images. Received: {show(images)}")
    _check_batch(images, limits, shape, "inputs.images")
    batch = len(images)
    columns = {"images": [(f"inputs.images[{i}]", image) for i, image in enumerate(images)]}
    for name in names[1:]:  # both signatures take images first
        value = inputs.get(name, defaults.get(name))
        if not isinstance(value, list):
            value = [value] * batch
        elif len(value) != batch:
            raise bad_request(
                f"inputs.{name} needs one entry per image ({batch}) or one scalar. "
                f"Received: {len(value)} entries"
            )
        columns[name] = [(f"inputs.{name}[{i}]", v) for i, v in enumerate(value)]
    return columns


def _check_names(values, names, where):
    unknown = sorted(set(values) - set(names))
    missing = [name for name in REQUIRED if name in names and name not in values]
    if unknown or missing:
        raise bad_request(
            f"{where}: the signature's inputs are {', '.join(names)} "
            f"({', '.join(n for n in REQUIRED if n in names)} required). "
            f"Received: unknown {unknown}, missing {missing}"
        )


def _check_batch(values, limits, shape, where):
    """The batch size cap, and the commonest mistake: one image without its batch dimension."""
    dims, first = [], values
    while isinstance(first, list) and first:
        dims, first = dims + [len(first)], first[0]
    if dims == list(shape):
        raise bad_request(
            f"{where} must be a list of images; this is one image without the batch "
            f"dimension (send [image]). Received: a nested list of shape {dims}"
        )
    if len(values) > limits.max_batch:
        raise bad_request(
            f"A request holds at most max_batch={limits.max_batch} examples. Received: {len(values)}"
        )


def check_work(steps, limits):
    """The cap on a request's explanation work: its examples' steps, summed."""
    total = int(np.sum(steps))
    if total > limits.max_image_steps:
        raise bad_request(
            f"A request explains at most max_image_steps={limits.max_image_steps} image-steps (the "
            f"sum of steps over its examples); send fewer images or steps. Received: {len(steps)} "
            f"examples, {total} image-steps"
        )


def convert_columns(columns, card, limits):
    """Validates each column, `{name: [(where, value), ...]}`, into the array the
    backends take; every protocol checks its values here."""
    shape = tuple(card["input"]["shape"][1:])
    names = {name: i for i, name in enumerate(card["class_names"])}
    cap = min(limits.max_steps, card["explain_defaults"]["max_steps"])
    converters = {
        "images": lambda where, value: _image(where, value, shape, limits),
        "targets": lambda where, value: _target(where, value, names),
        "rho": _rho,
        "steps": lambda where, value: _steps(where, value, cap),
    }
    return {
        name: np.stack([converters[name](where, value) for where, value in column])
        for name, column in columns.items()
    }


def _image(where, value, shape, limits):
    """One image `(H, W, C)` float32 in [0, 1], from a nested list or `{"b64": ...}`."""
    if isinstance(value, dict):
        return _decode_b64(where, value, shape, limits)
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
        image = image.convert(IMAGE_MODES[channels])
        if image.size != (width, height):
            image = image.resize((width, height), PIL.Image.BILINEAR)
        pixels = np.asarray(image, np.float32) / 255.0
    except (OSError, ValueError) as error:  # truncated or corrupt image data
        raise bad_request(f"{where}: images.b64 is not a readable image. Received: {error}") from None
    return pixels.reshape(shape)


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


def _steps(where, value, cap):
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= cap):
        raise bad_request(
            f"{where}: steps must be an integer in [1, {cap}] (the server's max_steps). "
            f"Received: {show(value)}"
        )
    return np.int32(value)


def _list(names, limit=12):
    shown = ", ".join(list(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def show(value, limit=80):
    """A short repr: error messages must not echo a whole request."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
