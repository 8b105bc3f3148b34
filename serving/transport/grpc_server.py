"""The gRPC server: every gRPC protocol's service on one port, in the app's event loop.

Each service (`tf_serving.grpc_service`: TF Serving's; `open_inference.grpc_service`: V2's) is a
translator module with `add_to_server(server, plane)`, imported only when a
gRPC port is asked for (TF Serving's service imports TensorFlow). Its RPCs are
`unary_handler`s, which parse their requests and answer through `answer`, so
a `ServingError` becomes the status code TF Serving would send
(`serving.plane.errors.GRPC_STATUS`) and a bug a logged INTERNAL.
"""

import logging

import grpc
from google.protobuf.message import DecodeError

from keras_robust.serving.plane.clients import grpc_client
from keras_robust.serving.plane.errors import ServingError
from keras_robust.serving.transport.ports import port_in_use

logger = logging.getLogger("keras_robust.serving")


async def start_grpc_server(port, host, plane):
    """Starts TF Serving's and V2's services on `host:port` (0: any free port) in this event loop.

    Args:
        port: The port (TF Serving's gRPC port is 8500).
        host: The interface.
        plane: The `DataPlane` the HTTP routes share; its request size cap
            becomes gRPC's.

    Returns:
        `(grpc.aio.Server, bound port)`.
    """
    # gRPC's default SO_REUSEPORT would let a second server share a port in use
    # and take about half of its new connections.
    options = [("grpc.max_receive_message_length", plane.limits.max_request_bytes), ("grpc.so_reuseport", 0)]
    # Calls past what the gate could hold are refused (RESOURCE_EXHAUSTED) before their messages are
    # read, so a burst of large messages cannot pile up in gRPC's buffers.
    capacity = plane.limits.max_concurrent + plane.limits.max_queue
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=capacity)
    # Imported here, not with this module: TF Serving's service imports TensorFlow, which a server
    # without gRPC never loads, and both services import this module's handlers.
    from keras_robust.serving.open_inference import grpc_service as open_inference_grpc
    from keras_robust.serving.tf_serving import grpc_service as tf_serving_grpc

    for service in (tf_serving_grpc, open_inference_grpc):
        service.add_to_server(server, plane)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise port_in_use(host, port, "grpc_port") from error
    await server.start()
    return server, bound


def unary_handler(call, request_class, response_class, method, plane):
    """A unary RPC handler of `call(request, context)` over `plane` (a `DataPlane`) that counts the
    message's bytes in flight with the HTTP bodies' (`max_inflight_bytes`, `max_client_inflight_bytes`)
    until it is answered, and parses the request itself, so that bytes that are no `request_class`
    message answer INVALID_ARGUMENT naming the decode error (gRPC's own parsing would answer UNKNOWN).
    Errors become status codes as in `answer`."""

    async def handler(raw, context):
        async def parsed_call():
            client = grpc_client(context, plane.client_header)
            with plane.inflight.counter(f"a gRPC {method} message", client) as count:
                count(len(raw))
                try:
                    request = request_class.FromString(raw)
                except DecodeError as error:
                    raise ServingError(400, f"The request is not a valid {request_class.DESCRIPTOR.full_name} "
                                            f"message ({error}). Received: {len(raw)} bytes") from None
                return await call(request, context)

        return await answer(context, parsed_call, method)

    return grpc.unary_unary_rpc_method_handler(handler, response_serializer=response_class.SerializeToString)


async def answer(context, call, method):
    """`await call()`, or the call aborted with the status code of its error.

    `method` names the RPC in the log of an unexpected error.
    """
    try:
        return await call()
    except ServingError as error:
        await context.abort(grpc.StatusCode[error.grpc_status], error.message)
    except Exception:
        logger.exception("Unexpected error answering a gRPC %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "Internal server error (logged)")

