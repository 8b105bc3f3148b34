"""TF Serving's REST request and response formats (KServe V1's `:explain` takes the same).

A request is `{"signature_name": ..., "instances": [...]}` (row format) or
`{"signature_name": ..., "inputs": ...}` (columnar format), as in TF Serving's
REST API. Both become an `InferenceRequest` whose inputs are one column of
`(where, value)` pairs per signature input, so each value is checked once,
by `serving.plane.inputs`, with an error naming the instance it came from. The
answer comes back in the request's format.
"""

from keras_robust.export.card import signature_defaults
from keras_robust.serving.plane.data_plane import InferenceRequest
from keras_robust.serving.plane.errors import bad_request, show, unknown_signature
from keras_robust.serving.plane.inputs import REQUIRED, check_batch_size, nested_shape
from keras_robust.serving.transport.http_io import parse_json

REQUEST_KEYS = ("signature_name", "method", "instances", "inputs")
# KServe V1 `:explain`'s method naming the paper's adversarial explanation (the `explain` signature); the
# attribution methods go by their signatures' names.
ADVERSARIAL = "adversarial"


def parse_request(body, card, limits, verb="predict"):
    """Parses and validates a `:predict` or `:explain` request body.

    Args:
        body: The raw request body (bytes).
        card: The served version's model card.
        limits: The server's `Limits` (its batch cap).
        verb: `"predict"` (any signature, default `serving_default`) or
            `"explain"` (KServe's verb: the explanation `method` names,
            `"adversarial"` by default, or an attribution method).

    Returns:
        An `InferenceRequest` whose `wire` says whether the request used the
        columnar format (the answer uses the same).
    """
    payload = parse_json(body)
    signature = _signature(payload, card, verb)
    unknown = sorted(set(payload) - set(REQUEST_KEYS))
    if unknown:
        raise bad_request(
            "A request has the keys 'signature_name' (:predict) or 'method' (:explain), and 'instances' or 'inputs'. "
            f"Received: unknown keys {show(unknown)}"
        )
    if ("instances" in payload) == ("inputs" in payload):
        raise bad_request(
            "A request needs exactly one of 'instances' (row format) or 'inputs' "
            f"(columnar format). Received: keys {show(sorted(payload))}"
        )
    names = card["signatures"][signature]["inputs"]
    defaults = signature_defaults(card, signature)
    shape = card["input"]["shape"][1:]
    if "instances" in payload:
        columns = _rows(payload["instances"], names, defaults, limits, shape)
    else:
        columns = _columns(payload["inputs"], names, defaults, limits, shape)
    return InferenceRequest(signature, columns, wire="inputs" in payload)


def format_response(response):
    """TF Serving's answer to `response`: `{"outputs": {name: list}}` (columnar) or
    `{"predictions": [{name: value}, ...]}` (row), outputs in the signature's order."""
    values = {name: value.tolist() for name, value in response.outputs.items()}
    if response.wire:
        return {"outputs": values}
    return {"predictions": [dict(zip(values, row)) for row in zip(*values.values())]}


def _signature(payload, card, verb):
    """`:predict` runs `signature_name` (default `serving_default`); KServe's `:explain` the explanation
    `method` names (default the adversarial explanation)."""
    if verb == "explain":
        named = "signature_name" in payload
        if payload.get("signature_name", "explain") != "explain" or (named and "method" in payload):
            raise bad_request("The :explain verb runs the 'explain' signature or the 'method' named (default "
                              "'adversarial'); use :predict for the other signatures. "
                              f"Received: signature_name={show(payload['signature_name'])}")
        method = payload.get("method", ADVERSARIAL)
        signature = "explain" if method == ADVERSARIAL else method
        if not isinstance(method, str) or signature == "serving_default" or signature not in card["signatures"]:
            methods = [ADVERSARIAL] + [m for m in card["signatures"] if m not in ("serving_default", "explain")]
            raise bad_request(f"The :explain verb's method is one of {', '.join(methods)}. "
                              f"Received: method={show(method)}")
        return signature
    if "method" in payload:
        raise bad_request(f"'method' chooses an explanation of the :explain verb; :predict takes a signature_name. "
                          f"Received: method={show(payload['method'])}")
    signature = payload.get("signature_name", "serving_default")
    if not isinstance(signature, str) or signature not in card["signatures"]:
        raise unknown_signature(card, signature)
    return signature





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
    for name in names[1:]:  # every signature takes images first
        value = inputs.get(name, defaults.get(name))
        if name == "baseline" and isinstance(value, list) and nested_shape(value) == list(shape):
            value = [value] * batch  # one baseline image for every image
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
            f"Received: unknown {show(unknown)}, missing {missing}"
        )


def _check_batch(values, limits, shape, where):
    """The batch size cap, and the commonest mistake: one image without its batch dimension."""
    dims = nested_shape(values)
    if dims == list(shape):
        raise bad_request(
            f"{where} must be a list of images; this is one image without the batch "
            f"dimension (send [image]). Received: a nested list of shape {dims}"
        )
    check_batch_size(len(values), limits)


