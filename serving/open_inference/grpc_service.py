"""The Open Inference Protocol (V2) over gRPC: KServe's and Triton's `inference.GRPCInferenceService`.

Served beside TF Serving's `PredictionService` on the same port, it
answers what V2 over HTTP answers (`serving.open_inference.rest_routes`), so V2 gRPC clients
(`tritonclient.grpc`, KServe's SDK, perf_analyzer) work unchanged:
`ServerLive`, `ServerReady`, `ModelReady`, `ServerMetadata`,
`ModelMetadata`, `ModelInfer`, and Triton's `ModelConfig`,
`ModelStatistics` and `RepositoryIndex` (`serving.open_inference.triton`).
Streaming, loading and unloading models, shared memory, tracing and logging
answer UNIMPLEMENTED.

`ModelInfer` takes its inputs as `raw_input_contents` (one little-endian
buffer per input) or typed `contents`, and answers `raw_output_contents`,
as Triton does. Explanations are the model `<name>-explainer`, with
`targets` and optional `rho` and `steps` as tensors or request parameters.
Requests go through the data plane every protocol shares (the same checks,
gate, batching and deadline: `timeout_s` or the client's shorter one), and
errors carry the status codes of `serving.plane.errors.GRPC_STATUS`.

The messages are built at import from `protos/inference.pb`, Triton's
`.proto` files compiled, in a descriptor pool of this module's own
(`protos/README.md` says why and how it was made).
"""

import os

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from keras_robust import __version__
from keras_robust.serving.open_inference import triton
from keras_robust.serving.open_inference.formats import check_parameter_names, model_metadata
from keras_robust.serving.open_inference.names import v2_model
from keras_robust.serving.open_inference.wire import (
    CONTENTS,
    GRPC_PARAMETERS,
    INPUT_DATATYPES,
    NUMPY_DATATYPES,
    PLATFORMS,
    V2_EXTENSIONS,
)
from keras_robust.serving.plane.clients import grpc_client
from keras_robust.serving.plane.data_plane import InferenceRequest
from keras_robust.serving.plane.errors import ServingError, bad_request, show
from keras_robust.serving.plane.inputs import REQUIRED, check_tensor_size, tensor_columns
from keras_robust.serving.transport.grpc_server import unary_handler

SERVICE = "inference.GRPCInferenceService"
DESCRIPTORS = os.path.join(os.path.dirname(__file__), "protos", "inference.pb")


def _service_descriptor():
    with open(DESCRIPTORS, "rb") as file:
        files = descriptor_pb2.FileDescriptorSet.FromString(file.read()).file
    pool = descriptor_pool.DescriptorPool()
    for proto in files:  # dependencies first, as protoc wrote them
        pool.Add(proto)
    return pool.FindServiceByName(SERVICE)


_DESCRIPTOR = _service_descriptor()


def message(name):
    """The class of the message `inference.<name>`."""
    return message_factory.GetMessageClass(_DESCRIPTOR.file.pool.FindMessageTypeByName(f"inference.{name}"))


def add_to_server(server, plane):
    service = InferenceService(plane)
    handlers = {}
    for name in InferenceService.RPCS:
        method = _DESCRIPTOR.methods_by_name[name]
        handlers[name] = unary_handler(getattr(service, name), message_factory.GetMessageClass(method.input_type),
                                       message_factory.GetMessageClass(method.output_type), name, plane)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class InferenceService:
    """The RPCs of `RPCS` over a `DataPlane`, each `async (request, context) -> response`."""

    RPCS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
            "ModelConfig", "ModelStatistics", "RepositoryIndex")

    def __init__(self, plane):
        self._plane = plane

    async def ServerLive(self, request, context):  # noqa: N802 (the protocol's names)
        return message("ServerLiveResponse")(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        return message("ServerReadyResponse")(ready=any(served.backends for served in self._plane.models.values()))

    async def ModelReady(self, request, context):  # noqa: N802
        # A readiness probe asks a yes-or-no question: an unknown or failed version is "no", as in Triton.
        try:
            self._backend(request.name, request.version)
        except ServingError:
            return message("ModelReadyResponse")(ready=False)
        return message("ModelReadyResponse")(ready=True)

    async def ServerMetadata(self, request, context):  # noqa: N802
        return message("ServerMetadataResponse")(name="keras-robust", version=__version__, extensions=V2_EXTENSIONS)

    async def ModelMetadata(self, request, context):  # noqa: N802
        served, signature, backend = self._backend(request.name, request.version)
        metadata = model_metadata(
            request.name, sorted(served.backends), PLATFORMS[backend.kind], backend.signature_defs()[signature],
            backend.card["signatures"][signature],
        )
        return json_format.ParseDict(metadata, message("ModelMetadataResponse")())

    async def ModelConfig(self, request, context):  # noqa: N802
        config = triton.model_config(self._plane, request.name, request.version or None,
                                                _received(request.name))
        return json_format.ParseDict({"config": config}, message("ModelConfigResponse")())

    async def ModelStatistics(self, request, context):  # noqa: N802
        statistics = triton.model_statistics(self._plane, request.name, request.version or None,
                                                        _received(request.name))
        return json_format.ParseDict(statistics, message("ModelStatisticsResponse")())

    async def RepositoryIndex(self, request, context):  # noqa: N802
        if request.repository_name:
            raise bad_request("This server has one repository, named ''. "
                              f"Received: repository_name={show(request.repository_name)}")
        index = triton.repository_index(self._plane, request.ready)
        return json_format.ParseDict({"models": index}, message("RepositoryIndexResponse")())

    async def ModelInfer(self, request, context):  # noqa: N802
        served, signature, backend = self._backend(request.model_name, request.model_version, "model_name")
        card = backend.card
        spec = card["signatures"][signature]
        names = _output_names(request.outputs, spec["outputs"])
        parameters = _parameters(request.parameters, signature)

        def decode():
            arrays = _arrays(request, spec["inputs"], self._plane.limits)
            return InferenceRequest(signature, tensor_columns(arrays, parameters, signature, card,
                                                              self._plane.limits), names)

        def encode(response):
            reply = message("ModelInferResponse")(
                model_name=request.model_name, model_version=str(response.version), id=request.id
            )
            for name, value in response.outputs.items():
                value = np.ascontiguousarray(value)
                reply.outputs.add(name=name, datatype=NUMPY_DATATYPES[value.dtype], shape=value.shape)
                reply.raw_output_contents.append(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
            return reply

        return await self._plane.infer(backend, decode, encode, context.time_remaining(),
                                       grpc_client(context, self._plane.client_header))

    def _backend(self, name, version, field="name"):
        """`(served model, signature, backend)` of a V2 model name and version ("" for the latest)."""
        served, signature = v2_model(self._plane, name, _received(name, field))
        return served, signature, served.backend(version or None)


def _received(name, field="name"):
    return f"{field}={name[:80]!r}"


def _parameters(parameters, signature):
    """The request's parameters as Python values, refusing any this model does not take."""
    check_parameter_names(parameters, signature, GRPC_PARAMETERS)
    values = {name: value.WhichOneof("parameter_choice") for name, value in parameters.items()}
    empty = sorted(name for name, choice in values.items() if choice is None)
    if empty:
        raise bad_request(f"A request parameter holds a value. Received: no value for {show(empty)}")
    return {name: getattr(parameters[name], choice) for name, choice in values.items()}


def _arrays(request, names, limits):
    """`{name: np.ndarray}` of the request's input tensors, from `raw_input_contents` or typed `contents`."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad_request(f"raw_input_contents holds one buffer per input, {len(request.inputs)}. "
                          f"Received: {len(raw)} buffers")
    arrays = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name not in names:
            raise bad_request(f"inputs[{i}]: this model's inputs are {', '.join(names)}. "
                              f"Received: name={show(tensor.name)}")
        if tensor.name in arrays:
            raise bad_request(f"inputs[{i}]: each input is sent once. Received: a second {tensor.name!r}")
        arrays[tensor.name] = _array(f"inputs[{i}] ({tensor.name})", tensor, raw[i] if raw else None, limits)
    missing = [n for n in REQUIRED if n in names and n not in arrays]
    if missing:
        raise bad_request(f"This model's inputs are {', '.join(names)}. Received: no {', '.join(missing)}")
    return arrays


def _array(where, tensor, raw, limits):
    """One input tensor as an array; `raw` is its `raw_input_contents` buffer, or None.

    Its declared size is checked first, and the values given must be exactly
    the shape's, so nothing is allocated beyond what the request holds.
    """
    types = INPUT_DATATYPES[tensor.name]
    if tensor.datatype not in types:
        raise bad_request(f"{where}: datatype must be {' or '.join(types)}. Received: datatype={show(tensor.datatype)}")
    _check_parameters(where, tensor.parameters, raw)
    dtype = np.dtype(types[tensor.datatype])
    count = check_tensor_size(where, list(tensor.shape), tensor.datatype, dtype.itemsize, limits)
    contents = getattr(tensor.contents, CONTENTS[tensor.datatype])
    if raw is None:
        if len(contents) != count:
            raise bad_request(f"{where}: contents.{CONTENTS[tensor.datatype]} must hold {count} values for shape "
                              f"{list(tensor.shape)}. Received: {len(contents)}")
        return np.asarray(contents, dtype).reshape(tensor.shape)
    if tensor.HasField("contents"):
        raise bad_request(f"{where}: give raw_input_contents or contents, not both. Received: both")
    if len(raw) != count * dtype.itemsize:
        raise bad_request(f"{where}: its raw_input_contents buffer holds {count * dtype.itemsize} bytes "
                          f"({count} {tensor.datatype} values for shape {list(tensor.shape)}). Received: {len(raw)}")
    return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(tensor.shape)


def _check_parameters(where, parameters, raw):
    """A tensor takes one parameter, `binary_data_size`, which must be its raw buffer's length.

    KServe's SDK carries it over from V2 HTTP's binary extension; shared
    memory's parameters are not served.
    """
    if set(parameters) - {"binary_data_size"}:
        raise bad_request(f"{where}: a tensor takes no parameter but binary_data_size (no shared memory). "
                          f"Received: {show(sorted(parameters))}")
    if "binary_data_size" not in parameters:
        return
    parameter = parameters["binary_data_size"]
    size = getattr(parameter, parameter.WhichOneof("parameter_choice") or "int64_param")
    if raw is None or isinstance(size, (bool, str, float)) or size != len(raw):
        raise bad_request(f"{where}: binary_data_size must be the length of its raw_input_contents buffer "
                          f"({'none' if raw is None else len(raw)}). Received: binary_data_size={show(size)}")


def _output_names(outputs, names):
    """The outputs to answer, in the order asked (all, in the signature's order, by default)."""
    for i, output in enumerate(outputs):
        if output.name not in names:
            raise bad_request(f"outputs[{i}]: this model's outputs are {', '.join(names)}. "
                              f"Received: name={show(output.name)}")
        if set(output.parameters) - {"binary_data"}:  # gRPC answers are binary anyway
            raise bad_request(f"outputs[{i}]: an output takes no parameters but binary_data (no classification). "
                              f"Received: {show(sorted(output.parameters))}")
    return tuple(output.name for output in outputs) or tuple(names)
