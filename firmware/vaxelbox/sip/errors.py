"""What goes wrong when a SIP message is malformed, and what the sender should be told."""


class SipSyntaxError(ValueError):
    """A malformed piece of a message (a URI, a header value). Becomes a 400 for a request."""


class SipParseError(ValueError):
    """A message that cannot be accepted.

    A request gets `status` (400, or 505 for an unknown SIP version) with
    `reason`; a response is dropped (`is_request` False), as RFC 3261 §16.7
    and RFC 4475 ask.
    """

    def __init__(self, reason: str, *, is_request: bool, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.is_request = is_request
        self.status = status


class LocalProtocolError(RuntimeError):
    """Our own misuse of the protocol machinery (as h11 has it): a response where the transaction
    can no longer send one, a second final response. A bug here, never the peer's fault: raised,
    not swallowed, so it is seen (the peer's errors stay counted and answered)."""
