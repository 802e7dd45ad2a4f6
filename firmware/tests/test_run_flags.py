"""`vaxelbox run`'s flags read without typer (vaxelbox.agent.command.plain_run, issue 12).

A plain `run` must get exactly the values typer would have handed vaxelbox.cli.run, and anything
plain_run does not read exactly so must go to typer, whose answers (help, errors) stay as they were.
"""

import dataclasses
import os
import subprocess
import sys

import pytest
import typer.main
from peers import free_port
from vaxelbox.agent.command import RunFlags, plain_run
from vaxelbox.cli import app

RUN = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]


def typer_reads(argv: list[str]) -> dict[str, object]:
    """The values typer hands `run` for `argv` (the words after `run`)."""
    return dict(RUN.make_context("run", list(argv)).params)


def test_plain_run_knows_every_flag_of_run_with_typers_default():
    assert {f.name: f.default for f in dataclasses.fields(RunFlags)} == typer_reads([])
    assert {p.opts[0] for p in RUN.params} == {
        f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(RunFlags)
    }


@pytest.mark.parametrize(
    "argv",
    [
        [],
        [
            "--data",
            "/var/lib/vaxelbox",
            "--log-level",
            "WARNING",
            "--log-format",
            "json",
            "--sip-rate-limit",
            "0",
        ],
        ["--board", "/etc/vaxelbox/board.yaml", "--site", "/etc/vaxelbox/site.toml", "--log-format", "json"],
        [
            "--lan",
            "127.0.0.1:5070",
            "--wan",
            "127.0.0.2:5072",
            "--cloud",
            "sip:127.0.0.3:5999;transport=tcp",
            "--http-port",
            "8080",
            "--https-port",
            "8443",
            "--coap-port",
            "5683",
            "--lan-tls-port",
            "5071",
        ],
        [
            "--https-cert",
            "chain.pem",
            "--https-key",
            "key.pem",
            "--fw-key",
            "fw.pub",
            "--sip-rate-limit",
            "12.5",
        ],
        ["--log-format", "human", "--data", "relative/dir"],
        ["--coap-port", "65535", "--http-port", "1", "--log-level", "debug"],  # the bounds, any case
        ["--log-level", "critical"],  # Python's highest level: only what stops the agent
    ],
)
def test_a_plain_run_reads_as_typer_reads_it(argv):
    flags = plain_run(["run", *argv])
    assert flags is not None
    assert dataclasses.asdict(flags) == typer_reads(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["phones"],
        [],
        ["run", "--help"],
        ["run", "--http-port"],
        ["run", "--http-port=8080"],
        ["run", "--http-port", "+8080"],
        ["run", "--http-port", "8_080"],
        ["run", "--http-port", "eighty"],
        ["run", "--sip-rate-limit", "1e3"],
        ["run", "--sip-rate-limit", "inf"],
        ["run", "--data", ""],
        ["run", "--data", "-x"],
        ["run", "--data", "a", "--data", "b"],
        ["run", "--log-format", "xml"],
        ["run", "--log-level", "bogus"],  # values run cannot start with: typer refuses them
        ["run", "--coap-port", "99999"],
        ["run", "--lan-tls-port", "70000"],
        ["run", "--http-port", "0"],
        ["run", "--unknown", "x"],
        ["run", "--", "--data"],
        ["--version", "run"],
    ],
)
def test_anything_else_goes_to_typer(argv):
    assert plain_run(argv) is None


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "vaxelbox", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_typer_still_answers_help_and_mistakes_of_run():
    helped = run_command("run", "--help")
    assert helped.returncode == 0
    assert "Usage: python -m vaxelbox run [OPTIONS]" in helped.stdout
    assert "--sip-rate-limit" in helped.stdout
    wrong = run_command("run", "--log-format", "xml")
    assert wrong.returncode == 2
    assert "Invalid value for --log-format: auto, human or json" in wrong.stderr
    typo = run_command("run", "--http-port", "eighty")
    assert typo.returncode == 2
    assert "Invalid value for '--http-port'" in typo.stderr


BAD_VALUES = {  # flag, value -> the reason typer gives after "Invalid value for FLAG: "
    ("--log-level", "bogus"): "bogus is not a level (DEBUG to CRITICAL)",
    ("--coap-port", "99999"): "99999 is not a port (1-65535)",
    ("--lan-tls-port", "70000"): "70000 is not a port (1-65535)",
    ("--http-port", "0"): "0 is not a port (1-65535)",
    ("--https-port", "65536"): "65536 is not a port (1-65535)",
    ("--sip-rate-limit", "nan"): "nan is not a rate >= 0 (0 = no limit)",
    ("--sip-rate-limit", "inf"): "inf is not a rate >= 0 (0 = no limit)",
    ("--sip-rate-limit", "-1"): "-1.0 is not a rate >= 0 (0 = no limit)",
}


def refused_run(tmp_path, *flag_words: str) -> subprocess.CompletedProcess[str]:
    """`python -m vaxelbox run` with `flag_words` after flags that would start an agent of its own
    on loopback; fails the test if it starts (it is still running after 20 s)."""
    lan, wan = free_port("127.0.0.1"), free_port("127.0.0.1")
    own = ["--data", str(tmp_path / "data"), "--lan", f"127.0.0.1:{lan}", "--wan", f"127.0.0.1:{wan}"]
    try:
        return subprocess.run(
            [sys.executable, "-m", "vaxelbox", "run", *own, *flag_words],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "COLUMNS": "80"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the agent started with {flag_words}")


@pytest.mark.parametrize(("flag", "value"), BAD_VALUES, ids=[" ".join(k) for k in BAD_VALUES])
@pytest.mark.parametrize("form", ["plain", "equals"])  # `--flag value` reads plain, `--flag=value` typer
def test_a_value_run_cannot_start_with_is_refused_in_one_line_exit_2(tmp_path, flag, value, form):
    words = [flag, value] if form == "plain" else [f"{flag}={value}"]
    result = refused_run(tmp_path, *words)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    said = [line for line in result.stderr.splitlines() if "Invalid value" in line]
    assert len(said) == 1, result.stderr
    assert f"Invalid value for {flag}: {BAD_VALUES[flag, value]}" in said[0]
    assert not (tmp_path / "data").exists(), "the agent began to start"
