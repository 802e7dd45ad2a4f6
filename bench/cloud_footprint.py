"""What one appliance sends the cloud, per second, when the cloud is silent and when it is healthy.

A UDP socket on loopback plays the cloud: silent (it swallows every packet) or healthy (it answers
every OPTIONS probe 200). The agent runs on the demo office, pointed at it; the socket counts what
arrives over `--seconds` (default 60). Results: bench/results/cloud-footprint-<date>-<host>.md.
Loopback only.
"""

import argparse
import datetime
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

from local_site import CLOUD_HOST, ROOT, AgentProcess, code, command_line, free_port, machine


class Cloud(threading.Thread):
    """A UDP 'cloud' that counts the packets it receives and, when `answers`, answers OPTIONS 200."""

    def __init__(self, answers: bool) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((CLOUD_HOST, free_port(CLOUD_HOST)))
        self.sock.settimeout(0.2)
        self.answers = answers
        self.arrivals: list[float] = []
        self.running = True

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def run(self) -> None:
        while self.running:
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.arrivals.append(time.monotonic())
            if self.answers and data.startswith(b"OPTIONS "):
                self.sock.sendto(ok_for(data), source)

    def stop(self) -> None:
        self.running = False
        self.join()
        self.sock.close()


def ok_for(request: bytes) -> bytes:
    """200 OK echoing the request's Via, From, To (tagged), Call-ID and CSeq."""
    head = request.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    keep = [line for line in head[1:] if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
    to = next((line for line in head if line.lower().startswith("to:")), "To: <sip:cloud>")
    return (
        "SIP/2.0 200 OK\r\n" + "\r\n".join([*keep, f"{to};tag=cloud"]) + "\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def measure(answers: bool, seconds: float, workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True)
    cloud = Cloud(answers)
    cloud.start()
    agent = AgentProcess(
        workdir, "--data", str(workdir / "data"), "--cloud", f"sip:{CLOUD_HOST}:{cloud.port};transport=udp"
    )
    try:
        agent.wait_notification("READY", "1", timeout=30)
        started = time.monotonic()
        time.sleep(seconds)
        window = [t for t in cloud.arrivals if started <= t < started + seconds]
        first_10 = [t for t in window if t < started + 10]
        return {
            "seconds": seconds,
            "packets": len(window),
            "per_second": round(len(window) / seconds, 3),
            "packets_first_10_s": len(first_10),
        }
    finally:
        agent.stop()
        agent.close()
        cloud.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        silent = measure(False, args.seconds, Path(tmp) / "silent")
        healthy = measure(True, args.seconds, Path(tmp) / "healthy")
    stamp = datetime.datetime.now(datetime.UTC)
    results = {"date": stamp.isoformat(timespec="seconds"), "machine": machine(), "code": code(),
               "command": command_line(), "silent": silent, "healthy": healthy}  # fmt: skip
    out = ROOT / "bench" / "results" / f"cloud-footprint-{stamp:%Y-%m-%d}-{machine()['host']}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# Cloud footprint, {results['date']}\n\nMachine: {results['machine']}\nCode: {results['code']}\n"
        f"Command: `{results['command']}` (`make bench` runs it so). Loopback only. One appliance on the "
        "demo office; a UDP socket as the cloud counts every packet that arrives.\n\n"
        "| cloud | seconds | packets | packets/s | packets in the first 10 s |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {name} | {r['seconds']:g} | {r['packets']} | {r['per_second']} | {r['packets_first_10_s']} |\n"
            for name, r in (("silent (never answers)", silent), ("healthy (answers every probe)", healthy))
        )
    )
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
