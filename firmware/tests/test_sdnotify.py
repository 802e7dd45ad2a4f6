"""systemd's notify protocol, received on a real unix datagram socket as systemd would."""

import os
import socket

import pytest
from vaxelbox.agent.sdnotify import SystemdNotifier


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def test_ready_and_status_reach_the_socket(listener):
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).notify(READY=1, STATUS="site 'Demo' version 1")
    assert sock.recv(4096) == b"READY=1\nSTATUS=site 'Demo' version 1"


def test_abstract_socket_address():
    name = f"vaxelbox-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).notify(STOPPING=1)
        assert sock.recv(4096) == b"STOPPING=1"


def test_reloading_carries_monotonic_time(listener):
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).reloading()
    fields = dict(line.split("=") for line in sock.recv(4096).decode().splitlines())
    assert fields["RELOADING"] == "1"
    assert int(fields["MONOTONIC_USEC"]) > 0


def test_without_systemd_nothing_is_sent():
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.notify(READY=1)  # must not raise
    assert notifier.watchdog_interval() is None


def test_watchdog_interval_is_half_the_deadline_and_only_for_this_process(listener):
    _, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier(env).watchdog_interval() == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval() is None
