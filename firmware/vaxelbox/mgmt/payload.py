"""Request and response bodies: CBOR by default, JSON when asked for; errors a human can read."""

import json
from typing import Any

import cbor2
from aiocoap import Code, Message, error
from aiocoap.numbers import ContentFormat

CBOR = ContentFormat.CBOR
JSON = ContentFormat.JSON
TEXT = ContentFormat.TEXT


class PayloadError(error.ConstructionRenderableError):
    """4.00 with a reason in plain text: what was wrong with the request body."""

    code = Code.BAD_REQUEST

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def to_message(self) -> Message:
        return Message(code=self.code, payload=self.message.encode(), content_format=TEXT)


class Forbidden(PayloadError):
    code = Code.UNAUTHORIZED


class Conflict(PayloadError):
    code = Code.PRECONDITION_FAILED


def decode(request: Message) -> Any:
    """The request body as data, whichever of CBOR or JSON it came in."""
    if not request.payload:
        raise PayloadError("the request needs a body (CBOR or JSON)")
    try:
        if request.opt.content_format == JSON:
            return json.loads(request.payload)
        return cbor2.loads(request.payload)
    except (ValueError, cbor2.CBORDecodeError) as exc:
        raise PayloadError(f"the body does not parse: {exc}") from None


def field(data: Any, name: str, kind: type, *, required: bool = True) -> Any:
    """`data[name]` checked to be a `kind`, or a 4.00 naming the field."""
    if not isinstance(data, dict):
        raise PayloadError("the body must be a map")
    if name not in data:
        if required:
            raise PayloadError(f"missing field {name!r}")
        return None
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PayloadError(f"field {name!r} must be {getattr(kind, '__name__', kind)}")
    return value


def reply(request: Message, data: Any, code: Code = Code.CONTENT, **options: Any) -> Message:
    """`data` in the format the request accepts (CBOR unless it asked for JSON)."""
    if request.opt.accept == JSON:
        return Message(code=code, payload=json.dumps(data).encode(), content_format=JSON, **options)
    return Message(code=code, payload=cbor2.dumps(data), content_format=CBOR, **options)
