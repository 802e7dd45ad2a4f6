"""The running agent leaves out the modules only the CLI's other commands or rare actions need.

Issue 12 asks for RSS idle with 2,000 phones at most 80 MB; every module the agent imports stays
in its memory for life (its code, about 1.5 times its .pyc). The agent is run as systemd runs it
(`python -m vaxelbox run`), stopped with SIGTERM, and reports every module it had loaded by then.
"""

import json
import subprocess
import sys
from pathlib import Path

from agent_process import AgentProcess

# Runs `python -m vaxelbox <args>` and, at exit, writes the names in sys.modules to the file
# named by its first argument.
BOOT = """\
import atexit, json, runpy, sys
path = sys.argv.pop(1)
atexit.register(lambda: open(path, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("vaxelbox", run_name="__main__", alter_sys=True)
"""

# Module -> who needs it instead of the running agent.
NOT_IN_THE_AGENT = {
    "rich": "the CLI's other commands print with it (and structlog's pretty tracebacks, unused)",
    "pygments": "rich's syntax highlighting, through structlog.dev",
    "tomlkit": "an installer's site edit (phones assign), imported when one comes",
    "tarfile": "a firmware update installing, imported then",
    "aiohttp": "nothing: the provisioning server speaks HTTP through h11 (phoneprov.http)",
    "psutil": "the bench; the agent reads its start time from /proc and a board's addresses with ifaddr",
    "platformdirs": "a development host's default data directory, when no --data or board names one",
    "typer": "the command line's other commands, --help and mistakes (vaxelbox.agent.command)",
    "vaxelbox.cli": "the same",
    "difflib": "the 'did you mean' of a misspelt field in a site or board file",
    # ~12 MiB together (cryptography's Rust library alone ~8 MiB), for requests a box sees rarely:
    "cryptography": "a request protected with OSCORE (mgmt.oscore_site) and a firmware download "
    "(bundle.load_public_key); the provisioning certificates are made in a child (phoneprov.pki)",
    "aiocoap.oscore": "the first management request protected with OSCORE (mgmt.oscore_site)",
}


def modules_of_running_agent(tmp_path: Path) -> set[str]:
    """Start the agent on loopback, wait until it is ready, stop it; the modules it had loaded."""
    dump = tmp_path / "modules.json"

    def boot(python: str, _m: str, _module: str, *args: str) -> list[str]:
        return [python, "-c", BOOT, str(dump), *args]

    agent = AgentProcess(tmp_path, "--data", str(tmp_path / "data"), wrap=boot)
    try:
        agent.wait_notification("READY", "1", timeout=30)
    finally:
        code = agent.stop(timeout=30)  # SIGTERM, as systemd stops it
    assert code == 0, agent.output()
    return set(json.loads(dump.read_text()))


def test_the_running_agent_leaves_out_cli_and_rare_action_modules(tmp_path: Path) -> None:
    loaded = modules_of_running_agent(tmp_path)
    assert "vaxelbox.agent.app" in loaded, "the dump is not the agent's"
    found = {name: why for name, why in NOT_IN_THE_AGENT.items() if name in loaded}
    assert not found, f"the running agent imported modules it does not need: {found}"


def test_the_cli_still_prints_with_rich_after_the_log_is_configured(tmp_path: Path) -> None:
    """agent.logs keeps rich out of structlog's import only: a command that logs and then prints
    a table with rich (in one process) still finds it."""
    script = (
        "from vaxelbox.agent.logs import Redactor, configure_logging\n"
        "configure_logging(Redactor(), fmt='json')\n"
        "from vaxelbox.cli_console import console\n"
        "from vaxelbox.tables import print_table\n"
        "print_table(console(width=40), 'T', ['a', 'b'], [['1', '2']])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "│ 1 " in done.stdout, done.stdout  # a rich table's row
