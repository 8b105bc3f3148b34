"""The server's ports: refused by name, before any model loads, when taken or the same twice."""

import socket


def check_ports(host, port, grpc_port=None):
    """Raises `OSError` naming the flag of a port that cannot be bound now, or `ValueError` when HTTP and
    gRPC are asked to share one (port 0 always can be bound: the system picks a free one)."""
    if grpc_port and grpc_port == port:
        raise ValueError(f"HTTP and gRPC need a port each. Received: port={port}, grpc_port={grpc_port}")
    check_port_free(host, port, "port")
    if grpc_port is not None:
        check_port_free(host, grpc_port, "grpc_port")


def check_port_free(host, port, name):
    """Raises `port_in_use` unless `host:port` can be bound now (port 0 always can).

    Checked before the models load, so a taken port is refused at once; the
    server's own bind refuses it too if taken in between.
    """
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise port_in_use(host, port, name) from error


def port_in_use(host, port, name):
    """The error of a port (`name`: the flag, "port" or "grpc_port") that cannot be bound."""
    protocol = "gRPC" if name == "grpc_port" else "HTTP"
    return OSError(f"The {protocol} port {host}:{port} is in use or cannot be bound; stop what holds it or "
                   f"choose another. Received: {name}={port}")
