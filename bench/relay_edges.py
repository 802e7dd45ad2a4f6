"""The two edges bench/sip_relay.py compares, each started on loopback between sipp phones and the cloud.

Edge A is the Vaxelbox agent (`python -m vaxelbox run`); edge B, the reference, is a
Kamailio record-routing outbound proxy with Path (bench/kamailio-edge.cfg). Both take
phones on `lan` (UDP) and reach the cloud over TCP.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware" / "tests"))
from peers import Kamailio, free_port, options_ping, tool  # noqa: E402

__all__ = ["ROOT", "SHM_MB", "Address", "Agent", "Edge", "Kamailio", "KamailioEdge", "free_port", "tool"]

Address = tuple[str, int]
EDGE_CONFIG = Path(__file__).with_name("kamailio-edge.cfg")
# Shared memory of the Kamailio edge and cloud, MiB: their transactions live there (about 8 KiB each,
# kept seconds after they end); 64 (peers' default) runs out at ~500 calls/s ("out of mem" in tm),
# and the reference would look worse than Kamailio is.
SHM_MB = 512


class Agent:
    """The Vaxelbox agent as the edge: phones on 127.0.0.1 (`lan`), the cloud over TCP from 127.0.0.2."""

    name = "vaxelbox"

    def __init__(self, workdir: Path, cloud: Kamailio) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.lan: Address = ("127.0.0.1", free_port("127.0.0.1"))
        wan = ("127.0.0.2", free_port("127.0.0.2"))
        self.log_path = workdir / "agent.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vaxelbox", "run", "--data", str(workdir / "data"), "--log-level", "WARNING",
             "--log-format", "json", "--sip-rate-limit", "0",
             # Free ports for the other services too: a `make run` on this machine holds the defaults.
             "--http-port", str(free_port("127.0.0.1")), "--https-port", str(free_port("127.0.0.1")),
             "--coap-port", str(free_port("127.0.0.1")),
             "--lan", f"{self.lan[0]}:{self.lan[1]}", "--wan", f"{wan[0]}:{wan[1]}",
             "--cloud", f"sip:{cloud.address}:{cloud.port};transport=tcp"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_ready(self.lan, self.process, self.log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident set size of the agent's process now, in MiB."""
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the agent has used so far, in seconds."""
        return cpu_seconds(psutil.Process(self.process.pid))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class KamailioEdge:
    """Kamailio as the edge (bench/kamailio-edge.cfg): phones on 127.0.0.1 (`lan`, UDP), TCP from 127.0.0.4."""

    name = "kamailio"

    def __init__(self, workdir: Path, cloud: Kamailio) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.lan: Address = ("127.0.0.1", free_port("127.0.0.1"))
        wan = ("127.0.0.4", free_port("127.0.0.4"))
        config = EDGE_CONFIG.read_text()
        for key, value in {"@LAN_ADDRESS@": self.lan[0], "@LAN_PORT@": str(self.lan[1]), "@WAN_ADDRESS@": wan[0],
                           "@WAN_PORT@": str(wan[1]), "@CLOUD@": f"{cloud.address}:{cloud.port}",
                           "@RUNDIR@": str(workdir)}.items():  # fmt: skip
            config = config.replace(key, value)
        (workdir / "kamailio-edge.cfg").write_text(config)
        self.log_path = workdir / "kamailio-edge.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [tool("kamailio"), "-DD", "-E", "-f", str(workdir / "kamailio-edge.cfg"), "-Y", str(workdir),
             "-m", str(SHM_MB), "-M", "8"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_ready(self.lan, self.process, self.log_path, forwards=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident set size of all Kamailio processes (shared memory counted once per process), in MiB."""
        main = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [main, *main.children(recursive=True)]) / 2**20

    def cpu_seconds(self) -> float:
        """CPU time (user + system) all Kamailio processes have used so far, in seconds."""
        main = psutil.Process(self.process.pid)
        return sum(cpu_seconds(p) for p in [main, *main.children(recursive=True)])

    def version(self) -> str:
        return subprocess.run([tool("kamailio"), "-v"], capture_output=True, text=True).stdout.splitlines()[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


Edge = Agent | KamailioEdge


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def box_cpu_seconds() -> float:
    """CPU time every process and the kernel have used so far on this machine (all cores), in seconds."""
    times = psutil.cpu_times()
    return sum(getattr(times, part, 0.0) for part in ("user", "nice", "system", "irq", "softirq"))


def wait_ready(lan: Address, process: subprocess.Popen[bytes], log: Path, forwards: bool = False) -> None:
    """Until `lan` answers an OPTIONS over UDP (any reply; the Kamailio edge forwards it to the cloud).

    Raises RuntimeError with the log when the process exits or nothing answers within 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"edge exited: {log.read_text()[-2000:]}")
        if options_ping(lan, timeout=0.5 if forwards else 0.3):
            return
        time.sleep(0.2)
    raise RuntimeError(f"edge did not answer OPTIONS on {lan}: {log.read_text()[-2000:]}")
