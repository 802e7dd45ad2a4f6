"""Management benchmark: CoAP GET latency with and without OSCORE against a plain aiocoap
baseline in the same run, and firmware bundle upload throughput over CoAP over TCP.

Run with `make bench`. Writes bench/results/coap-mgmt-<date>-<host>.md (and .json):
- GET /dev latency (median, p99) from the same aiocoap client: the agent without OSCORE
  (public part), the agent with the installer's OSCORE context, and the baseline server
  (bench/coap_baseline.py: aiocoap's own OscoreSiteWrapper) without and with OSCORE;
- the ratio agent-OSCORE / baseline-OSCORE (target: at most 1.2);
- upload of a 64 MiB signed bundle with vaxelctl (BERT blocks over TCP, verified while
  streaming), MiB/s (target: at least 20), and the agent's RSS before and after.
Everything runs on loopback; nothing leaves this machine.
"""

import asyncio
import datetime
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiocoap
import psutil
from aiocoap import Code, Message
from aiocoap.oscore import FilesystemSecurityContext

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware" / "tests"))
sys.path.insert(0, str(ROOT / "host-tools"))
from agent_process import AgentProcess  # noqa: E402
from peers import free_port  # noqa: E402
from vaxelbox.mgmt.security import release, write_private  # noqa: E402
from vaxelctl.client import pair  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
BUNDLE_MIB = int(os.environ.get("BENCH_BUNDLE_MIB", "64"))


async def latencies(uri: str, security: FilesystemSecurityContext | None, count: int) -> list[float]:
    context = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    if security is not None:
        context.client_credentials[uri.rsplit("/", 1)[0] + "/*"] = security
    try:
        for _ in range(50):  # warm up: connection state, caches
            await context.request(Message(code=Code.GET, uri=uri)).response
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            response = await context.request(Message(code=Code.GET, uri=uri)).response
            samples.append(time.perf_counter() - started)
            assert response.code == Code.CONTENT, response
        return samples
    finally:
        await context.shutdown()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


def baseline_contexts(directory: Path) -> tuple[Path, Path]:
    """A matching server/client OSCORE context pair for the baseline server."""
    secret, salt = secrets.token_hex(32), secrets.token_hex(8)
    paths = []
    for role, sender, recipient in (("server", "", "01"), ("client", "01", "")):
        path = directory / f"baseline-{role}"
        path.mkdir()
        write_private(path / "secret.json", json.dumps({"secret_hex": secret, "salt_hex": salt}))
        write_private(
            path / "settings.json", json.dumps({"sender-id_hex": sender, "recipient-id_hex": recipient})
        )
        paths.append(path)
    return paths[0], paths[1]


def run(work: Path) -> dict[str, Any]:
    env = {**os.environ, "VAXELCTL_CONFIG": str(work / "laptop")}
    vaxelctl = [sys.executable, "-c", "from vaxelctl.cli import main; main()"]
    key, public = work / "signing.key", work / "signing.pub"
    subprocess.run(
        [*vaxelctl, "fw", "keygen", str(key), str(public)], check=True, env=env, capture_output=True
    )
    port = free_port("127.0.0.1")
    agent = AgentProcess(
        work, "--data", str(work / "data"), "--coap-port", str(port), "--fw-key", str(public)
    )
    server_dir, client_dir = baseline_contexts(work)
    baseline_port = free_port("127.0.0.1")
    baseline = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("coap_baseline.py")),
            str(baseline_port),
            str(server_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        agent.wait_notification("READY", "1", timeout=30)
        assert baseline.stdout is not None
        assert baseline.stdout.readline().strip() == "ready"
        code = (work / "data" / "mgmt" / "pairing-code").read_text().strip()
        os.environ["VAXELCTL_CONFIG"] = str(work / "laptop")
        paired = asyncio.run(pair("127.0.0.1", port, code, "bench"))
        agent_uri, baseline_uri = f"coap://127.0.0.1:{port}/dev", f"coap://127.0.0.1:{baseline_port}/dev"
        results: dict[str, Any] = {}
        results["agent_plain"] = summary(asyncio.run(latencies(agent_uri, None, REQUESTS)))
        results["baseline_plain"] = summary(asyncio.run(latencies(baseline_uri, None, REQUESTS)))
        agent_context = FilesystemSecurityContext(str(paired.paired.directory / "oscore"))
        results["agent_oscore"] = summary(asyncio.run(latencies(agent_uri, agent_context, REQUESTS)))
        release(agent_context)
        baseline_context = FilesystemSecurityContext(str(client_dir))
        results["baseline_oscore"] = summary(asyncio.run(latencies(baseline_uri, baseline_context, REQUESTS)))
        release(baseline_context)
        results["oscore_ratio"] = round(
            results["agent_oscore"]["median_ms"] / results["baseline_oscore"]["median_ms"], 2
        )
        results["upload"] = upload(work, agent, vaxelctl, env, key)
        return results
    finally:
        baseline.terminate()
        agent.stop()


def upload(
    work: Path, agent: AgentProcess, vaxelctl: list[str], env: dict[str, str], key: Path
) -> dict[str, Any]:
    image, bundle = work / "image.bin", work / "image.bundle"
    image.write_bytes(os.urandom(BUNDLE_MIB * 1024 * 1024))
    subprocess.run(
        # fw pack refuses a bundle no appliance would apply: dotted numbers, a known board
        [
            *vaxelctl,
            "fw",
            "pack",
            str(image),
            "--key",
            str(key),
            "--version",
            "0.0.1",
            "-o",
            str(bundle),
            "--board",
            "simboard",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    process = psutil.Process(agent.process.pid)
    rss_before = process.memory_info().rss
    result = subprocess.run(
        [*vaxelctl, "fw", "upload", str(bundle), "--json"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    uploaded = json.loads(result.stdout)
    assert uploaded["state"] == 2, uploaded
    size_mib = bundle.stat().st_size / 1024 / 1024
    return {
        "bundle_mib": round(size_mib, 2),
        "seconds": uploaded["seconds"],
        "mib_per_s": round(size_mib / uploaded["seconds"], 1),
        "agent_rss_mb_before": round(rss_before / 1e6, 1),
        "agent_rss_mb_after": round(process.memory_info().rss / 1e6, 1),
    }


def write(results: dict[str, Any]) -> Path:
    now = datetime.datetime.now()
    results["date"] = now.isoformat(timespec="seconds")
    results["machine"] = f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    base = ROOT / "bench" / "results" / f"coap-mgmt-{now:%Y%m%d-%H%M}-{platform.node()}"
    base.parent.mkdir(exist_ok=True)
    base.with_suffix(".json").write_text(json.dumps(results, indent=2))
    up = results["upload"]
    lines = [
        f"# Management (CoAP) benchmark, {results['date']}",
        "",
        f"Machine: {results['machine']}. {REQUESTS} sequential GETs per row, same aiocoap client, "
        "loopback. Command: `make bench`.",
        "",
        "| GET /dev | median (ms) | p99 (ms) |",
        "|---|---|---|",
        *(
            f"| {label} | {results[key]['median_ms']} | {results[key]['p99_ms']} |"
            for key, label in (
                ("baseline_plain", "baseline aiocoap server, no OSCORE"),
                ("agent_plain", "Vaxelbox agent, no OSCORE (public part)"),
                ("baseline_oscore", "baseline aiocoap server, OSCORE"),
                ("agent_oscore", "Vaxelbox agent, OSCORE (installer context)"),
            )
        ),
        "",
        f"OSCORE GET median, agent / baseline: **{results['oscore_ratio']}** (target at most 1.2).",
        "",
        f"Firmware bundle upload ({up['bundle_mib']} MiB, signed, BERT over TCP, verified while streaming): "
        f"**{up['mib_per_s']} MiB/s** in {up['seconds']} s (target at least 20). "
        f"Agent RSS {up['agent_rss_mb_before']} MB before, {up['agent_rss_mb_after']} MB after.",
        "",
    ]
    base.with_suffix(".md").write_text("\n".join(lines))
    return base


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        results = run(Path(work))
    base = write(results)
    print((base.with_suffix(".md")).read_text())
    print(f"results: {base}.md")


if __name__ == "__main__":
    main()
