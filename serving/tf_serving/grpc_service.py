"""TF Serving's gRPC `PredictionService` (`Predict`, `GetModelMetadata`) over the same backends.

A client written for TF Serving (`tensorflow_serving.apis.prediction_service_pb2_grpc.
PredictionServiceStub`) works against this server unchanged: `Predict` with
`model_spec.signature_name` `serving_default` (or empty) or `explain`, inputs
as `TensorProto`s, optional `output_filter`. Requests go through the data
plane the HTTP routes use (the same checks, gate, batching and deadline), and
errors carry TF Serving's status codes: INVALID_ARGUMENT for bad input,
NOT_FOUND for an unknown model or version, UNAVAILABLE when busy,
DEADLINE_EXCEEDED.

Imports TensorFlow (its protos and `make_ndarray`), so it is loaded only when
a gRPC port is asked for.
"""

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from keras_robust.serving.plane.clients import grpc_client
from keras_robust.serving.plane.data_plane import InferenceRequest
from keras_robust.serving.plane.errors import bad_request, show, unknown_signature
from keras_robust.serving.plane.inputs import REQUIRED, check_tensor_size, tensor_columns
from keras_robust.serving.plane.registry import METHOD_NAME
from keras_robust.serving.transport.grpc_server import unary_handler

INPUT_DTYPES = {
    "images": (types_pb2.DT_FLOAT,),
    "targets": (types_pb2.DT_INT32, types_pb2.DT_INT64),
    "rho": (types_pb2.DT_FLOAT,),
    "steps": (types_pb2.DT_INT32, types_pb2.DT_INT64),
    "samples": (types_pb2.DT_INT32, types_pb2.DT_INT64),
    "noise": (types_pb2.DT_FLOAT,),
    "seed": (types_pb2.DT_INT32, types_pb2.DT_INT64),
    "baseline": (types_pb2.DT_FLOAT,),
}
# Each input dtype's numpy type and the TensorProto field holding its values when
# `tensor_content` (the packed bytes) is empty.
DTYPE_VALUES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
}


SERVICE = "tensorflow.serving.PredictionService"


def add_to_server(server, plane):
    """Serves `Predict` and `GetModelMetadata`; Classify, Regress and MultiInference stay UNIMPLEMENTED."""
    service = PredictionService(plane)
    handlers = {
        "Predict": unary_handler(service.predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse,
                                 "Predict", plane),
        "GetModelMetadata": unary_handler(service.metadata, get_model_metadata_pb2.GetModelMetadataRequest,
                                          get_model_metadata_pb2.GetModelMetadataResponse, "GetModelMetadata",
                                          plane),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class PredictionService:
    """TF Serving's `Predict` and `GetModelMetadata` over a `DataPlane`, each `async (request, context)`."""

    def __init__(self, plane):
        self._plane = plane

    async def predict(self, request, context):
        backend = self._backend(request.model_spec)
        card = backend.card
        signature = request.model_spec.signature_name or "serving_default"
        if signature not in card["signatures"]:
            raise unknown_signature(card, signature)
        names = _output_names(request.output_filter, card["signatures"][signature]["outputs"])

        def decode():
            return InferenceRequest(signature, _columns(request.inputs, signature, card, self._plane.limits), names)

        def encode(response):
            message = predict_pb2.PredictResponse()
            _fill_spec(message.model_spec, card, signature)
            for name, value in response.outputs.items():
                message.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return message

        return await self._plane.infer(backend, decode, encode, context.time_remaining(),
                                       grpc_client(context, self._plane.client_header))

    async def metadata(self, request, context):
        if list(request.metadata_field) != ["signature_def"]:
            raise bad_request(
                "metadata_field must be ['signature_def'], as in TF Serving. "
                f"Received: metadata_field={show(list(request.metadata_field))}"
            )
        backend = self._backend(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, backend.card, "")
        response.metadata["signature_def"].Pack(_signature_def_map(backend))
        return response

    def _backend(self, spec):
        served = self._plane.model(spec.name, f"model_spec.name={spec.name[:80]!r}")
        if spec.version_label:
            raise bad_request(f"Version labels are not supported; give model_spec.version. "
                              f"Received: version_label={show(spec.version_label)}")
        return served.backend(str(spec.version.value) if spec.HasField("version") else None)


def _columns(tensors, signature, card, limits):
    """The request's `TensorProto`s as the data plane's input columns."""
    names = card["signatures"][signature]["inputs"]
    unknown = sorted(set(tensors) - set(names))
    missing = [n for n in REQUIRED if n in names and n not in tensors]
    if unknown or missing:
        raise bad_request(f"The signature's inputs are {', '.join(names)}. Received: unknown {show(unknown)}, "
                          f"missing {missing}")
    arrays = {name: _array(name, tensors[name], limits) for name in names if name in tensors}
    return tensor_columns(arrays, {}, signature, card, limits)


def _array(name, proto, limits):
    """The array of one `TensorProto`, its size checked before anything is allocated.

    TF Serving fills a tensor given fewer values than its shape holds with
    the last one, so 48 bytes could ask for 1.17 GB; here the values given
    must be exactly the shape's.
    """
    where = f"inputs[{name!r}]"
    if proto.dtype not in INPUT_DTYPES[name]:
        wanted = " or ".join(types_pb2.DataType.Name(d) for d in INPUT_DTYPES[name])
        raise bad_request(f"{where}: dtype must be {wanted}. Received: dtype={_dtype_name(proto.dtype)}")
    if proto.tensor_shape.unknown_rank:
        raise bad_request(f"{where}: tensor_shape must give the dims. Received: unknown_rank=true")
    dtype, field = DTYPE_VALUES[proto.dtype]
    itemsize = np.dtype(dtype).itemsize
    shape = [dim.size for dim in proto.tensor_shape.dim]
    count = check_tensor_size(where, shape, _dtype_name(proto.dtype), itemsize, limits)
    if proto.tensor_content:
        given, unit = len(proto.tensor_content), f"tensor_content bytes ({itemsize} per value)"
        expected = count * itemsize
    else:
        given, unit, expected = len(getattr(proto, field)), f"{field} values", count
    if given != expected:
        raise bad_request(
            f"{where}: a tensor of shape {shape} holds {count} values, each given once. Received: {given} {unit}"
        )
    return tf.make_ndarray(proto)


def _dtype_name(number):
    """A `DataType`'s name; protobuf keeps enum numbers it does not know, which have none."""
    try:
        return types_pb2.DataType.Name(number)
    except ValueError:
        return f"an unknown DataType number {number}"


def _output_names(output_filter, names):
    unknown = sorted(set(output_filter) - set(names))
    if unknown:
        raise bad_request(f"output_filter names outputs of {', '.join(names)}. Received: unknown {show(unknown)}")
    return tuple(n for n in names if not output_filter or n in output_filter)


def _fill_spec(spec, card, signature):
    spec.name = card["name"]
    spec.version.value = int(card["version"])
    spec.signature_name = signature


def _signature_def_map(backend):
    defs = backend.signature_defs()
    result = get_model_metadata_pb2.SignatureDefMap()
    for signature, spec in backend.card["signatures"].items():
        signature_def = result.signature_def[signature]
        signature_def.method_name = METHOD_NAME
        for kind in ("inputs", "outputs"):
            for name in spec[kind]:
                dtype, shape = defs[signature][kind][name]
                getattr(signature_def, kind)[name].CopyFrom(meta_graph_pb2.TensorInfo(
                    name=name, dtype=types_pb2.DataType.Value(dtype),
                    tensor_shape=tensor_shape_pb2.TensorShapeProto(
                        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
                    ),
                ))
    return result
