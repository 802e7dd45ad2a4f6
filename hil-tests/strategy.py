"""The strategy every suite starts from: off -> console -> shell -> agent running.

A labgrid strategy (labgrid's ShellStrategy, extended): the console is
cleared after power-on (a stale prompt from before the cycle would confuse
the shell driver), and "agent running" is checked with pgrep, so it works on
images without systemd.
"""

import enum
import time
from typing import ClassVar

import attr
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError
from pexpect import TIMEOUT

AGENT_PATTERN = "vaxelbox run"
AGENT_START_TIMEOUT = 60


class Status(enum.Enum):
    unknown = 0
    off = 1
    console = 2
    shell = 3
    agent = 4


@target_factory.reg_driver
@attr.s(eq=False)
class VaxelboxStrategy(Strategy):
    bindings: ClassVar[dict[str, str]] = {
        "power": "PowerProtocol",
        "console": "ConsoleProtocol",
        "shell": "ShellDriver",
    }

    status = attr.ib(default=Status.unknown)

    @step(args=["status"])
    def transition(self, status: Status | str, *, step) -> None:
        status = status if isinstance(status, Status) else Status[status]
        if status == Status.unknown:
            raise StrategyError(f"cannot transition to {status}")
        if status == self.status:
            step.skip("nothing to do")
            return
        if status == Status.off:
            self.target.deactivate(self.shell)
            self.target.deactivate(self.console)
            self.target.activate(self.power)
            self.power.off()
        elif status == Status.console:
            self.transition(Status.off)
            self.power.on()  # before opening the console: a simulated board's UART exists while powered
            self.target.activate(self.console)
            self.clear_console()
        elif status == Status.shell:
            if self.status != Status.console:
                self.transition(Status.console)
            self.target.activate(self.shell)
        elif status == Status.agent:
            if self.status != Status.shell:
                self.transition(Status.shell)
            self.wait_for_agent()
        self.status = status

    def reconnect(self, within: float = 60) -> None:
        """Back to "agent running" after the board reset itself (its watchdog or its companion cut
        the power), without switching the lab's power: the console is opened again (a simulated
        board's UART is a new pty after a power cycle), the shell logs in, the agent is waited for.
        Raises StrategyError when the console and a login do not come back within `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            self.target.deactivate(self.shell)
            self.target.deactivate(self.console)
            try:  # the old pty may still be there, closing: then reading it fails, and we retry
                self.target.activate(self.console)
                self.clear_console()
                self.target.activate(self.shell)
                break
            except Exception as exc:  # labgrid's and pyserial's errors alike: the board is still off
                if time.monotonic() > deadline:
                    raise StrategyError(f"the console did not come back within {within} s: {exc}") from exc
                time.sleep(0.5)
        self.status = Status.shell
        self.transition(Status.agent)

    def clear_console(self, quiet: float = 0.5, limit: float = 20) -> None:
        """Read and drop what the console says until it has been quiet for `quiet` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                self.console.read(size=65536, timeout=quiet)
            except TIMEOUT:
                return

    def wait_for_agent(self) -> None:
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while time.monotonic() < deadline:
            _, _, code = self.shell.run(f"pgrep -f '{AGENT_PATTERN}' >/dev/null")
            if code == 0:
                return
            time.sleep(1)
        raise StrategyError(f"the agent did not start within {AGENT_START_TIMEOUT} s")
