"""The Open Inference Protocol (V2: KServe, Triton, MLServer) request and response formats.

A request is `{"id"?, "model_name"?, "model_version"?, "inputs": [tensor, ...],
"outputs"?: [...], "parameters"?: {...}}` (KServe's client sends `id` and
`model_name`, which must name the model of the URL); a tensor is `{"name", "shape", "datatype", "data"}`
with `data` in row-major order (flat or nested), or, with the binary tensor
data extension, `"parameters": {"binary_data_size": n}` and its bytes after
the JSON header, whose length the `Inference-Header-Content-Length` header
gives. Tensors become the same `(where, value)` columns as TF Serving's
formats (`serving.plane.inputs.tensor_columns`), so every value passes the same
checks with the same messages.

Explanations take `images` and `targets`, and `rho` and `steps` either as
tensors (one entry per image, or one for all) or as request parameters (one
value for all); whatever is left out comes from the model card.
"""

import numpy as np

from keras_robust.serving.open_inference.wire import (
    HEADER_LENGTH,
    INPUT_DATATYPES,
    NUMPY_DATATYPES,
    PROTOCOL_PARAMETERS,
    REQUEST_KEYS,
    SIGNATURE_DATATYPES,
    TENSOR_KEYS,
)
from keras_robust.export.card import ATTRIBUTION_INPUTS, EXPLAIN_INPUTS
from keras_robust.serving.plane.data_plane import InferenceRequest
from keras_robust.serving.plane.errors import bad_request, show
from keras_robust.serving.plane.inputs import REQUIRED, check_tensor_size, parse_decimal, tensor_columns
from keras_robust.serving.transport.http_io import encode_json, parse_json


def parse_infer_request(body, header_length, card, limits, signature, model_name):
    """Parses and validates an `/infer` (or `/explain`) request body.

    Args:
        body: The raw request body (bytes).
        header_length: The `Inference-Header-Content-Length` header, or None
            when the body is JSON alone.
        card: The model card of the version that answers.
        limits: The server's `Limits`.
        signature: `"serving_default"` or `"explain"`.
        model_name: The model's name in the URL, which the body's
            `model_name` must repeat if it has one.

    Returns:
        An `InferenceRequest` whose `wire` is `(in_binary, request_id)`: the
        names of the outputs to answer in binary, and the request's `id` or
        None.
    """
    header, binary = _split(body, header_length)
    payload = parse_json(header)
    unknown = sorted(set(payload) - set(REQUEST_KEYS))
    if unknown:
        raise bad_request(f"An inference request has the keys {', '.join(REQUEST_KEYS)}. Received: unknown keys {show(unknown)}")
    _check_model(payload, model_name, card["version"])
    names = card["signatures"][signature]["inputs"]
    parameters = _parameters(payload.get("parameters", {}), signature)
    columns = tensor_columns(_tensors(payload.get("inputs"), names, binary, limits), parameters, signature, card,
                             limits)
    outputs = _requested_outputs(payload.get("outputs"), card["signatures"][signature]["outputs"],
                                 parameters.get("binary_data_output", False))
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request(f"A request's id is a string. Received: id={show(request_id)}")
    in_binary = frozenset(name for name, as_binary in outputs if as_binary)
    return InferenceRequest(signature, columns, tuple(name for name, _ in outputs), (in_binary, request_id))


def encode_infer_response(model_name, response):
    """The body answering `response` as the model `model_name` (the name in the URL),
    and the JSON header's length when any output is binary (else None)."""
    in_binary, request_id = response.wire
    tensors, chunks = [], []
    for name, value in response.outputs.items():
        value = np.ascontiguousarray(value)
        tensor = {"name": name, "datatype": NUMPY_DATATYPES[value.dtype], "shape": list(value.shape)}
        if name in in_binary:
            data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = value.reshape(-1).tolist()
        tensors.append(tensor)
    answer = {"model_name": model_name, "model_version": str(response.version), "outputs": tensors}
    if request_id is not None:
        answer["id"] = request_id
    header = encode_json(answer)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def model_metadata(name, versions, platform, signature_def, spec):
    """V2 model metadata: `{name, versions, platform, inputs, outputs}`.

    Args:
        name: The name clients use in URLs.
        versions: The loaded versions.
        platform: The backend's platform name.
        signature_def: The backend's `{"inputs"|"outputs": {name: (dtype, shape)}}`.
        spec: The card's `{"inputs": [...], "outputs": [...]}`, for the order.
    """
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": [_tensor_metadata(n, *signature_def["inputs"][n]) for n in spec["inputs"]],
        "outputs": [_tensor_metadata(n, *signature_def["outputs"][n]) for n in spec["outputs"]],
    }


def _tensor_metadata(name, dtype, shape):
    return {"name": name, "datatype": SIGNATURE_DATATYPES[dtype], "shape": list(shape)}


def _split(body, header_length):
    """`(JSON header, binary part)` of a body."""
    if header_length is None:
        return body, b""
    length = parse_decimal(header_length)
    if length is None or length > len(body):
        raise bad_request(
            f"{HEADER_LENGTH} is the JSON header's length in bytes (ASCII digits), at most the body's "
            f"{len(body)}. Received: {HEADER_LENGTH}: {show(header_length)}"
        )
    return body[:length], body[length:]


def _check_model(payload, model_name, version):
    """The body's `model_name` and `model_version`, if given, name the model of the URL and
    the version that answers: a request meant for another model is refused, not answered."""
    for key, expected in (("model_name", model_name), ("model_version", str(version))):
        given = payload.get(key, expected)
        if not isinstance(given, str):
            raise bad_request(f"A request's {key} is a string. Received: {key}={show(given)}")
        if given != expected:
            where = "the model in the URL" if key == "model_name" else "the version that answers (the URL's)"
            raise bad_request(
                f"The request's {key} must match {where}, {expected!r}. Received: {key}={show(given)}"
            )


def check_parameter_names(names, signature, transport_parameters=()):
    """Refuses request parameters that `signature`'s endpoint does not take (REST and gRPC alike)."""
    settings = {"explain": EXPLAIN_INPUTS, **ATTRIBUTION_INPUTS}.get(signature, ())[len(REQUIRED):]
    known = PROTOCOL_PARAMETERS + tuple(transport_parameters) + tuple(settings)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise bad_request(
            f"This endpoint takes the request parameters {', '.join(known)}. Received: unknown {show(unknown)}"
            + (" (rho and steps are for explanations)" if set(unknown) & set(EXPLAIN_INPUTS[len(REQUIRED):])
               and signature == "serving_default" else "")
        )


def _parameters(parameters, signature):
    if not isinstance(parameters, dict):
        raise bad_request(f"A request's parameters are an object. Received: parameters={show(parameters)}")
    check_parameter_names(parameters, signature)
    if not isinstance(parameters.get("binary_data_output", False), bool):
        raise bad_request(
            "binary_data_output is true or false. "
            f"Received: binary_data_output={show(parameters['binary_data_output'])}"
        )
    return parameters


def _tensors(inputs, names, binary, limits):
    """`{name: np.ndarray}` of the request's input tensors, JSON or binary."""
    if not isinstance(inputs, list) or not inputs:
        raise bad_request(f"'inputs' must be a non-empty list of tensors. Received: {show(inputs)}")
    arrays, offset, binary = {}, 0, memoryview(binary)
    for i, tensor in enumerate(inputs):
        name, array, size = _tensor(i, tensor, names, binary[offset:], limits)
        if name in arrays:
            raise bad_request(f"inputs[{i}]: each input is sent once. Received: a second {name!r}")
        arrays[name], offset = array, offset + size
    if offset != len(binary):
        raise bad_request(
            f"The binary part of the body holds the inputs' binary_data_size bytes, {offset}. "
            f"Received: {len(binary)} bytes after the JSON header"
        )
    missing = [n for n in REQUIRED if n in names and n not in arrays]
    if missing:
        raise bad_request(f"This endpoint's inputs are {', '.join(names)}. Received: no {', '.join(missing)}")
    return arrays


def _tensor(i, tensor, names, binary, limits):
    """`(name, array, binary bytes used)` of `inputs[i]`."""
    where = f"inputs[{i}]"
    if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= set(tensor) or set(tensor) - set(TENSOR_KEYS):
        raise bad_request(
            f"{where}: a tensor is {{name, shape, datatype, data}}. Received: {show(tensor)}"
        )
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if not isinstance(name, str) or name not in names:
        raise bad_request(f"{where}: this endpoint's inputs are {', '.join(names)}. Received: name={show(name)}")
    where = f"inputs[{i}] ({name})"
    types = INPUT_DATATYPES[name]
    if not isinstance(datatype, str) or datatype not in types:
        raise bad_request(f"{where}: datatype must be {' or '.join(types)}. Received: datatype={show(datatype)}")
    dtype = np.dtype(types[datatype])
    count = check_tensor_size(where, shape, datatype, dtype.itemsize, limits)
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise bad_request(f"{where}: a tensor's parameters are an object. Received: {show(parameters)}")
    size = parameters.get("binary_data_size")
    if size is not None and "data" in tensor:
        raise bad_request(f"{where}: a tensor's values come once, as JSON data or binary_data_size bytes after "
                          "the header, not both. Received: both")
    if size is not None:
        exact = isinstance(size, int) and not isinstance(size, bool)
        if not exact or size != count * dtype.itemsize or size > len(binary):
            raise bad_request(
                f"{where}: binary_data_size must be {count * dtype.itemsize} ({count} {datatype} values), "
                f"within the body's binary part ({len(binary)} bytes left). Received: binary_data_size={show(size)}"
            )
        return name, np.frombuffer(binary[:size], dtype.newbyteorder("<")).astype(dtype).reshape(shape), size
    return name, _json_data(where, tensor.get("data"), datatype, dtype, shape, count), 0


def _json_data(where, data, datatype, dtype, shape, count):
    """The array of a tensor's JSON `data`; integers must fit `datatype` (2**32 + 3 is no INT32,
    rather than wrapping around to 3)."""
    if dtype.kind == "f":
        kinds, wanted = "iuf", "data is a list of numbers, flat or nested"
    else:
        info = np.iinfo(dtype)
        kinds = "iu"
        wanted = f"data is a list of integers, flat or nested, each in [{info.min}, {info.max}] for {datatype}"
    if not isinstance(data, list):
        raise bad_request(f"{where}: {wanted}. Received: data={show(data)}")
    try:
        array = np.asarray(data)
    except ValueError:
        raise bad_request(f"{where}: {wanted}. Received: a ragged list") from None
    # Integers beyond 64 bits make an object array, refused here with the other non-numbers.
    fits = array.dtype.kind in kinds and (
        dtype.kind == "f" or not array.size or info.min <= array.min() and array.max() <= info.max
    )
    if not fits:
        raise bad_request(f"{where}: {wanted}. Received: data={show(data)}")
    if array.size != count:
        raise bad_request(f"{where}: data must hold {count} values for shape {shape}. Received: {array.size}")
    return array.astype(dtype).reshape(shape)


def _requested_outputs(outputs, names, binary_default):
    """`[(name, binary)]`: the outputs asked for (all by default), each JSON or binary."""
    if outputs is None:
        return [(name, binary_default) for name in names]
    if not isinstance(outputs, list) or not outputs:
        raise bad_request(f"'outputs' is a non-empty list of {{name, parameters}}. Received: {show(outputs)}")
    requested = []
    for i, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if name not in names:
            raise bad_request(
                f"outputs[{i}]: this endpoint's outputs are {', '.join(names)}. Received: {show(output)}"
            )
        parameters = output.get("parameters", {})
        binary = parameters.get("binary_data", binary_default) if isinstance(parameters, dict) else None
        if not isinstance(binary, bool):
            raise bad_request(f"outputs[{i}]: binary_data is true or false. Received: {show(binary)}")
        requested.append((name, binary))
    return requested
