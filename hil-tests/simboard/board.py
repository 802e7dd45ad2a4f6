"""The simulated board while it is powered: its serial console and its init.

On power-on it opens a pty (RUN_DIR/console points at the end a console
adapter would plug into), prints a boot log, starts the agent the way a
board's init does (inside the `edge` namespace, logging to RUN_DIR/log, from
the A/B slot the selector names, watching a trial: simboard.slots), and
then plays getty: a login prompt, and for `root` an interactive shell in the
`edge` namespace, relayed byte for byte like a UART. Everything the console
shows is also kept in RUN_DIR/console.log for the report.
"""

import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from simboard import slots
from simboard.topology import BOARD_NAMESPACE, RUN_DIR, WAN, in_namespace

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "root@simboard:~# "
BOOT_LOG = [
    "U-Boot SPL 2024.01 (simulated)",
    "Starting kernel ...",
    "[    0.000000] Linux version {kernel} (vaxelbox simboard)",
    "[    0.412000] Serial: 8250/16550 driver, console on simulated UART",
    "[    1.020000] veth: lan0 and wan0 registered",
    "[    2.300000] Run /sbin/init as init process",
    "Starting vaxelbox agent ...",
]


class Board:
    def __init__(self) -> None:
        self.master, self._slave = pty.openpty()
        self.slave_name = os.ttyname(self._slave)
        # A UART neither echoes nor translates: raw, like the adapter's end. The board keeps the
        # end open (never reading it), so output waits there for whoever connects, as on a FIFO.
        tty.setraw(self._slave)
        self.transcript = (RUN_DIR / "console.log").open("ab", buffering=0)
        self.agent: subprocess.Popen[bytes] | None = None
        self.shell_pid: int | None = None
        self.running = True

    def write(self, text: str) -> None:
        data = text.replace("\n", "\r\n").encode()
        os.write(self.master, data)
        self.transcript.write(data)

    def power_on(self) -> None:
        link = RUN_DIR / "console"
        link.unlink(missing_ok=True)
        link.symlink_to(self.slave_name)
        for line in BOOT_LOG:
            self.write(line.format(kernel=os.uname().release) + "\n")
            time.sleep(0.05)
        self.agent = self.start_agent()
        threading.Thread(target=self.watch_trial, daemon=True).start()
        self.write("Vaxelbox simulated board, console ttyS0\n")

    def watch_trial(self) -> None:
        """The init's side of an update: restart into a trial, roll back a crash or a missed deadline."""
        while self.running:
            time.sleep(0.5)
            agent = self.agent
            if agent is None or not self.running:
                continue
            status = agent.poll()
            if status is not None and slots.after_exit(status) and self.running:
                self.agent = self.start_agent()
            elif status is None and slots.past_deadline():
                agent.terminate()
                agent.send_signal(signal.SIGCONT)  # a hung (stopped) agent must see it too
                try:
                    agent.wait(10)
                except subprocess.TimeoutExpired:
                    agent.kill()
                self.agent = self.start_agent()

    def start_agent(self) -> subprocess.Popen[bytes]:
        (RUN_DIR / "log").mkdir(exist_ok=True)
        log = (RUN_DIR / "log" / "agent.log").open("ab")
        command = [
            sys.executable, "-m", "vaxelbox", "run", "--board", str(ROOT / "boards" / "simboard.yaml"),
            "--site", str(RUN_DIR / "site.toml"), "--cloud", f"sip:{WAN.far_address}:5060",
            "--log-format", "json",
        ]  # fmt: skip
        slot = slots.boot()  # the slot the selector names: a trial's one try, else the primary
        environment = {**os.environ, "PYTHONPATH": str(slot)}
        agent = subprocess.Popen(
            in_namespace(BOARD_NAMESPACE, *command), stdout=log, stderr=subprocess.STDOUT, env=environment
        )
        (RUN_DIR / "agent.pid").write_text(str(agent.pid))
        return agent

    def serve_console(self) -> None:
        while self.running:
            self.write("\nsimboard login: ")
            user = self.read_line()
            if user is None:
                return
            if not user.strip():
                continue  # a bare Enter: getty just asks again
            if user.strip() != "root":
                self.write("\nLogin incorrect\n")
                continue
            self.shell()

    def read_line(self) -> str | None:
        line = b""
        while self.running:
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 1024)
            except OSError:  # nobody has the console open right now
                time.sleep(0.2)
                continue
            self.transcript.write(chunk)
            os.write(self.master, chunk.replace(b"\r", b"\r\n"))  # getty echoes what is typed
            line += chunk
            if b"\r" in line or b"\n" in line:
                return line.decode(errors="replace").strip()
        return None

    def shell(self) -> None:
        """An interactive bash in the board's namespace, relayed to the console."""
        environment = {
            "HOME": "/root", "TERM": "dumb", "PS1": PROMPT,
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "VAXELBOX_BOARD": str(ROOT / "boards" / "simboard.yaml"),
        }  # fmt: skip
        pid, shell_fd = pty.fork()
        if pid == 0:
            argv = in_namespace(BOARD_NAMESPACE, "bash", "--norc", "--noprofile", "-i")
            os.execvpe(argv[0], argv, environment)
        self.shell_pid = pid
        while self.running:
            ready, _, _ = select.select([self.master, shell_fd], [], [], 0.5)
            try:
                if shell_fd in ready:
                    data = os.read(shell_fd, 4096)
                    os.write(self.master, data)
                    self.transcript.write(data)
                if self.master in ready:
                    os.write(shell_fd, os.read(self.master, 4096))
            except OSError:  # the shell exited (logout)
                break
        os.close(shell_fd)
        self.shell_pid = None

    def power_off(self, *_: object) -> None:
        self.running = False
        if self.shell_pid is not None:
            os.kill(self.shell_pid, signal.SIGKILL)
        if self.agent and self.agent.poll() is None:
            self.agent.terminate()
            self.agent.send_signal(signal.SIGCONT)  # a stopped (hung) agent must see it too
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        (RUN_DIR / "console").unlink(missing_ok=True)
        (RUN_DIR / "agent.pid").unlink(missing_ok=True)


def main() -> None:
    board = Board()
    signal.signal(signal.SIGTERM, board.power_off)
    board.power_on()
    try:
        board.serve_console()
    finally:
        board.power_off()


if __name__ == "__main__":
    main()
