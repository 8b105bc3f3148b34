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

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_robust.serving.data_plane import InferenceRequest
from keras_robust.serving.errors import bad_request, show, unknown_signature
from keras_robust.serving.grpc_server import answer
from keras_robust.serving.inputs import REQUIRED, tensor_columns
from keras_robust.serving.registry import METHOD_NAME

INPUT_DTYPES = {
    "images": (types_pb2.DT_FLOAT,),
    "targets": (types_pb2.DT_INT32, types_pb2.DT_INT64),
    "rho": (types_pb2.DT_FLOAT,),
    "steps": (types_pb2.DT_INT32, types_pb2.DT_INT64),
}


def add_to_server(server, plane):
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(plane), server)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`Predict` and `GetModelMetadata` over a `DataPlane`; Classify, Regress and
    MultiInference stay UNIMPLEMENTED."""

    def __init__(self, plane):
        self._plane = plane

    async def Predict(self, request, context):  # noqa: N802 (the protocol's name)
        return await answer(context, lambda: self._predict(request, context), "Predict")

    async def GetModelMetadata(self, request, context):  # noqa: N802
        return await answer(context, lambda: self._metadata(request), "GetModelMetadata")

    async def _predict(self, request, context):
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

        return await self._plane.infer(backend, decode, encode, context.time_remaining())

    async def _metadata(self, request):
        if list(request.metadata_field) != ["signature_def"]:
            raise bad_request(
                "metadata_field must be ['signature_def'], as in TF Serving. "
                f"Received: {list(request.metadata_field)}"
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
                              f"Received: version_label={spec.version_label!r}")
        return served.backend(str(spec.version.value) if spec.HasField("version") else None)


def _columns(tensors, signature, card, limits):
    """The request's `TensorProto`s as the data plane's input columns."""
    names = card["signatures"][signature]["inputs"]
    unknown = sorted(set(tensors) - set(names))
    missing = [n for n in REQUIRED if n in names and n not in tensors]
    if unknown or missing:
        raise bad_request(f"The signature's inputs are {', '.join(names)}. Received: unknown {unknown}, "
                          f"missing {missing}")
    arrays = {name: _array(name, tensors[name]) for name in names if name in tensors}
    return tensor_columns(arrays, {}, names, card, limits)


def _array(name, proto):
    if proto.dtype not in INPUT_DTYPES[name]:
        wanted = " or ".join(types_pb2.DataType.Name(d) for d in INPUT_DTYPES[name])
        raise bad_request(f"inputs[{name!r}]: dtype must be {wanted}. "
                          f"Received: {types_pb2.DataType.Name(proto.dtype)}")
    try:
        return np.asarray(tf.make_ndarray(proto))
    except (ValueError, TypeError) as error:
        raise bad_request(f"inputs[{name!r}] is not a readable tensor. Received: {show(str(error))}") from None


def _output_names(output_filter, names):
    unknown = sorted(set(output_filter) - set(names))
    if unknown:
        raise bad_request(f"output_filter names outputs of {', '.join(names)}. Received: unknown {unknown}")
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
