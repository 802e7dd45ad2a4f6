"""Logs are structured (JSON off a terminal), and secrets never reach them by any route."""

import io
import json
import logging

import pytest
from vaxelbox.agent.logs import Redactor, configure_logging, get_logger
from vaxelbox.site import demo_site

SECRET = "demo-pw-anna-4f9c"


@pytest.fixture
def captured():
    redactor = Redactor()
    redactor.set_secrets(demo_site().secrets())
    stream = io.StringIO()
    configure_logging(redactor, "DEBUG", "json", stream)
    yield stream
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_event_level_logger_and_fields(captured):
    get_logger("vaxelbox.test").info("phone registered", aor="sip:101@demo", expires=3600)
    (line,) = lines(captured)
    assert line["event"] == "phone registered"
    assert (line["level"], line["logger"], line["aor"], line["expires"]) == (
        "info",
        "vaxelbox.test",
        "sip:101@demo",
        3600,
    )
    assert line["timestamp"].endswith("Z")


def test_known_secret_values_are_redacted_anywhere(captured):
    log = get_logger("vaxelbox.test")
    log.info(f"REGISTER failed for user with {SECRET}", detail={"nested": [f"x{SECRET}y"]})
    text = captured.getvalue()
    assert SECRET not in text
    assert "x***y" in text


def test_fields_named_like_secrets_are_redacted(captured):
    get_logger("vaxelbox.test").info("pairing", oscore_secret="00112233", password="whatever", user="anna")
    (line,) = lines(captured)
    assert (line["oscore_secret"], line["password"], line["user"]) == ("***", "***", "anna")


def test_digest_response_is_redacted(captured):
    header = 'Authorization: Digest username="101", realm="demo", nonce="abc", response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b"'
    get_logger("vaxelbox.test").debug("sent", message=header)
    text = captured.getvalue()
    assert "6629fae4" not in text
    assert "0a4f113b" not in text
    assert 'username=\\"101\\"' in text


def test_library_logs_through_stdlib_are_redacted_too(captured):
    logging.getLogger("aiocoap.somewhere").warning("credentials %s loaded", SECRET)
    (line,) = lines(captured)
    assert line["event"] == "credentials *** loaded"
    assert line["logger"] == "aiocoap.somewhere"


def test_tracebacks_are_redacted(captured):
    try:
        raise ValueError(f"bad password {SECRET}")
    except ValueError:
        get_logger("vaxelbox.test").exception("crashed")
    text = captured.getvalue()
    assert "ValueError: bad password ***" in text
    assert SECRET not in text


def test_human_format_on_request():
    stream = io.StringIO()
    configure_logging(Redactor(), "INFO", "human", stream)
    get_logger("vaxelbox.test").info("agent ready", lan="127.0.0.1:5060")
    logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "agent ready" in text
    assert "lan=127.0.0.1:5060" in text
    assert not text.startswith("{")
