"""Connection limits: silent, trickling and surplus connections are closed, not piled up."""

import os
import resource
import socket
import subprocess
import sys
import time

import pytest

from keras_robust.serving import Limits, create_app
from keras_robust.serving.transport.connections import check_descriptor_limit
from tests.helpers import TEST_LIMITS, call, free_port, read_answer, running_server
from tests.serving.fairness_clients import FLOODER, VICTIM, post, predict_body

HEAD_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def server(tiny_export):
    """`(base URL, port)` of a server with a short header timeout and a small per-client connection cap."""
    limits = Limits(**{**TEST_LIMITS, "header_timeout_s": HEAD_TIMEOUT_S, "max_connections": 40,
                       "max_client_connections": 8})
    with running_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        yield url, int(url.rsplit(":", 1)[1])


def connect(port, source=FLOODER):
    client = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return client


def test_a_silent_connection_is_answered_408_and_closed(server):
    _, port = server
    with connect(port) as client:
        started = time.monotonic()
        status, answer = read_answer(client)
        error = answer["error"]
    assert status == 408 and f"header_timeout_s={HEAD_TIMEOUT_S:g}" in error
    assert HEAD_TIMEOUT_S * 0.8 <= time.monotonic() - started < HEAD_TIMEOUT_S + 5


def test_a_trickling_request_head_is_closed_at_the_timeout_too(server):
    _, port = server
    with connect(port) as client:
        started = time.monotonic()
        client.sendall(b"GET /v1/models HTTP/1.1\r\n")
        for byte in b"Host: slow\r\n":
            time.sleep(HEAD_TIMEOUT_S / 5)
            try:
                client.sendall(bytes([byte]))
            except OSError:
                break  # closed under us: the point
        status, _ = read_answer(client)
    assert status == 408 and time.monotonic() - started < HEAD_TIMEOUT_S + 5


def test_a_kept_alive_connection_gets_the_timeout_again_after_each_answer(server):
    _, port = server
    with connect(port) as client:
        client.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        first = client.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        while client.recv(65536):  # then silence: closed within uvicorn's keep-alive or the head timeout
            pass
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 6


def test_a_clients_surplus_connections_are_refused_and_another_client_is_served(server, tiny_export):
    url, port = server
    held = [connect(port) for _ in range(8)]
    try:
        time.sleep(0.1)
        with connect(port) as surplus:
            status, answer = read_answer(surplus)
        error = answer["error"]
        assert status == 503 and "max_client_connections=8" in error and FLOODER in error
        status, _, _ = post(port, "/v1/models/tiny:predict", predict_body(tuple(tiny_export[2].input_shape[1:])),
                            VICTIM)
        assert status == 200
    finally:
        for client in held:
            client.close()


def test_limits_the_process_cannot_hold_are_refused_by_name(monkeypatch):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, hard))
    with pytest.raises(ValueError, match=r"descriptor limit of 256 \(ulimit -n\): lower --max-connections"):
        check_descriptor_limit(Limits(max_connections=512))
    check_descriptor_limit(Limits(max_connections=128 - 64, max_client_connections=32))
    for limits, message in (({"timeout_s": float("inf")}, "Received: timeout_s=inf"),
                            ({"max_request_bytes": 2**32}, "Received: max_request_bytes=4294967296"),
                            ({"max_client_connections": 600}, "must be at most max_connections")):
        with pytest.raises(ValueError, match=message):
            Limits(**limits)


def _answers(url):
    try:
        return call(url)[0] == 200
    except OSError:  # not listening yet
        return False


@pytest.mark.slow
@pytest.mark.multiprocess
def test_silent_connections_past_the_descriptor_limit_lock_no_one_out(tiny_export, tmp_path):
    """Under a 256-descriptor limit, 300 silent connections from one client: the others are still served,
    and the log holds a line per condition, no traceback."""
    port = free_port()
    log = tmp_path / "server.log"

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "keras_robust.cli", "serve", str(tiny_export[0]), "--port", str(port),
             "--max-connections", "64", "--max-client-connections", "32", "--header-timeout-s", "3",
             "--log-level", "warning"], stdout=output, stderr=subprocess.STDOUT, preexec_fn=low_limit,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"http://127.0.0.1:{port}/v1/models"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        silent = []
        for _ in range(300):
            try:
                silent.append(connect(port))
            except OSError:
                break
        body = predict_body(tuple(tiny_export[2].input_shape[1:]))
        answers = [post(port, "/v1/models/tiny:predict", body, VICTIM)[0] for _ in range(10)]
        for client in silent:
            client.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert answers == [200] * 10, text[-2000:]
    assert "Traceback" not in text and "out of system resource" not in text
    assert text.count("max_client_connections=32") == 1
