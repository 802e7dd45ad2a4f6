"""The supervisor restarts crashed services with backoff, logs them, and stops them all."""

import asyncio
import io
import json
import logging

import pytest
from vaxelbox.agent.logs import Redactor, configure_logging
from vaxelbox.agent.supervisor import Backoff, ServiceState, Supervisor

FAST = Backoff(initial=0.01, ceiling=0.05, stable_after=10, jitter=0)


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    configure_logging(Redactor(), "INFO", "json", stream)
    yield stream
    logging.getLogger().handlers.clear()


async def test_crashed_service_is_logged_and_restarted(log_stream):
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ConnectionError(f"link down (run {runs})")
        healthy.set()
        await asyncio.Event().wait()

    supervisor = Supervisor(FAST)
    service = supervisor.add("flaky", flaky)
    supervisor.start()
    await asyncio.wait_for(healthy.wait(), 2)
    assert (service.state, service.restarts) == (ServiceState.RUNNING, 2)
    assert service.last_error == "ConnectionError: link down (run 2)"
    await supervisor.stop()
    assert service.state == ServiceState.STOPPED
    events = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    crashes = [e for e in events if e["event"] == "service crashed"]
    assert [c["service"] for c in crashes] == ["flaky", "flaky"]
    assert "ConnectionError: link down (run 1)" in crashes[0]["exception"]


async def test_one_crashing_service_does_not_disturb_the_others():
    ticks = 0

    async def steady() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def broken() -> None:
        raise RuntimeError("always")

    supervisor = Supervisor(FAST)
    supervisor.add("steady", steady)
    broken_service = supervisor.add("broken", broken)
    supervisor.start()
    await asyncio.sleep(0.3)
    await supervisor.stop()
    assert broken_service.restarts >= 4
    assert ticks > 20


async def test_finished_service_is_not_restarted():
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1

    supervisor = Supervisor(FAST)
    service = supervisor.add("once", once)
    supervisor.start()
    await asyncio.sleep(0.1)
    assert (calls, service.state) == (1, ServiceState.FINISHED)
    await supervisor.stop()


def test_backoff_doubles_to_a_ceiling_and_resets_after_a_stable_run():
    backoff = Backoff(initial=1, ceiling=8, stable_after=60, jitter=0)
    delays = [None]
    for _ in range(5):
        delays.append(backoff.next_delay(delays[-1], ran_for=1))
    assert delays[1:] == [1, 2, 4, 8, 8]
    assert backoff.next_delay(8, ran_for=61) == 1


def test_backoff_jitter_spreads_restarts():
    backoff = Backoff(initial=1, jitter=0.2)
    delays = {round(backoff.next_delay(None, 0), 3) for _ in range(50)}
    assert len(delays) > 10
    assert all(0.8 <= d <= 1.2 for d in delays)


def test_a_name_is_used_once():
    supervisor = Supervisor()
    supervisor.add("x", asyncio.sleep)
    with pytest.raises(ValueError, match="added twice"):
        supervisor.add("x", asyncio.sleep)


async def test_stop_cancels_again_a_service_that_swallows_its_cancellation(log_stream, monkeypatch):
    monkeypatch.setattr("vaxelbox.agent.supervisor.STOP_GRACE", 0.05)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise  # the second cancellation is honoured

    supervisor = Supervisor(FAST)
    supervisor.add("stubborn", stubborn)
    supervisor.start()
    await asyncio.sleep(0.01)
    await asyncio.wait_for(supervisor.stop(), 2)
    assert swallowed == 2
    assert "service ignored cancellation" in log_stream.getvalue()
