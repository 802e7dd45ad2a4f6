"""The first minute after `make run`: a summary a person can act on, commands they can reach, a
busy port named with the flag that moves it, and state kept inside the clone.

The agent runs as a person starts it: `.venv/bin/vaxelbox run` on a pseudo-terminal 80 columns
wide, from the clone, with a PATH that does not hold the virtual environment; the commands the
summary suggests are then typed into a shell the same way.
"""

import contextlib
import fcntl
import json
import os
import re
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest
from agent_process import AgentProcess, loopback_network
from vaxelbox.agent.options import RunOptions
from vaxelbox.store.database import DB_NAME

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the virtual environment's scripts
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"  # a fresh terminal: the venv is not activated
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY_END = "Ctrl-C stops the agent."


class Terminal:
    """A program on a pseudo-terminal (80x24), read as a person would see it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, start_new_session=True
        )
        os.close(slave)
        self._master = master
        self.screen = ""

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} within {timeout}s:\n{self.screen}"
            if select.select([self._master], [], [], remaining)[0]:
                try:
                    chunk = os.read(self._master, 65536)
                except OSError:  # EIO: the program has gone
                    chunk = b""
                assert chunk, f"the program ended before {text!r}:\n{self.screen}"
                self.screen += ANSI.sub("", chunk.decode(errors="replace").replace("\r\n", "\n"))
        return self.screen

    def close(self) -> None:
        """End the program (SIGTERM, then SIGKILL after 20 s) and reap it, whatever happened."""
        try:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        finally:
            os.close(self._master)


def ended(process: subprocess.Popen[str], group: bool = False) -> str:
    """SIGTERM to the process (or its process group), SIGKILL if it is not gone within 30 s; the rest
    of its output."""

    def send(sig: signal.Signals) -> None:
        if not group:
            process.send_signal(sig)  # nothing once it has been reaped
            return
        with contextlib.suppress(ProcessLookupError):  # the whole group has gone
            os.killpg(process.pid, sig)

    send(signal.SIGTERM)
    try:
        return process.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        return process.communicate(timeout=10)[0]


def summary_of(screen: str) -> list[str]:
    """The summary's lines: from "Vaxelbox ... is ready" to "Ctrl-C stops the agent."."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"Vaxelbox \S+ is ready", line))
    end = lines.index(SUMMARY_END, start)
    return lines[start : end + 1]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def isolated(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment with this test's own runtime directory: its agent's record for `vaxelbox
    phones` (vaxelbox.agent.runtime) stays there."""
    return {**os.environ, "VAXELBOX_RUNTIME_DIR": str(tmp_path / "run"), **env}


@pytest.fixture
def started(tmp_path) -> Iterator[tuple[Terminal, list[str], Path]]:
    """`make run`'s command on a terminal, in the clone, with the venv off PATH. The agent is ended
    whatever happens, also when it never shows its summary (a fixture's setup that fails has no
    teardown: two agents were left running that way)."""
    data, network = tmp_path / "data", loopback_network()
    argv = [str(BIN / "vaxelbox"), "run", "--data", str(data), *network]
    terminal = Terminal(argv, isolated(tmp_path, PATH=PLAIN_PATH, COLUMNS="80"))
    try:
        terminal.wait_for(SUMMARY_END, timeout=60)
        yield terminal, network, data
    finally:
        terminal.close()


def test_the_summary_says_where_it_listens_the_pairing_code_and_what_next(started):
    terminal, network, data = started
    summary = summary_of(terminal.screen)
    text = "\n".join(summary)
    assert all(len(line) <= 80 for line in summary if str(data) not in line), text  # pytest's paths are long
    http, https, coap = (flag(network, f) for f in ("--http-port", "--https-port", "--coap-port"))
    assert f"phones (SIP)      {flag(network, '--lan')} udp+tcp" in text
    assert f"cloud side (SIP)  {flag(network, '--wan')} udp+tcp" in text
    assert f"http://127.0.0.1:{http}  https://127.0.0.1:{https}" in text
    assert f"coap://127.0.0.1:{coap} udp+tcp" in text
    assert f"cloud PBX         {flag(network, '--cloud')} (probing)" in text
    code = subprocess.run(
        [str(BIN / "vaxelbox"), "pairing-code", "--data", str(data)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert f"pairing code      {code}" in text
    assert "  (or `. .venv/bin/activate` first, then plain vaxelctl and vaxelbox)" in summary


def test_the_next_steps_work_as_printed_in_another_terminal(started, tmp_path):
    """The reproduction: `vaxelbox phones` in another terminal was "command not found"."""
    terminal, _, data = started
    steps = [line.strip() for line in summary_of(terminal.screen) if line.startswith("  .venv/bin/")]
    assert [shlex.split(s)[:2] for s in steps] == [
        [".venv/bin/vaxelctl", "pair"],
        [".venv/bin/vaxelctl", "status"],
        [".venv/bin/vaxelbox", "phones"],
    ]
    assert steps[2].endswith(f"--data {data}")  # the agent's own state, not the user default
    shell_env = {**os.environ, "PATH": PLAIN_PATH, "VAXELCTL_CONFIG": str(tmp_path / "laptop")}
    outputs = []
    for step in steps:
        done = subprocess.run(
            ["bash", "-c", step], cwd=REPO, env=shell_env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (step, done.stdout, done.stderr)
        outputs.append(done.stdout)
    assert "Paired with" in outputs[0]
    assert "site version 1" in outputs[1]
    assert "Devices seen" in outputs[2]


def test_with_the_commands_on_path_the_steps_name_them_bare(tmp_path):
    argv = [str(BIN / "vaxelbox"), "run", "--data", str(tmp_path / "data"), *loopback_network()]
    terminal = Terminal(argv, isolated(tmp_path, PATH=f"{BIN}:{PLAIN_PATH}"))
    try:
        summary = summary_of(terminal.wait_for(SUMMARY_END))
    finally:
        terminal.close()
    assert any(line.startswith("  vaxelctl pair 127.0.0.1:") for line in summary), summary
    assert not any("activate" in line for line in summary)


def test_off_a_terminal_every_line_is_json_and_there_is_no_summary(tmp_path):
    argv = [str(BIN / "vaxelbox"), "run", "--data", str(tmp_path / "data"), *loopback_network()]
    agent = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=isolated(tmp_path)
    )
    try:
        lines = []
        for line in agent.stdout:
            lines.append(line)
            if '"agent ready"' in line:
                break
    finally:
        lines += ended(agent).splitlines()
    assert [json.loads(line)["event"] for line in lines if line.strip()]
    assert not any("is ready:" in line or SUMMARY_END in line for line in lines)


def hold(host: str, port: int) -> list[socket.socket]:
    """Take `host:port` over UDP and TCP, as another program would."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((host, port))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    return [tcp, udp]


def refusal(argv: list[str], tmp_path: Path) -> str:
    """Run an agent that cannot start: exit code 2 and exactly one `cannot start` event, whose
    reason this returns."""
    refused = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=REPO, env=isolated(tmp_path)
    )
    assert refused.returncode == 2, refused.stderr
    events = [e for e in map(json.loads, refused.stderr.splitlines()) if e["event"] == "cannot start"]
    assert len(events) == 1, events
    return events[0]["reason"]


def suggested(reason: str) -> str:
    """The flags a refusal suggests, the same for make run and vaxelbox run."""
    hint = re.search(r'; choose others: make run ARGS="([^"]+)", or vaxelbox run (.+)$', reason)
    assert hint, reason
    assert hint[1] == hint[2]
    return hint[1]


def agent_argv(tmp_path: Path, network: list[str]) -> list[str]:
    return [str(BIN / "vaxelbox"), "run", "--log-format", "json", "--data", str(tmp_path / "data"), *network]


@pytest.mark.parametrize(
    ("option", "purpose"),
    [
        ("--lan", "SIP for phones (LAN)"),
        ("--wan", "SIP for the cloud (WAN)"),
        ("--http-port", "provisioning HTTP"),
        ("--https-port", "provisioning HTTPS"),
        ("--coap-port", "management (CoAP)"),
    ],
)
def test_a_busy_port_is_named_with_the_flag_that_moves_it(tmp_path, option, purpose):
    network = loopback_network()
    value = flag(network, option)
    host, port = value.rsplit(":", 1) if ":" in value else ("127.0.0.1", value)
    held = hold(host, int(port))
    argv = agent_argv(tmp_path, network)
    try:
        reason = refusal(argv, tmp_path)
        assert reason.startswith(f"{purpose} {host}:{port} ("), reason
        assert suggested(reason).startswith(f"{option} ")
        # The suggestion works: the same command with the suggested flags added starts.
        moved = [*argv, *shlex.split(suggested(reason))]
        agent = subprocess.Popen(
            moved,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env=isolated(tmp_path),
        )
        try:
            ready = next((line for line in agent.stdout if '"agent ready"' in line), "")
        finally:
            ended(agent)
        assert ready, "the agent did not start with the suggested flags"
    finally:
        for sock in held:
            sock.close()


def test_a_port_held_over_udp_alone_is_named_with_udp_alone(tmp_path):
    """It said "(udp+tcp) is held" when another program held only the UDP port."""
    network = loopback_network()
    host, port = flag(network, "--lan").rsplit(":", 1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, int(port)))
    try:
        reason = refusal(agent_argv(tmp_path, network), tmp_path)
    finally:
        udp.close()
    assert reason.startswith(f"SIP for phones (LAN) {host}:{port} (udp) is held by another program"), reason


def test_held_provisioning_and_management_ports_are_named_first_in_one_event(tmp_path):
    """The reproduction: with 8080, 8443 and 5683 held the refusal began "cannot listen for SIP" (or
    for whichever service the agent bound first) and came as 3-5 separate `cannot start` events."""
    network = loopback_network()
    held = [sock for option in ("--http-port", "--https-port", "--coap-port")
            for sock in hold("127.0.0.1", int(flag(network, option)))]  # fmt: skip
    try:
        reason = refusal(agent_argv(tmp_path, network), tmp_path)
    finally:
        for sock in held:
            sock.close()
    http, https, coap = (flag(network, f) for f in ("--http-port", "--https-port", "--coap-port"))
    assert reason.startswith(f"provisioning HTTP 127.0.0.1:{http} (tcp) is held by another program"), reason
    assert f"so are provisioning HTTPS 127.0.0.1:{https} (tcp), management (CoAP) 127.0.0.1:{coap}" in reason
    assert "SIP" not in reason
    assert [word for word in suggested(reason).split() if word.startswith("--")] == [
        "--http-port",
        "--https-port",
        "--coap-port",
    ]


def test_a_second_agent_on_the_same_ports_names_them_all_in_one_event(tmp_path):
    """What a second `make run` meets: every port held by the first agent."""
    network = loopback_network()
    first = AgentProcess(tmp_path, "--data", str(tmp_path / "first"), *network)
    try:
        first.wait_notification("READY", "1", timeout=30)
        reason = refusal(agent_argv(tmp_path, network), tmp_path)
    finally:
        first.stop()
    assert reason.startswith(f"SIP for phones (LAN) {flag(network, '--lan')} (udp+tcp) is held"), reason
    for purpose in (
        "SIP over TLS for phones",
        "SIP for the cloud (WAN)",
        "provisioning HTTP",
        "provisioning HTTPS",
        "management (CoAP)",
    ):
        assert purpose in reason
    flags = [word for word in suggested(reason).split() if word.startswith("--")]
    assert flags == ["--lan", "--lan-tls-port", "--wan", "--http-port", "--https-port", "--coap-port"]


def test_a_second_agent_on_the_same_data_directory_is_refused_and_the_first_goes_on(tmp_path):
    """The reproduction: a second `make run`, refused for its ports, was started again with the
    ports the refusal suggested and then ran beside the first on the same .vaxelbox-data, both
    applying the site. Now it is refused before it touches the store, and names the first."""
    data = tmp_path / "data"
    first = AgentProcess(tmp_path, "--data", str(data))
    try:
        first.wait_notification("READY", "1", timeout=30)
        reason = refusal(agent_argv(tmp_path, loopback_network()), tmp_path)  # its own free ports
        (tmp_path / "link").symlink_to(data)  # the same directory by another name: the same refusal
        linked = agent_argv(tmp_path, loopback_network())
        linked[linked.index(str(data))] = str(tmp_path / "link")
        assert refusal(linked, tmp_path).startswith(
            f"{data} is in use by another agent (pid {first.process.pid})"
        )
        assert first.process.poll() is None
    finally:
        first.stop()
    assert reason == (
        f"{data} is in use by another agent (pid {first.process.pid}): one agent per data directory; "
        "stop that one first, or use another directory (--data DIR)"
    )
    again = AgentProcess(tmp_path, "--data", str(data))  # the lock went with the first
    try:
        again.wait_notification("READY", "1", timeout=30)
    finally:
        again.stop()


def test_make_clean_leaves_the_data_of_a_running_agent(tmp_path):
    """`make clean` under a running `make run` removed its state and venv; the agent went on without
    them (500 on provisioning, a traceback at Ctrl-C). Run in tmp_path, so what it removes is there."""
    data = tmp_path / "data"
    clean = ["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(tmp_path), "clean", f"DATA={data}"]
    agent = AgentProcess(tmp_path, "--data", str(data))
    try:
        agent.wait_notification("READY", "1", timeout=30)
        refused = subprocess.run(clean, capture_output=True, text=True, timeout=60)
    finally:
        agent.stop()
    assert refused.returncode != 0
    assert f"make clean: an agent is running on {data} (make run?): stop it first" in refused.stderr
    assert (data / DB_NAME).is_file()
    subprocess.run(clean, capture_output=True, text=True, timeout=60, check=True)
    assert not data.exists()


def make_dry_run(*args: str) -> str:
    return subprocess.run(
        ["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_make_run_keeps_its_state_in_the_clone_and_make_clean_removes_it():
    """The reproduction: every clone's `make run` shared ~/.local/state/vaxelbox, which outlived
    `make clean`."""
    run_line = next(line for line in make_dry_run("run").splitlines() if "vaxelbox run" in line)
    assert f"--data {REPO}/.vaxelbox-data" in run_line
    clean_line = next(line for line in make_dry_run("clean").splitlines() if line.startswith("rm -rf"))
    assert ".vaxelbox-data" in clean_line.split()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".vaxelbox-data/store.db"], cwd=REPO)
    assert ignored.returncode == 0
    # `vaxelbox run` without --data keeps the platform's default.
    assert RunOptions.resolve().data_dir == Path(platformdirs.user_state_dir("vaxelbox"))


def test_a_data_dir_in_args_wins_over_make_runs(tmp_path):
    args = shlex.join(["--data", str(tmp_path / "mine"), "--log-format", "json", *loopback_network()])
    make = subprocess.Popen(
        ["make", "-s", "run", f"ARGS={args}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []  # what make printed up to the ready line: the failure shows why none came
    try:
        ready = next((line for line in make.stdout if seen.append(line) or '"agent ready"' in line), "")
    finally:
        seen.append(ended(make, group=True))
    assert ready, "".join(seen)[-3000:]
    assert json.loads(ready)["data_dir"] == str(tmp_path / "mine")


def test_an_unusable_site_ca_is_one_cannot_start_event_naming_the_file(tmp_path):
    """A certificate must be made (first start) but the site CA in <data>/pki cannot be read: exit 2
    and one `cannot start` event naming the file; it was a PkiError traceback quoting the child's."""
    pki = tmp_path / "data" / "pki"
    pki.mkdir(parents=True)
    (pki / "ca.key").write_text("garbage\n")
    (pki / "ca.pem").write_text("garbage\n")
    reason = refusal(agent_argv(tmp_path, loopback_network()), tmp_path)
    assert str(pki / "ca.key") in reason, reason
    assert "^" not in reason, reason  # no source line of the child's traceback
    assert "Traceback" not in reason, reason
