"""Fair admission: one client's backlog does not take another client's share of the server."""

import asyncio
import threading
import time

import pytest

from keras_robust.serving import Limits, create_app
from keras_robust.serving.plane.admission import Gate
from keras_robust.serving.plane.errors import ServingError
from tests.helpers import TEST_LIMITS, running_server
from tests.serving.fairness_clients import Flood, explain_body, predict_body, victim_predictions

# What the victim's median prediction may take under a flood, in multiples of its unloaded median.
# Measured (docs/reliability.md): about 1.5x with 36 flooding connections; before fair admission,
# 189 of 190 predictions were refused and the rest took seconds.
MAX_SLOWDOWN = 10


def _run(coroutine):
    return asyncio.run(coroutine)


def test_waiting_work_is_served_round_robin_across_clients():
    order = []

    async def scenario():
        gate = Gate(Limits(max_concurrent=1, max_queue=8))
        release = threading.Event()
        deadline = asyncio.get_running_loop().time() + 30
        # One slot, held until every request below is waiting: A queued three, then B one, then C one.
        blocker = asyncio.ensure_future(gate.run(lambda _: release.wait(10), deadline, "A"))
        await asyncio.sleep(0.05)
        tasks = [asyncio.ensure_future(gate.run(lambda _, name=name: order.append(name), deadline, client))
                 for name, client in (("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C"))]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(blocker, *tasks)
        gate.close()

    _run(scenario())
    # A's backlog does not make B and C wait behind all of it.
    assert order == ["a1", "b1", "c1", "a2", "a3"]


def test_explanations_leave_a_slot_for_everything_else():
    async def scenario():
        gate = Gate(Limits(max_concurrent=3))
        release = threading.Event()
        deadline = asyncio.get_running_loop().time() + 30
        heavy = [asyncio.ensure_future(gate.run(lambda _: release.wait(10), deadline, "A", heavy=True))
                 for _ in range(3)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        # Two explanations run, the third waits; a prediction takes the slot left.
        await gate.run(lambda _: None, deadline, "B")
        light_seconds = time.perf_counter() - started
        assert not any(task.done() for task in heavy)
        release.set()
        await asyncio.gather(*heavy)
        gate.close()
        return light_seconds

    assert _run(scenario()) < 1.0


def test_a_client_past_its_share_waits_for_a_place_then_gets_a_503_naming_it():
    async def scenario():
        gate = Gate(Limits(max_per_client=2, timeout_s=30))
        loop = asyncio.get_running_loop()
        held, entered = [], []

        async def request(name, deadline, hold):
            async with gate.client_admission("A", deadline):
                entered.append(name)
                await hold.wait()

        hold = asyncio.Event()
        first = [asyncio.ensure_future(request(f"r{i}", loop.time() + 30, hold)) for i in range(2)]
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(request("r2", loop.time() + 30, asyncio.Event()))
        await asyncio.sleep(0.01)
        assert entered == ["r0", "r1"]  # the third waits, its body unread
        async with gate.client_admission("B", loop.time() + 1):  # another client is not held up
            held.append("B")
        with pytest.raises(ServingError, match=r"kept its share of the server \(max_per_client=2 requests\)"):
            await request("late", loop.time() + 0.05, asyncio.Event())
        hold.set()
        await asyncio.gather(*first)
        await asyncio.sleep(0.01)
        assert entered == ["r0", "r1", "r2"] and held == ["B"]  # a place freed: the waiter took it
        waiting.cancel()

    _run(scenario())


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("connections", [36, 4])
def test_an_explain_flood_from_one_client_leaves_another_clients_predictions_answered(tiny_export, connections):
    limits = Limits(**{**TEST_LIMITS, "timeout_s": 15.0})
    with running_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        port = int(url.rsplit(":", 1)[1])
        predict, explain = "/v1/models/tiny:predict", "/v1/models/tiny:explain"
        image_shape = tuple(tiny_export[2].input_shape[1:])
        body = predict_body(image_shape)
        unloaded = victim_predictions(port, predict, body, 15)
        # Each explanation at the work cap of the test limits (8 images x 100 steps, under max_image_steps).
        with Flood(port, explain, explain_body(image_shape, 8, 100), connections) as flood:
            time.sleep(1.5)
            loaded = victim_predictions(port, predict, body, 25)
    assert unloaded["answered"] == 1.0
    assert loaded["answered"] >= 0.95, loaded
    assert loaded["median_s"] <= MAX_SLOWDOWN * unloaded["median_s"], (loaded, unloaded)
    assert 200 in flood.statuses  # the flooder is served too, within its share
    assert all(b"max_per_client" in refusal for refusal in flood.refusals), flood.refusals
