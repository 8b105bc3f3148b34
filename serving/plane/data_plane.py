"""The data plane: what every protocol's inference request goes through, the same way.

A protocol's module only translates: its wire format into an
`InferenceRequest` (a signature, the inputs as `(where, value)` columns, the
outputs wanted) and an `InferenceResponse` (named numpy outputs) back into
its wire format. `DataPlane.infer` does the rest by one deadline per request:
it admits the request to the `Gate` (503 when full), decodes it and checks
its inputs (`serving.plane.inputs`: the same checks and messages for every
protocol), runs it (predictions and attribution methods in dynamic batches),
and encodes the answer.
Past the deadline a request answers 504 wherever it is, and its run is
cancelled.

Decoding and encoding run in the gate's worker threads: they cost CPU (an
image in JSON is 3,072 numbers to parse), which would stall the event loop
and every other request with it.
"""

import asyncio
import dataclasses

from keras_robust.serving.plane.admission import Gate
from keras_robust.serving.plane.batching import Batcher
from keras_robust.serving.plane.errors import unknown_model
from keras_robust.serving.plane.inflight import InflightBytes
from keras_robust.serving.plane.inputs import check_work, convert_columns
from keras_robust.serving.plane.statistics import Statistics

# Adversarial explanations run request by request, each in its client's turn at the gate (the round robin whose
# fairness docs/serving.md measures); every other signature is batched.
UNBATCHED = ("explain",)


@dataclasses.dataclass(frozen=True)
class InferenceRequest:
    """One inference request, in no protocol's format.

    Attributes:
        signature: `"serving_default"` (predict), `"explain"` or an
            attribution method, one the model has (the translator checks, as
            only it knows where the name came from).
        inputs: `{input name: [(where, value), ...]}`, one pair per example,
            as `serving.plane.inputs.convert_columns` takes them.
        outputs: The output names to answer, in this order; None for all of
            the signature's, in its order.
        wire: What the translator needs back to encode the answer (the
            request's format, id, ...); the data plane passes it on unread.
    """

    signature: str
    inputs: dict
    outputs: tuple = None
    wire: object = None


@dataclasses.dataclass(frozen=True)
class InferenceResponse:
    """One answer, in no protocol's format: `outputs` is `{name: np.ndarray}` in the
    order asked for; `wire` is the request's."""

    model: str
    version: int
    signature: str
    outputs: dict
    wire: object = None


class DataPlane:
    """Checks, admits, batches, runs and encodes the requests of every protocol.

    Args:
        models: `{name: ServedModel}` (`serving.plane.registry.load_models`).
        limits: The server's `Limits`.
        client_header: The header (HTTP) or metadata key (gRPC) naming the
            client, set by a trusted proxy; None: the peer's address
            (`serving.plane.clients`).
    """

    def __init__(self, models, limits, client_header=None):
        _check_default_steps(models, limits)
        self.models = models
        self.limits = limits
        self.client_header = client_header
        # Request bytes received and not yet answered, HTTP bodies and gRPC messages alike.
        self.inflight = InflightBytes(limits)
        self.statistics = Statistics()
        self._gate = Gate(limits)
        self._batcher = Batcher(
            self._gate, limits.batch_window_ms / 1000, limits.max_batch_size, self._gate.timed_out
        )

    def model(self, name, received):
        """The `ServedModel` named `name`; 404 naming `received` (where the name came from) if none is."""
        if name not in self.models:
            raise unknown_model(name, self.models, received)
        return self.models[name]

    async def infer(self, backend, decode, encode, timeout=None, client=None):
        """Answers one request of `client` on `backend` (a `ServedModel.backend`) by one deadline.

        Args:
            backend: The model version that answers.
            decode: `() -> InferenceRequest`, from the wire format.
            encode: `InferenceResponse -> answer`, into the wire format.
            timeout: The client's own time limit in seconds (gRPC's
                deadline), or None; the request gets the shorter of it and
                `timeout_s`.
            client: Who sent it (`serving.plane.clients`): each client has at
                most `max_per_client` requests in the server, and waiting
                work is served round robin across clients.

        Returns:
            What `encode` returns; the request is counted in `statistics`.
        """
        async with self.admission(client, timeout):
            return await self.statistics.count(
                backend, decode, encode, lambda decode, encode: self._infer(backend, decode, encode, timeout, client)
            )

    def admission(self, client, timeout=None):
        """A context holding one of `client`'s `max_per_client` places, waiting up to `timeout_s` (or the
        shorter `timeout`) for one (503 after). `infer` takes one; an HTTP route takes it before reading the
        body as well, so a waiting request's body is not read yet. Nested, the places are one."""
        return self._gate.client_admission(client, self._deadline(timeout))

    def _deadline(self, timeout):
        """The event loop's time by which a request is answered: `timeout_s` from now, or the client's
        shorter `timeout`."""
        timeout = self.limits.timeout_s if timeout is None else min(self.limits.timeout_s, timeout)
        return asyncio.get_running_loop().time() + timeout

    async def _infer(self, backend, decode, encode, timeout, client):
        deadline = self._deadline(timeout)
        card = backend.card
        request, inputs = await self._gate.run(
            lambda cancellation: self._check(card, decode(), cancellation), deadline, client
        )
        heavy = request.signature != "serving_default"
        if request.signature in UNBATCHED:
            outputs = await self._gate.run(
                lambda cancellation: backend.run(request.signature, inputs, run_options=cancellation.run_options),
                deadline, client, heavy=heavy,
            )
        else:
            outputs = await self._batcher.run(backend, request.signature, inputs, deadline, client, heavy=heavy)
        names = request.outputs or card["signatures"][request.signature]["outputs"]
        response = InferenceResponse(
            card["name"], card["version"], request.signature, {name: outputs[name] for name in names}, request.wire
        )
        return await self._gate.run(lambda _: encode(response), deadline, client)

    def _check(self, card, request, cancellation):
        """`(request, {input name: np.ndarray})`: the request's inputs, checked and converted, stopping
        between values once the request is past its deadline."""
        inputs = convert_columns(request.inputs, card, self.limits, cancellation.stop_if_cancelled)
        check_work(request.signature, inputs, self.limits)
        return request, inputs

    def close(self):
        self._gate.close()


def _check_default_steps(models, limits):
    """A request that leaves out steps must not be refused by the step cap."""
    for served in models.values():
        for backend in served.backends.values():
            steps = backend.card["explain_defaults"]["steps"]
            for name in ("max_steps", "max_image_steps"):
                if steps > getattr(limits, name):
                    raise ValueError(
                        f"Version {backend.card['version']} of {served.name!r} explains with {steps} "
                        f"steps by default, above {name}. Received: {name}={getattr(limits, name)}"
                    )
