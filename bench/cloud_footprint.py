"""What one appliance sends the cloud, per second, when the cloud is silent and when it is healthy.

A UDP socket on loopback plays the cloud: silent (it swallows every packet) or healthy (it answers
every OPTIONS probe 200). The agent runs on the demo office, pointed at it; the socket counts what
arrives over `--seconds` (default 60). Then the cloud's link is cut: the agent in one network
namespace, two Kamailio proxies in another, the link set down (test_good_neighbour_peers.py's
office), and nftables counts what the appliance sends toward each proxy over `--seconds`.
Results: bench/results/cloud-footprint-<date>-<host>.md. Loopback and namespaces only (root).
"""

import argparse
import datetime
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from local_site import CLOUD_HOST, ROOT, AgentProcess, code, command_line, free_port, machine

from test_good_neighbour_peers import CLOUD_ADDRESSES, office_behind_a_link  # isort: skip (the path)


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


def measure_cut_link(seconds: float, workdir: Path) -> dict[str, object]:
    """Packets sent toward each proxy while the cloud's link is down, and the return time."""
    workdir.mkdir(parents=True)
    with office_behind_a_link(workdir) as office:
        until(lambda: office.states("up") >= 1, 15)
        time.sleep(2)
        office.cut()
        before, started = office.sent(), time.monotonic()
        time.sleep(seconds)
        after = office.sent()
        office.restore()
        restored = time.monotonic()
        until(lambda: office.states("up") >= 2, 20)
        back = time.monotonic() - restored
    per_target = {address: after[address] - before[address] for address in CLOUD_ADDRESSES}
    packets = sum(per_target.values())
    return {"seconds": seconds, "packets": packets, "per_second": round(packets / seconds, 3),
            "per_target": per_target, "back_after_s": round(back, 2), "measured_s": round(restored - started, 1)}  # fmt: skip


def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        silent = measure(False, args.seconds, Path(tmp) / "silent")
        healthy = measure(True, args.seconds, Path(tmp) / "healthy")
        cut = measure_cut_link(args.seconds, Path(tmp) / "cut")
    stamp = datetime.datetime.now(datetime.UTC)
    results = {"date": stamp.isoformat(timespec="seconds"), "machine": machine(), "code": code(),
               "command": command_line(), "silent": silent, "healthy": healthy, "cut_link": cut}  # fmt: skip
    out = ROOT / "bench" / "results" / f"cloud-footprint-{stamp:%Y-%m-%d}-{machine()['host']}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# Cloud footprint, {results['date']}\n\nMachine: {results['machine']}\nCode: {results['code']}\n"
        f"Command: `{results['command']}` (`make bench` runs it so). Loopback and network namespaces only. One appliance on the "
        "demo office; a UDP socket as the cloud counts every packet that arrives.\n\n"
        "| cloud | seconds | packets | packets/s | packets in the first 10 s |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {name} | {r['seconds']:g} | {r['packets']} | {r['per_second']} | {r['packets_first_10_s']} |\n"
            for name, r in (("silent (never answers)", silent), ("healthy (answers every probe)", healthy))
        )
        + "\nThe cloud's link cut (`ip link set down` in the cloud's namespace), two proxies, packets the "
        f"appliance sent toward each (nftables counters) over {cut['seconds']:g} s: {cut['per_target']}, "
        f"{cut['packets']} in all ({cut['per_second']}/s); the link restored, the cloud was up again after "
        f"{cut['back_after_s']} s.\n"
    )
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
