"""The HIL suite's fixtures and its report.

`make hil` (simulated board) or `make hil BOARD=boards/<name>.yaml` (a real
one) writes the labgrid environment from the board file and runs the suites
in order. On the simulated board the suite builds the network, starts
Kamailio in `cloud`, and removes everything afterwards, pass or fail.

Before any test, the lab is checked once (`lab.lab_problems`): a lab that is
not ready ends the run with one message. A board with manual power asks a
person at the terminal (labgrid's ManualPowerDriver), past pytest's capture.
"""

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import Lab, lab_problems, real_lab, simulated_lab
from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY
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
    board_time = time.monotonic() - started - _ASKED["seconds"]  # not the person's time at a prompt
    _HEADER["power-on to agent running"] = f"{board_time:.1f} s"
    for name, command in (("kernel", "uname -r"), ("agent", "vaxelbox --version")):
        lines, _, code = strategy.shell.run(command)
        _HEADER[name] = lines[-1].strip() if code == 0 and lines else f"unknown (`{command}` failed)"
    return strategy


@pytest.fixture(scope="session", autouse=True)
def powered(request: pytest.FixtureRequest) -> None:
    """Every suite runs against the board in its last state: powered, logged in, agent running.

    If the board cannot get there, every test would repeat the same error: the run stops after it.
    """
    try:
        request.getfixturevalue("running")
    except Exception:
        request.session.shouldfail = (
            "the board never got to 'agent running' (the error above); nothing else can run"
        )
        raise


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


# --- the lab, checked once up front; a person for manual power -------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab_needs(*names): HIL_* variables a real lab must set for this suite"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Check the lab for the selected suites; if it is not ready, say everything missing once and stop.

    Raises pytest.UsageError (exit status 4; the report is still written).
    """
    needs: dict[str, list[str]] = {}  # variable -> the suites that ask for it
    for item in session.items:
        for marker in item.iter_markers("lab_needs"):
            for name in marker.args:
                needs.setdefault(name, [])
                if _suite(item) not in needs[name]:
                    needs[name].append(_suite(item))
    board_file = Path(session.config.getoption("--board"))
    problems = lab_problems(board_file, needs, dict(os.environ), _stdin_is_terminal(session.config))
    if problems:
        _SESSION["not ready"] = _not_ready(board_file, problems, session.items, needs)
        raise pytest.UsageError(_SESSION["not ready"])
    env = session.config.stash.get(LABGRID_ENV_KEY, None)
    if env is not None:  # labgrid's manual drivers call env.interact(message) and wait for Enter
        env.interact = lambda message: _ask_person(session.config, message)


def _suite(item: pytest.Item) -> str:
    """'suite 4 (relay)' for hil-tests/test_4_relay.py."""
    _, number, name = item.path.stem.split("_", 2)
    return f"suite {number} ({name})"


def _not_ready(
    board_file: Path, problems: list[str], items: list[pytest.Item], needs: dict[str, list[str]]
) -> str:
    """The one message: every problem, and the suites that could run without the missing variables."""
    blocked = {
        suite for name, suites in needs.items() if not os.environ.get(name, "").strip() for suite in suites
    }
    runnable = sorted({_suite(item) for item in items} - blocked)
    lines = [
        f"the lab for {board_file} is not ready; set what is missing in the environment or on make's"
        ' command line (README: "Prove a board works"):',
        *(f"- {problem}" for problem in problems),
    ]
    if blocked and runnable:
        numbers = " ".join(suite.split()[1] for suite in runnable)
        lines.append(f'Or run only the suites this lab can: make hil BOARD={board_file} SUITES="{numbers}"')
    return "\n".join(lines)


def _stdin_is_terminal(config: pytest.Config) -> bool:
    """Whether a person can answer on stdin. pytest holds fd 0 (on /dev/null) between tests."""
    capture = config.pluginmanager.getplugin("capturemanager")
    capture.suspend_global_capture(in_=True)
    try:
        return sys.stdin.isatty()
    finally:  # back to how pytest left it between phases: stdin captured, output not
        capture.resume_global_capture()
        capture.suspend_global_capture(in_=False)


def _ask_person(config: pytest.Config, message: str) -> None:
    """Show `message` on the terminal and wait for Enter, with pytest's capture set aside meanwhile.

    The person's time counts neither against pytest-timeout's limit nor in the report's timings.
    Raises EOFError when stdin closes (the run then stops, see `powered`).
    """
    capture = config.pluginmanager.getplugin("capturemanager")
    alarm = signal.setitimer(signal.ITIMER_REAL, 0)  # pytest-timeout's (signal method); 0 = none
    capture.suspend(in_=True)
    asked = time.monotonic()
    try:
        input(f"\n>>> {message} ")
    finally:
        _ASKED["seconds"] += time.monotonic() - asked
        capture.resume()
        if alarm[0]:
            signal.setitimer(signal.ITIMER_REAL, *alarm)


# --- the report ------------------------------------------------------------------------------

_RESULTS: list[dict[str, Any]] = []
_HEADER: dict[str, str] = {}
_MEASURED: dict[str, str] = {}
_SESSION: dict[str, Any] = {}  # the lab and the board's shell, for evidence on failure
_ASKED = {"seconds": 0.0}  # spent waiting for the person at power prompts


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
        *([_SESSION["not ready"], ""] if "not ready" in _SESSION else []),
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.fspath.basename)  # suites in their numbered order
