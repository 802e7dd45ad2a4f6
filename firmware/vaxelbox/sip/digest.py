"""Digest authentication, server side, sans-I/O: RFC 7616 (HTTP), RFC 3261 §22 and RFC 8760 (SIP).

One authenticator per realm. It writes challenges (one per algorithm, the
strongest first, qop="auth") and judges the credentials a client sends back
for one request. Nothing is stored per challenge: a nonce is a timestamp and
a random salt signed with a per-process key (HMAC-SHA-256), so a restart
costs each phone one more challenge.

Decisions, each a deliberate reading of the RFCs:

- A nonce with a bad signature (tampered, foreign, or signed by an earlier
  process) is a plain failure, never `stale`: stale=true tells a client to
  retry silently with the same password, which is only right when the digest
  proves the password. A nonce of ours that is too old (or from the future,
  after the clock stepped back) with a correct digest is `stale`.
- Only what was offered is accepted: an algorithm or qop not in the
  challenge (MD5-sess, SHA-512-256, auth-int, userhash) is a failure. A
  missing algorithm means MD5 (RFC 7616 §3.4). Credentials without qop
  (RFC 2069) pass only where `allow_rfc2069` says so (old HTTP firmware).
- Replays: the (nonce, nc) pairs of accepted credentials are remembered in a
  bounded LRU (`replay_memory` nonces, each with its nc values). Re-using a
  pair is refused as `stale`: the sender gets a fresh nonce, which only the
  password holder can answer. Reordered requests (nc 3 before nc 2) pass, as
  only an exact repeat is a replay. A nonce pushed out of the LRU could be
  replayed until it expires; the LRU holds far more nonces than an office
  uses in one lifetime, and only successful requests add to it.
- An unknown user costs the same hashing as a wrong password, and both give
  the same verdict: a client cannot tell which users exist.

`Verdict.reason` says why a check failed, for logs; it never holds a secret.

The client side is `authorization` (with `answerable` to pick a challenge):
the appliance answers the cloud's challenges itself when it registers phones
on their behalf after failback (`edge/failback.py`).
"""

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.uri import SipUri, Uri, parse_uri

HashFunction = Callable[[bytes], "hashlib._Hash"]
PasswordLookup = Callable[[str], str | None]  # username -> password, None for an unknown user

HASHES: dict[str, HashFunction] = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
NONCE_LIFETIME = 300.0  # seconds
REPLAY_MEMORY = 4096  # nonces whose nc values are remembered
_NC_PER_NONCE = 256  # nc values remembered per nonce, oldest forgotten first
_DEFAULT_PORTS = {"sip": 5060, "sips": 5061}
_PARAM = re.compile(
    r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))[ \t]*'
)
_SCHEME = re.compile(r"\s*digest\s+", re.I)
_ESCAPE = re.compile(r"\\(.)", re.S)
_NC = re.compile(r"[0-9A-Fa-f]{8}")
_DUMMY_PASSWORD = secrets.token_hex(16)  # hashed for unknown users, so they take as long as known ones


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking credentials.

    `username` is the authenticated user, or None. `stale` is True when the
    password was right but the nonce no longer is: challenge again with
    stale=true. `reason` (empty on success) names the failed check, for logs:
    no-credentials, malformed, unsupported, realm, uri, nonce, credentials,
    expired, replay.
    """

    username: str | None
    stale: bool = False
    reason: str = ""


def parse_credentials(value: str) -> dict[str, str] | None:
    """`Digest name=token, name="quoted"` -> {lower-case name: value with escapes removed}.

    None when the scheme is not Digest, a parameter repeats, or the syntax is
    broken (RFC 7616 §3.4, RFC 3261 §25.1 quoted-string).
    """
    head = _SCHEME.match(value)
    if head is None:
        return None
    rest = value[head.end() :].rstrip()
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        if rest[position] in ", \t":
            position += 1  # empty list elements are allowed (RFC 7230 §7)
            continue
        match = _PARAM.match(rest, position)
        if match is None:
            return None
        name = match[1].lower()
        if name in params:
            return None
        params[name] = _ESCAPE.sub(r"\1", match[2]) if match[2] is not None else match[3]
        position = match.end()
        if position < len(rest) and rest[position] != ",":
            return None
    return params


def response_digest(
    hash_function: HashFunction,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The `response` value of RFC 7616 §3.4.1 (qop "auth"), or RFC 2069's when `qop` is None."""

    def h(text: str) -> str:
        return hash_function(text.encode()).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


class DigestAuthenticator:
    """Challenges and verdicts for one realm; `uri` must equal the request target exactly."""

    def __init__(
        self,
        realm: str,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        lifetime: float = NONCE_LIFETIME,
        clock: Callable[[], float] = time.time,
        key: bytes | None = None,
        allow_rfc2069: bool = False,
        replay_memory: int = REPLAY_MEMORY,
    ) -> None:
        """`algorithms` in order of preference (each a key of HASHES); `lifetime` in seconds of
        `clock`; `key` signs nonces (random per process unless given); `replay_memory` 0 turns
        replay detection off. Raises ValueError for an unknown algorithm."""
        unknown = [a for a in algorithms if a not in HASHES]
        if unknown or not algorithms:
            raise ValueError(f"unsupported digest algorithms: {unknown or 'none given'}")
        self.realm = realm
        self.algorithms = tuple(algorithms)
        self.lifetime = lifetime
        self.allow_rfc2069 = allow_rfc2069
        self._clock = clock
        self._key = key or secrets.token_bytes(32)
        self._replay_memory = replay_memory
        self._seen: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} realm={self.realm!r} algorithms={self.algorithms}>"

    def challenges(self, stale: bool = False) -> list[str]:
        """Values for WWW-Authenticate (or Proxy-Authenticate), one per algorithm, preferred first
        (RFC 7616 §3.7, RFC 8760 §2.4). Each has its own nonce."""
        extra = ", stale=true" if stale else ""
        return [
            f'Digest realm="{_quote(self.realm)}", qop="auth", algorithm={algorithm}, '
            f'nonce="{self._nonce()}"{extra}'
            for algorithm in self.algorithms
        ]

    def verify(
        self,
        method: str,
        uri: str | Uri,
        authorization: str | Sequence[str] | None,
        password_of: PasswordLookup,
    ) -> Verdict:
        """Judge the Authorization (or Proxy-Authorization) values sent with `method uri`.

        Of several values, the first for this realm counts (SIP sends one per
        realm, RFC 3261 §22.4). `password_of(username)` is None for an unknown user.
        """
        values = [authorization] if isinstance(authorization, str) else list(authorization or [])
        if not values:
            return Verdict(None, reason="no-credentials")
        parsed = [parse_credentials(v) for v in values]
        ours = [p for p in parsed if p is not None and p.get("realm") == self.realm]
        if not ours:
            malformed = any(p is None for p in parsed)
            return Verdict(None, reason="malformed" if malformed else "realm")
        return self._judge(method, str(uri), ours[0], password_of)

    def uri_matches(self, given: str, request_uri: str) -> bool:
        """Whether the credentials' `uri` names this request's target."""
        return given == request_uri

    # -- checks ---------------------------------------------------------------------------------

    def _judge(
        self, method: str, request_uri: str, params: dict[str, str], password_of: PasswordLookup
    ) -> Verdict:
        username, nonce, uri, response = (params.get(k) for k in ("username", "nonce", "uri", "response"))
        if not (username and nonce and uri and response):
            return Verdict(None, reason="malformed")
        if refusal := self._refuse_unoffered(params):
            return Verdict(None, reason=refusal)
        if not self.uri_matches(uri, request_uri):
            return Verdict(None, reason="uri")
        stamp = self._nonce_stamp(nonce)
        if stamp is None:
            return Verdict(None, reason="nonce")
        password = password_of(username)
        hash_function = HASHES[params.get("algorithm", "MD5").upper()]
        qop = params.get("qop")
        expected = response_digest(
            hash_function, username, self.realm, password if password is not None else _DUMMY_PASSWORD,
            method, uri, nonce, qop, params.get("nc", ""), params.get("cnonce", ""),
        )  # fmt: skip
        if not hmac.compare_digest(expected, response.lower()) or password is None:
            return Verdict(None, reason="credentials")
        if not 0 <= self._clock() - stamp <= self.lifetime:
            return Verdict(None, stale=True, reason="expired")
        if qop is not None and not self._first_use(nonce, params["nc"]):
            return Verdict(None, stale=True, reason="replay")
        return Verdict(username)

    def _refuse_unoffered(self, params: dict[str, str]) -> str | None:
        """Why the credentials use something the challenge did not offer, or None."""
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms or params.get("userhash", "false").lower() != "false":
            return "unsupported"
        qop = params.get("qop")
        if qop is None:
            return None if self.allow_rfc2069 else "unsupported"
        if qop != "auth":
            return "unsupported"
        if not _NC.fullmatch(params.get("nc", "")) or not params.get("cnonce"):
            return "malformed"
        return None

    # -- nonces ---------------------------------------------------------------------------------

    def _nonce(self) -> str:
        body = f"{int(self._clock()):x}.{secrets.token_hex(6)}"
        return f"{body}.{self._sign(body)}"

    def _nonce_stamp(self, nonce: str) -> int | None:
        """The issue time of a nonce we signed, or None for any other string."""
        body, _, signature = nonce.rpartition(".")
        stamp, dot, _salt = body.partition(".")
        if not dot or not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            return int(stamp, 16)
        except ValueError:
            return None

    def _sign(self, body: str) -> str:
        # The realm is signed too: a nonce from one realm's challenge is no good in another's.
        return hmac.new(self._key, f"{self.realm}\n{body}".encode(), hashlib.sha256).hexdigest()[:32]

    def _first_use(self, nonce: str, nc: str) -> bool:
        """Record (nonce, nc); False if it was seen before (a replay)."""
        if self._replay_memory <= 0:
            return True
        counts = self._seen.pop(nonce, None) or OrderedDict()
        self._seen[nonce] = counts  # most recently used last
        if len(self._seen) > self._replay_memory:
            self._seen.popitem(last=False)
        nc = nc.lower()
        if nc in counts:
            return False
        counts[nc] = None
        if len(counts) > _NC_PER_NONCE:
            counts.popitem(last=False)
        return True


class SipDigest(DigestAuthenticator):
    """Digest for SIP (RFC 3261 §22, RFC 8760): SHA-256 and MD5, qop="auth", replay detection on.

    The credentials' `uri` must name the Request-URI (RFC 3261 §22.4). Phones
    copy the Request-URI, but not always byte for byte, so the match is loose:
    the same text passes; otherwise both must parse as URIs with the same
    scheme, user (unescaped), host (case-insensitive) and port (absent = 5060,
    or 5061 for sips), and URI parameters are ignored. Other schemes compare
    case-insensitively as text.
    """

    def uri_matches(self, given: str, request_uri: str) -> bool:
        return given == request_uri or _same_target(given, request_uri)


def _same_target(given: str, request_uri: str) -> bool:
    try:
        a, b = parse_uri(given), parse_uri(request_uri)
    except SipSyntaxError:
        return False
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        return _target(a) == _target(b)
    if isinstance(a, SipUri) or isinstance(b, SipUri):
        return False
    return str(a).lower() == str(b).lower()


def _target(uri: SipUri) -> tuple[str, str, str, int | None]:
    return uri.scheme, unquote(uri.user or ""), uri.host.lower(), uri.port or _DEFAULT_PORTS.get(uri.scheme)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# -- client side ------------------------------------------------------------------------------------


def answerable(challenges: Sequence[str]) -> str | None:
    """The first challenge (WWW-Authenticate or Proxy-Authenticate value) that `authorization` can
    answer, or None. The server lists its preferred algorithm first (RFC 8760 §2.4), so the first
    one we speak wins."""
    for challenge in challenges:
        params = parse_credentials(challenge)
        if params is not None and _client_terms(params) is not None:
            return challenge
    return None


def authorization(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization (or Proxy-Authorization) value answering one Digest challenge.

    `challenge` is one WWW-Authenticate / Proxy-Authenticate value; `uri` is
    the Request-URI as sent. With qop="auth" offered (alone or beside
    auth-int) the answer carries qop=auth, `nc` (1 for a fresh nonce, one
    more for each reuse of it) and `cnonce` (random unless given, for test
    vectors); without qop it is RFC 2069's. `opaque` is echoed. Raises
    ValueError for a challenge that is not Digest, lacks realm or nonce, or
    asks for an algorithm (MD5-sess, SHA-512-256, ...) or qop (auth-int
    only) that we do not speak.
    """
    params = parse_credentials(challenge)
    if params is None:
        raise ValueError("not a Digest challenge")
    terms = _client_terms(params)
    if terms is None:
        raise ValueError(
            f"cannot answer a challenge with algorithm={params.get('algorithm', 'MD5')} "
            f"qop={params.get('qop', '-')}, realm and nonce {'present' if params.get('nonce') else 'missing'}"
        )
    algorithm, qop = terms
    realm, nonce = params["realm"], params["nonce"]
    count = f"{nc:08x}"
    cnonce = cnonce if cnonce is not None else secrets.token_hex(8)
    response = response_digest(
        HASHES[algorithm], username, realm, password, method, uri, nonce, qop, count, cnonce
    )
    parts = [
        f'username="{_quote(username)}"', f'realm="{_quote(realm)}"', f'nonce="{_quote(nonce)}"',
        f'uri="{_quote(uri)}"', f'response="{response}"', f"algorithm={algorithm}",
    ]  # fmt: skip
    if qop is not None:
        parts += [f'cnonce="{_quote(cnonce)}"', f"qop={qop}", f"nc={count}"]
    if "opaque" in params:
        parts.append(f'opaque="{_quote(params["opaque"])}"')
    return "Digest " + ", ".join(parts)


def _client_terms(params: dict[str, str]) -> tuple[str, str | None] | None:
    """(algorithm, qop) to answer a parsed challenge with, or None when we cannot answer it."""
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in HASHES or not params.get("realm") or not params.get("nonce"):
        return None
    offered = params.get("qop")
    if offered is None:
        return algorithm, None
    if "auth" not in [q.strip().lower() for q in offered.split(",")]:
        return None
    return algorithm, "auth"
