"""Fuzzing: mutated torture messages never make the parser raise anything but SipParseError.

Hypothesis mutates the RFC 4475/5118 messages (flip, insert, delete, duplicate,
truncate, splice bytes; swap CRLFs) for a bounded number of examples. A
transport turns SipParseError into a 400 or a drop; any other exception would
escape into the transport and is a bug.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sip_corpus import all_messages
from vaxelbox.sip.errors import SipParseError
from vaxelbox.sip.message import Request, Response, parse_message

MESSAGES = all_messages()
INTERESTING = [
    b"\r\n",
    b"\r\n ",
    b";",
    b",",
    b":",
    b"<",
    b">",
    b'"',
    b"\\",
    b"[",
    b"]",
    b"%",
    b"@",
    b"\x00",
    b"\xff",
    b" ",
    b"=",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(MESSAGES)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "splice"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif action == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif action == "truncate":
            del data[at:]
        else:
            other = draw(st.sampled_from(MESSAGES))
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_parser_only_ever_raises_parse_errors(data):
    result = verdict(data)
    if isinstance(result, SipParseError):
        assert result.reason
        assert result.status in (400, 505)
    else:
        verdict(result.to_bytes())  # whatever is accepted can be written out and read back


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    verdict(data)


def verdict(data: bytes) -> Request | Response | SipParseError:
    """The parsed message or the parse error; any other exception fails the test."""
    try:
        return parse_message(data)
    except SipParseError as error:
        return error
