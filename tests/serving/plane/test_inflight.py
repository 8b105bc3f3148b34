"""Request bytes in flight and the memory given back after a burst (`serving.plane.inflight`)."""

import asyncio
import gc
import weakref

import pytest

from keras_robust.serving import Limits
from keras_robust.serving.plane import inflight
from keras_robust.serving.plane.errors import ServingError


class FakeLibc:
    """Records glibc's calls instead of making them."""

    def __init__(self):
        self.calls = []

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))

    def mallopt(self, option, value):
        self.calls.append(("mallopt", option, value))


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(inflight, "_libc", lambda: fake)
    return fake


class Cycle:
    """An object that only a reference cycle keeps alive once dropped, as an error's traceback
    keeps its request's frames."""

    def __init__(self):
        self.me = self


async def burst(counter, size):
    held = Cycle()
    alive = weakref.ref(held)
    with counter.counter("a test request") as add:
        add(size)
    del held
    return alive


def test_after_a_burst_what_only_cycles_hold_is_freed_and_the_heap_trimmed(libc):
    counter = inflight.InflightBytes(Limits())

    async def scenario():
        gc.disable()  # only the trim's collection may free the cycle
        try:
            alive = await burst(counter, inflight.TRIM_AFTER_BYTES)
            assert alive() is not None and libc.calls == []  # not while the handlers may still hold it
            await asyncio.sleep(inflight.TRIM_DELAY_S + 0.3)
            return alive
        finally:
            gc.enable()

    alive = asyncio.run(scenario())
    assert alive() is None
    assert libc.calls == [("malloc_trim", 0)]


def test_a_small_burst_is_not_trimmed(libc):
    counter = inflight.InflightBytes(Limits())

    async def scenario():
        await burst(counter, inflight.TRIM_AFTER_BYTES - 1)
        await asyncio.sleep(inflight.TRIM_DELAY_S + 0.3)

    asyncio.run(scenario())
    assert libc.calls == []


def test_bytes_past_the_limits_are_refused_and_released_when_the_request_ends():
    counter = inflight.InflightBytes(Limits(max_request_bytes=100, max_client_inflight_bytes=150,
                                            max_inflight_bytes=200))
    with counter.counter("first", client="a") as add:
        add(100)
        with pytest.raises(ServingError, match="max_client_inflight_bytes=150") as refused:
            with counter.counter("second", client="a") as more:
                more(60)
        assert refused.value.status == 503
        with counter.counter("third", client="b") as other:
            other(100)
            with pytest.raises(ServingError, match="max_inflight_bytes=200"):
                with counter.counter("fourth", client="c") as last:
                    last(1)
    with counter.counter("after", client="a") as add:
        add(150)  # everything held before was released


def test_the_server_fixes_the_mmap_threshold_and_freezes_what_it_loaded(libc):
    try:
        inflight.keep_memory_returnable()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert libc.calls == [("mallopt", inflight._M_MMAP_THRESHOLD, inflight.MMAP_THRESHOLD_BYTES)]


def test_glibc_is_found_here():
    # The machines this serves on run glibc; elsewhere `_libc` is None and nothing is trimmed.
    assert inflight._libc() is not None


@pytest.mark.parametrize("owns_process", [True, False])
def test_only_a_server_that_owns_its_process_sets_the_memory_policy(tiny_export, monkeypatch, owns_process):
    from fastapi.testclient import TestClient

    from keras_robust.serving import app as serving_app

    calls = []
    monkeypatch.setattr(serving_app, "keep_memory_returnable", lambda: calls.append(True))
    app = serving_app.create_app(str(tiny_export[0]))
    if owns_process:
        app.state.owns_process = True  # as `serve` marks it
    with TestClient(app) as client:
        assert client.get("/v2/health/live").status_code == 200
    assert calls == ([True] if owns_process else [])
