"""The errors every protocol answers, and the messages more than one protocol writes.

A `ServingError` carries an HTTP status: the HTTP routes answer it as TF
Serving's `{"error": message}`, the gRPC services with the status code
`GRPC_STATUS` gives (TF Serving's). A message names the problem and ends with
`Received: ...`, quoting only a short part of what was received, so an error
answer stays small whatever the request held.
"""

# Error messages quote the request's path up to this many characters, so a huge
# URL cannot make a huge answer.
PATH_ECHO_CHARS = 200
# The gRPC status code of each HTTP status, as TF Serving maps them; any other is INTERNAL.
GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ServingError(Exception):
    """An error answered as TF Serving answers one: HTTP `status`, `{"error": message}`.

    `allow` names the methods the route takes, for a 405's `Allow` header.
    """

    def __init__(self, status, message, allow=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow

    @property
    def grpc_status(self):
        """The name of the `grpc.StatusCode` a gRPC service answers instead."""
        return GRPC_STATUS.get(self.status, "INTERNAL")


def bad_request(message):
    return ServingError(400, message)


def unknown_model(name, models, received):
    """The 404 of a model name not served; `received` says where the name came from."""
    return ServingError(
        404, f"No model {name[:80]!r} is served; served: {', '.join(models)}. Received: {received}"
    )


def unknown_version(name, version, versions):
    """The 404 of a version (a path segment) the model's card does not list."""
    version = version if len(version) <= 40 else version[:40] + "..."
    return ServingError(
        404, f"Model {name!r} has no version {version}; its versions are "
             f"{', '.join(map(str, versions))} (ASCII digits). Received: /versions/{version}"
    )


def unknown_signature(card, signature):
    """The 400 of a signature name the model does not have."""
    return bad_request(
        f"Model {card['name']!r} has the signatures {', '.join(card['signatures'])}. "
        f"Received: signature_name={show(signature)}"
    )


def show(value, limit=80):
    """A short repr: error messages must not echo a whole request."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def received(request):
    """`METHOD path` of an HTTP request for an error message, the path cut to PATH_ECHO_CHARS."""
    path = request.url.path
    if len(path) > PATH_ECHO_CHARS:
        path = path[:PATH_ECHO_CHARS] + f"... ({len(path)} characters)"
    return f"{request.method} {path}"
