"""TF Serving's gRPC `PredictionService` (`Predict`, `GetModelMetadata`) over the same backends.

A client written for TF Serving (`tensorflow_serving.apis.prediction_service_pb2_grpc.
PredictionServiceStub`) works against this server unchanged: `Predict` with
`model_spec.signature_name` `serving_default` (or empty) or `explain`, inputs
as `TensorProto`s, optional `output_filter`. Requests go through the HTTP
server's path (the same checks, gate, batching and deadline), and errors
carry TF Serving's status codes: INVALID_ARGUMENT for bad input, NOT_FOUND
for an unknown model or version, UNAVAILABLE when busy, DEADLINE_EXCEEDED.

Imports TensorFlow (its protos and `make_ndarray`), so it is loaded only when
a gRPC port is asked for.
"""

import asyncio
import logging
import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_robust.serving.open_inference import tensor_columns
from keras_robust.serving.registry import METHOD_NAME
from keras_robust.serving.rest_requests import REQUIRED, ServingError, bad_request, check_work, convert_columns, show

logger = logging.getLogger("keras_robust.serving")

INPUT_DTYPES = {
    "images": (types_pb2.DT_FLOAT,),
    "targets": (types_pb2.DT_INT32, types_pb2.DT_INT64),
    "rho": (types_pb2.DT_FLOAT,),
    "steps": (types_pb2.DT_INT32, types_pb2.DT_INT64),
}
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


async def start_grpc_server(port, host, models, infer, limits):
    """Starts the `PredictionService` on `host:port` (0: any free port) in this event loop.

    Args:
        port: The port (TF Serving's gRPC port is 8500).
        host: The interface.
        models: `{name: ServedModel}`.
        infer: `create_app`'s `infer(backend, parse, encode, deadline)`.
        limits: The server's `Limits` (its request size cap becomes gRPC's).

    Returns:
        `(grpc.aio.Server, bound port)`.
    """
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limits.max_request_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(models, infer, limits), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`Predict` and `GetModelMetadata`; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

    def __init__(self, models, infer, limits):
        self._models = models
        self._infer = infer
        self._limits = limits

    async def Predict(self, request, context):  # noqa: N802 (the protocol's name)
        try:
            backend = self._backend(request.model_spec)
            signature = request.model_spec.signature_name or "serving_default"
            if signature not in backend.card["signatures"]:
                raise bad_request(
                    f"Model {backend.card['name']!r} has the signatures {', '.join(backend.card['signatures'])}. "
                    f"Received: signature_name={signature!r}"
                )
            names = _output_names(request.output_filter, backend.card["signatures"][signature]["outputs"])
            remaining = context.time_remaining()
            timeout = min(self._limits.timeout_s, math.inf if remaining is None else remaining)
            deadline = asyncio.get_running_loop().time() + timeout

            def parse():
                return signature, _inputs(request.inputs, signature, backend.card, self._limits), names

            def encode(_, outputs, names):
                response = predict_pb2.PredictResponse()
                _fill_spec(response.model_spec, backend.card, signature)
                for name in names:
                    response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
                return response

            return await self._infer(backend, parse, encode, deadline)
        except ServingError as error:
            await context.abort(STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL), error.message)
        except Exception:
            logger.exception("Unexpected error answering a gRPC Predict")
            await context.abort(grpc.StatusCode.INTERNAL, "Internal server error (logged)")

    async def GetModelMetadata(self, request, context):  # noqa: N802
        try:
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
        except ServingError as error:
            await context.abort(STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL), error.message)

    def _backend(self, spec):
        if spec.name not in self._models:
            raise ServingError(404, f"No model {spec.name[:80]!r} is served; served: {', '.join(self._models)}. "
                                    f"Received: model_spec.name={spec.name[:80]!r}")
        if spec.version_label:
            raise bad_request(f"Version labels are not supported; give model_spec.version. "
                              f"Received: version_label={spec.version_label!r}")
        version = str(spec.version.value) if spec.HasField("version") else None
        return self._models[spec.name].backend(version)


def _inputs(tensors, signature, card, limits):
    """The request's `TensorProto`s, checked as every other protocol's inputs are."""
    names = card["signatures"][signature]["inputs"]
    unknown = sorted(set(tensors) - set(names))
    missing = [n for n in REQUIRED if n in names and n not in tensors]
    if unknown or missing:
        raise bad_request(f"The signature's inputs are {', '.join(names)}. Received: unknown {unknown}, "
                          f"missing {missing}")
    arrays = {name: _array(name, tensors[name]) for name in names if name in tensors}
    inputs = convert_columns(tensor_columns(arrays, {}, names, card, limits), card, limits)
    if "steps" in inputs:
        check_work(inputs["steps"], limits)
    return inputs


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
    return [n for n in names if n in output_filter] if output_filter else list(names)


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
