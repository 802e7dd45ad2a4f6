"""The README's two commands stay true: `make run` starts the agent; CI runs exactly `make test`."""

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from agent_process import loopback_network

REPO = Path(__file__).resolve().parents[2]


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert first_block
    commands = [line.split("#")[0].strip() for line in first_block[1].splitlines()]
    assert commands == ["make run", "make test"]


def test_ci_runs_the_readme_test_command():
    lines = [
        line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines[-1] == "exec make test"


def test_make_run_starts_the_agent_on_the_demo_site(tmp_path):
    make = subprocess.Popen(
        [
            "make",
            "-s",
            "run",
            # Quoted for the shell: a SIP URI's ';transport=' would otherwise end the command.
            "ARGS=" + shlex.join(["--data", f"{tmp_path}/data", "--log-format", "json", *loopback_network()]),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = []
    deadline = time.monotonic() + 120
    try:
        for line in make.stdout:
            seen.append(line)
            if '"agent ready"' in line or time.monotonic() > deadline:
                break
        assert any('"agent ready"' in line for line in seen), "".join(seen)
        assert any("Revisionsbyrån Demo AB" in line for line in seen)
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        rest = make.communicate(timeout=30)[0]
    assert '"agent stopped"' in rest
