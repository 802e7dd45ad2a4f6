"""Library chatter is debug detail; our own lines and every library warning keep their level."""

import io
import json
import logging

import pytest
from vaxelbox.agent.logs import Redactor, audit, configure_logging, get_logger


@pytest.fixture
def configure():
    # zeroconf sets its own logger to WARNING when imported (another test may have imported it):
    # undo that here, so the test sees what our configuration does, whatever ran before.
    zeroconf = logging.getLogger("zeroconf")
    level = zeroconf.level
    zeroconf.setLevel(logging.NOTSET)

    def at(level: str) -> io.StringIO:
        stream = io.StringIO()
        configure_logging(Redactor(), level, "json", stream)
        return stream

    yield at
    logging.getLogger().handlers.clear()
    zeroconf.setLevel(level)


def lines(stream: io.StringIO) -> list[tuple[str, str, str]]:
    return [(e["logger"], e["level"], e["event"]) for e in map(json.loads, stream.getvalue().splitlines())]


def chatter() -> None:
    logging.getLogger("coap-server.oscore-site").info("Render request raised a renderable error")
    logging.getLogger("coap-server").info("Received Release")
    logging.getLogger("zeroconf").info("announcing")
    logging.getLogger("asyncio").warning("Task was destroyed but it is pending!")
    get_logger("vaxelbox.agent").info("agent ready")
    get_logger("phoneprov").info("device enrolled")


def test_at_info_library_info_lines_are_gone_and_warnings_stay(configure):
    stream = configure("INFO")
    chatter()
    assert lines(stream) == [
        ("asyncio", "warning", "Task was destroyed but it is pending!"),
        ("vaxelbox.agent", "info", "agent ready"),
        ("phoneprov", "info", "device enrolled"),
    ]


def test_at_debug_library_info_lines_show_as_debug(configure):
    stream = configure("DEBUG")
    chatter()
    assert lines(stream)[:3] == [
        ("coap-server.oscore-site", "debug", "Render request raised a renderable error"),
        ("coap-server", "debug", "Received Release"),
        ("zeroconf", "debug", "announcing"),
    ]


def test_the_ring_installers_read_is_filtered_the_same_way(configure):
    stream = io.StringIO()
    ring = configure_logging(Redactor(), "INFO", "json", stream)
    chatter()
    assert [r["event"] for r in ring.records] == [
        "Task was destroyed but it is pending!",
        "agent ready",
        "device enrolled",
    ]


def test_an_audit_line_names_who_what_and_result(configure):
    stream = configure("INFO")
    audit("site-push", "ok", "0a1b2c3d", "Lisa", site_version=4)
    (line,) = map(json.loads, stream.getvalue().splitlines())
    assert {
        k: line[k] for k in ("event", "action", "installer", "installer_name", "result", "site_version")
    } == {
        "event": "audit",
        "action": "site-push",
        "installer": "0a1b2c3d",
        "installer_name": "Lisa",
        "result": "ok",
        "site_version": 4,
    }
    assert line["timestamp"]
