"""The HIL suite's fixtures and its report.

`make hil` (simulated board) or `make hil BOARD=boards/<name>.yaml` (a real
one) writes the labgrid environment from the board file and runs the suites
in order. On the simulated board the suite builds the network, starts
Kamailio in `cloud`, and removes everything afterwards, pass or fail.
"""

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import Lab, real_lab, simulated_lab
from vaxelbox.hw.board import Board, load_board

HIL = Path(__file__).resolve().parent
ROOT = HIL.parent
sys.path.insert(0, str(ROOT / "firmware" / "tests"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--board", default=str(ROOT / "boards" / "simboard.yaml"), help="the board file")
    parser.addoption("--report", default=str(ROOT / "hil-results" / "report.md"), help="Markdown report")


@pytest.fixture(scope="session")
def board(pytestconfig: pytest.Config) -> Board:
    return load_board(Path(pytestconfig.getoption("--board")))


@pytest.fixture(scope="session")
def lab(board: Board, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The board's surroundings: phones' LAN, the cloud PBX. Built for the simulated board."""
    if board.name == "simboard":
        with simulated_lab(tmp_path_factory.mktemp("cloud")) as built:
            _SESSION["lab"] = built
            yield built
    else:
        _SESSION["lab"] = real_lab(board)
        yield _SESSION["lab"]


@pytest.fixture(scope="session")
def running(lab: Lab, strategy: Any) -> Any:
    """The board powered, logged in, agent running (the strategy's last state)."""
    started = time.monotonic()
    strategy.transition("agent")
    _HEADER["power-on to agent running"] = f"{time.monotonic() - started:.1f} s"
    for name, command in (("kernel", "uname -r"), ("agent", "vaxelbox --version")):
        lines, _, code = strategy.shell.run(command)
        _HEADER[name] = lines[-1].strip() if code == 0 and lines else f"unknown (`{command}` failed)"
    return strategy


@pytest.fixture(scope="session", autouse=True)
def powered(running: Any) -> None:
    """Every suite runs against the board in its last state: powered, logged in, agent running."""


@pytest.fixture(scope="session")
def shell(running: Any) -> Any:
    _SESSION["shell"] = running.shell
    return running.shell


@pytest.fixture
def measure() -> Any:
    """`measure(name, value)`: a figure for the report's measurements (e.g. detection times)."""
    return lambda name, value: _MEASURED.__setitem__(name, value)


@pytest.fixture(scope="session")
def installer(lab: Lab, running: Any, board: Board, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A laptop on the LAN paired with the board (its vaxelctl config directory)."""
    config = tmp_path_factory.mktemp("laptop")
    lines, _, code = running.shell.run(f"vaxelbox pairing-code --data {board.storage.data_dir}")
    assert code == 0, lines
    result = lab.vaxelctl(config, "pair", lab.board_lan, "--code", lines[-1].strip(), "--name", "hil")
    assert result.returncode == 0, result.stderr
    return config


# --- the report ------------------------------------------------------------------------------

_RESULTS: list[dict[str, Any]] = []
_HEADER: dict[str, str] = {}
_MEASURED: dict[str, str] = {}
_SESSION: dict[str, Any] = {}  # the lab and the board's shell, for evidence on failure


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry = {
            "test": item.nodeid,
            "outcome": report.outcome,
            "seconds": round(report.duration, 2),
            "detail": str(report.longrepr)[-3000:] if report.failed else "",
        }
        if report.skipped and isinstance(report.longrepr, tuple):
            entry["detail"] = report.longrepr[2]
        if report.failed:
            entry["evidence"] = _evidence(item)
        _RESULTS.append(entry)
    return report


def _evidence(item: pytest.Item) -> dict[str, str]:
    """The console and the agent log around the failure."""
    lab = _SESSION.get("lab")
    if not isinstance(lab, Lab):
        return {"evidence": "none: the failure came before the lab existed"}
    try:
        agent_log = lab.agent_log_tail(60, _SESSION.get("shell"))
    except Exception as exc:  # the board may be what failed: say so, keep the report
        agent_log = f"(could not read the agent log: {exc})"
    return {"console (last 60 lines)": lab.console_tail(60), "agent log (last 60 lines)": agent_log}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = Path(session.config.getoption("--report"))
    path.parent.mkdir(parents=True, exist_ok=True)
    board = session.config.getoption("--board")
    lines = [
        f"# HIL report: {Path(board).stem}, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"Board file: `{board}`. Host: {os.uname().nodename}. Result: "
        f"**{'PASS' if exitstatus == 0 else 'FAIL'}** "
        f"({sum(r['outcome'] == 'passed' for r in _RESULTS)} passed, "
        f"{sum(r['outcome'] == 'failed' for r in _RESULTS)} failed, "
        f"{sum(r['outcome'] == 'skipped' for r in _RESULTS)} skipped).",
        "",
        *(f"- {key}: {value}" for key, value in _HEADER.items()),
        "",
        *(["Measurements:", "", *(f"- {k}: {v}" for k, v in _MEASURED.items()), ""] if _MEASURED else []),
        "| step | result | seconds |",
        "|---|---|---|",
        *(f"| `{r['test']}` | {r['outcome']} | {r['seconds']} |" for r in _RESULTS),
        "",
    ]
    for r in _RESULTS:
        if r["outcome"] == "skipped":
            lines += [f"Skipped `{r['test']}`: {r['detail']}", ""]
        if r["outcome"] == "failed":
            lines += [f"## {r['test']}", "", "```", r["detail"], "```", ""]
            for title, text in r.get("evidence", {}).items():
                lines += [f"### {title}", "", "```", text, "```", ""]
    path.write_text("\n".join(lines))
    print(f"\nHIL report: {path}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.fspath.basename)  # suites in their numbered order
