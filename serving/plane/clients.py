"""Who sent a request, for fair admission (`admission.Gate`): the connection's peer address by
default, or a header that a trusted proxy in front of the server sets (`--client-header`).

The header is trusted only when named: a client talking to the server
directly could otherwise claim a new identity with every request. Behind a
proxy every request comes from the proxy's address, so there the proxy's
header (e.g. `X-Forwarded-For`, whose first entry is the original client)
is the one to name.
"""

# A header value longer than this is cut: it is only a key.
MAX_CLIENT_CHARS = 100


def http_client(request, header=None):
    """The client of a Starlette `request`: `header`'s first entry, else the peer's host."""
    if header:
        value = request.headers.get(header)
        if value:
            return _first_entry(value)
    return request.client.host if request.client else "unknown"


def grpc_client(context, header=None):
    """The client of a gRPC call: `header`'s first entry in its metadata, else the peer's host."""
    if header:
        for key, value in context.invocation_metadata() or ():
            if key == header.lower() and value:
                return _first_entry(value)
    peer = context.peer() or "unknown"  # "ipv4:127.0.0.1:50000", "ipv6:[::1]:50000", "unix:..."
    kind, _, address = peer.partition(":")
    return address.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else peer


def _first_entry(value):
    return value.split(",")[0].strip()[:MAX_CLIENT_CHARS]
