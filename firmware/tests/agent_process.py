"""A real `vaxelbox run` child process, observed the way systemd observes it.

The test plays systemd: it binds a NOTIFY_SOCKET and reads READY, STATUS,
RELOADING, WATCHDOG and STOPPING from it, and reads the agent's JSON logs.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from peers import free_port

AGENT_COMMAND = [sys.executable, "-m", "vaxelbox", "run", "--log-format", "json"]


def loopback_network(*args: str) -> list[str]:
    """Flags that keep an agent on loopback: free SIP ports, and a cloud on 127.0.0.3 (the demo
    site's cloud names would send DNS queries off this machine)."""
    extra = []
    if "--lan" not in args:
        extra += [
            "--lan",
            f"127.0.0.1:{free_port('127.0.0.1')}",
            "--wan",
            f"127.0.0.2:{free_port('127.0.0.2')}",
        ]
    if "--cloud" not in args:
        extra += ["--cloud", f"sip:127.0.0.3:{free_port('127.0.0.3')};transport=tcp"]
    for flag in ("--http-port", "--https-port", "--coap-port", "--lan-tls-port"):
        if flag not in args:
            extra += [flag, str(free_port("127.0.0.1"))]
    return extra


class AgentProcess:
    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        wrap: Callable[..., list[str]] | None = None,
    ) -> None:
        """`wrap(*argv)` runs the agent inside something, e.g. a network namespace's `ip netns exec`."""
        self.notify_path = tmp_path / f"notify-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        self.log_path = tmp_path / f"agent-{time.monotonic_ns()}.log"
        self.notifications: list[dict[str, str]] = []
        self._log = self.log_path.open("w")
        argv = [*AGENT_COMMAND, *args, *loopback_network(*args)]
        self.process = subprocess.Popen(
            wrap(*argv) if wrap else argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its record for `vaxelbox phones` (vaxelbox.agent.runtime) stays in the test's directory.
            env={
                **os.environ,
                "VAXELBOX_RUNTIME_DIR": str(tmp_path / "run"),
                **(env or {}),
                "NOTIFY_SOCKET": str(self.notify_path),
            },
        )

    def wait_notification(self, key: str, value: str | None = None, timeout: float = 10) -> dict[str, str]:
        """The next notification carrying `key` (with `value`, if given); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.splitlines())
            self.notifications.append(fields)
            if key in fields and (value is None or fields[key] == value):
                return fields
        raise AssertionError(f"no {key}={value} within {timeout}s; got {self.notifications}\n{self.output()}")

    def wait_event(self, name: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.events(name):
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no log event {name!r} within {timeout}s\n{self.output()}")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then the exit code; an agent not gone within `timeout` is killed (and this raises
        subprocess.TimeoutExpired), so no test leaves one running."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.close()
        self._drain()
        self.close()
        return code

    def _drain(self) -> None:
        """Collect the notifications sent before the process exited."""
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except BlockingIOError:
                return
            self.notifications.append(dict(line.split("=", 1) for line in data.splitlines()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.sock.close()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text()

    def events(self, name: str | None = None) -> list[dict]:
        found = []
        for line in self.output().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if name is None or event.get("event") == name:
                found.append(event)
        return found
