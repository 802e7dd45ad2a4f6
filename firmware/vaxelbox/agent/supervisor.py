"""One asyncio supervisor for the agent's services.

A service that raises is logged with its traceback and restarted after a
backoff that doubles up to a ceiling (with jitter, so services that fail
together do not restart together); a service that ran long enough before
failing starts again from the shortest backoff. A service that returns has
finished and is not restarted.
"""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from vaxelbox.agent.logs import get_logger

log = get_logger("vaxelbox.supervisor")
STOP_GRACE = 2.0  # seconds a service gets to end after cancellation, per attempt
STOP_ATTEMPTS = 3


class ServiceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"


@dataclass
class Service:
    name: str
    run: Callable[[], Awaitable[None]]
    state: ServiceState = ServiceState.STARTING
    restarts: int = 0
    last_error: str | None = None
    listening: list[str] = field(default_factory=list)  # addresses it serves, for the start-up line


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    ceiling: float = 30.0
    stable_after: float = 60.0  # a run this long resets the backoff
    jitter: float = 0.2  # +-20 %

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        if previous is None or ran_for >= self.stable_after:
            base = self.initial
        else:
            base = min(previous * 2, self.ceiling)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


class Supervisor:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self.services: dict[str, Service] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, name: str, run: Callable[[], Awaitable[None]]) -> Service:
        if name in self.services:
            raise ValueError(f"service {name!r} added twice")
        service = self.services[name] = Service(name, run)
        return service

    def start(self) -> None:
        for service in self.services.values():
            self._tasks.append(asyncio.create_task(self._keep_running(service), name=service.name))

    async def stop(self) -> None:
        """Cancel every service and wait for it; one that swallows the cancellation (a bug, or
        asyncio.wait_for on Python 3.11) is cancelled again and named, never waited on forever."""
        pending = set(self._tasks)
        for attempt in range(STOP_ATTEMPTS):
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE)
            if not pending:
                break
            log.warning(
                "service ignored cancellation", services=[t.get_name() for t in pending], attempt=attempt + 1
            )
        self._tasks.clear()
        for service in self.services.values():
            service.state = ServiceState.STOPPED

    async def _keep_running(self, service: Service) -> None:
        delay: float | None = None
        while True:
            service.state = ServiceState.RUNNING
            started = time.monotonic()
            try:
                await service.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.backoff.next_delay(delay, time.monotonic() - started)
                service.state = ServiceState.BACKOFF
                service.restarts += 1
                service.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("service crashed", service=service.name, restart_in=round(delay, 2))
                await asyncio.sleep(delay)
                log.info("service restarting", service=service.name, restarts=service.restarts)
            else:
                service.state = ServiceState.FINISHED
                log.info("service finished", service=service.name)
                return
