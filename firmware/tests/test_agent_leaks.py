"""No test leaves a `vaxelbox run` behind (firmware/tests/agent_leaks.py).

The reproduction: two agents started by test_first_minute.py were still running 50 minutes after
their tests, parent 1: the fixture that started them failed while waiting for the summary, and a
fixture whose setup fails gets no teardown. Here a small test session (its own pytest, with the
plugin) starts agents and forgets them, directly and through a shell that exits at once (the agent
then has parent 1, as `make run` killed before its child would leave it).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INNER = """
import subprocess
import sys
import time
from pathlib import Path

from agent_process import AgentProcess, loopback_network

PIDS = Path(r"{pids}")


def test_forgets_its_agent(tmp_path):
    agent = AgentProcess(tmp_path, "--data", str(tmp_path / "data"))
    agent.wait_notification("READY", "1", timeout=30)
    (PIDS / "direct").write_text(str(agent.process.pid))


def test_leaves_an_orphan(tmp_path):
    argv = [sys.executable, "-m", "vaxelbox", "run", "--data", str(tmp_path / "data"), *loopback_network()]
    command = " ".join(repr(word) for word in argv)
    subprocess.run(["bash", "-c", f"{{command}} >/dev/null 2>&1 & echo $! > {{PIDS / 'orphan'}}"], check=True)
    # bash has forked but its child may not have exec'd the agent yet; an orphan is a running agent
    orphan = Path(f"/proc/{{(PIDS / 'orphan').read_text().strip()}}/cmdline")
    deadline = time.monotonic() + 30
    while orphan.read_bytes().split(b"\\0")[2:4] != [b"vaxelbox", b"run"] and time.monotonic() < deadline:
        time.sleep(0.01)


def test_stops_its_agent(tmp_path):
    agent = AgentProcess(tmp_path, "--data", str(tmp_path / "data"))
    try:
        agent.wait_notification("READY", "1", timeout=30)
    finally:
        agent.stop()
"""


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_test_that_leaves_an_agent_running_fails_and_the_agent_is_ended(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    inner = tmp_path / "session"
    inner.mkdir()
    (inner / "test_inner.py").write_text(INNER.format(pids=pids))
    short = Path(tempfile.mkdtemp(prefix="leaks-"))  # the agents' notify sockets need a short path
    try:
        result = run_inner(inner, short, tmp_path)
    finally:
        for left in (int(path.read_text()) for path in pids.iterdir()):
            if running(left):  # the check did not end it: this test must not leak it either
                os.kill(left, signal.SIGKILL)
        shutil.rmtree(short, ignore_errors=True)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert "3 passed, 2 errors" in report, report
    direct, orphan = (int((pids / name).read_text()) for name in ("direct", "orphan"))
    assert f"this test left 1 `vaxelbox run` running (now ended):\n  pid {direct}: " in report
    assert f"  pid {orphan}: " in report
    assert "test_stops_its_agent" not in report.split("short test summary info")[-1]
    deadline = time.monotonic() + 10
    while (running(direct) or running(orphan)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(direct)
    assert not running(orphan)


def run_inner(inner: Path, basetemp: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tests = Path(__file__).parent
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "agent_leaks", "-p", "no:cacheprovider", "-q", "test_inner.py",
         "--basetemp", str(basetemp)],
        cwd=inner, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
             "VAXELBOX_RUNTIME_DIR": str(tmp_path / "run"), "AGENT_LEAK_GRACE": "1"},
    )  # fmt: skip
