"""The gRPC server's start-up: a port another server holds is refused, not shared."""

import asyncio
import socket
import types

import pytest

from keras_robust.cli import main
from keras_robust.serving import Limits, serve
from keras_robust.serving.transport.grpc_server import start_grpc_server


@pytest.fixture
def held_port():
    """A port held by a listening socket that allows sharing, as gRPC's default servers do."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_serve_refuses_a_grpc_port_in_use_before_loading_models(held_port, tmp_path):
    # The folder holds no model: the port is refused before any model would load.
    with pytest.raises(OSError, match=f"gRPC port 127.0.0.1:{held_port} is in use"):
        serve(str(tmp_path), grpc_port=held_port)


def test_command_line_names_the_grpc_port_in_use(held_port, tiny_export, capsys):
    assert main(["serve", str(tiny_export[0]), "--grpc-port", str(held_port)]) == 1
    error = capsys.readouterr().err
    assert f"gRPC port 127.0.0.1:{held_port} is in use" in error and "Traceback" not in error


def test_an_http_port_in_use_and_one_port_for_both_are_named_before_any_model_loads(held_port, tmp_path, capsys):
    # The folder holds no model: each refusal comes first.
    with pytest.raises(OSError, match=f"^The HTTP port 127.0.0.1:{held_port} is in use .* Received: port={held_port}$"):
        serve(str(tmp_path), port=held_port)
    with pytest.raises(ValueError, match="HTTP and gRPC need a port each. Received: port=8601, grpc_port=8601"):
        serve(str(tmp_path), port=8601, grpc_port=8601)
    assert main(["serve", str(tmp_path), "--port", str(held_port)]) == 1
    error = capsys.readouterr().err
    assert f"HTTP port 127.0.0.1:{held_port} is in use" in error and "Traceback" not in error


def test_grpc_server_does_not_share_a_port_taken_after_the_check(held_port):
    plane = types.SimpleNamespace(limits=Limits())
    with pytest.raises(OSError, match=f"Received: grpc_port={held_port}"):
        asyncio.run(start_grpc_server(held_port, "127.0.0.1", plane))
