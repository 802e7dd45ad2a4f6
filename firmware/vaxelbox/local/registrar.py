"""The local registrar and call authentication of survivable mode (RFC 3261 §10.3, §22). Pure.

While the cloud PBX is unreachable the appliance answers phones' REGISTERs
itself and challenges their calls, with the SIP credentials of the site's
users (`user.sip.user` / `user.sip.password`, the ones provisioned to the
phones). Bindings go to the same mirror the online edge fills, so routing
finds one set of contacts whichever way a phone registered.

Decisions:

- No valid credentials, no binding, ever. Every failure gets a fresh 401 (or
  407) challenge, never a 403 after repeated failures: a phone with a wrong
  password stops by itself after one retry with the same credentials, and
  counting failures would need state per source that a spoofing attacker
  could fill. Each failure is logged in one line a fail2ban filter can match:
  `SIP auth failed: source=<ip> user=<name> method=<m> reason=<why>`.
- An unknown user and a wrong password get the same 401: a client cannot
  learn which users exist. Only an authenticated phone can get a 403, when
  the AoR in To (or the caller in From) is not its own user's.
- A user is found by the URI's user part alone (the host is not checked for
  To and From): phones provisioned by the appliance always use the cloud
  domain, and the digest already names the user.
- Granted expiry is short and jittered (see `LocalRegistrar`).
- A REGISTER asking for less than `min_expires` (30 s) gets 423 with
  Min-Expires: a phone refreshing every few seconds costs more than it gains.
- Call-ID/CSeq ordering of REGISTERs (§10.3 step 7) is not tracked: the
  mirror does not keep them, and a reordered refresh only shifts an expiry.
"""

import logging
import random
from email.utils import formatdate
from urllib.parse import unquote

from vaxelbox.edge.bindings import BindingMirror, bare_uri
from vaxelbox.sip.address import Address
from vaxelbox.sip.digest import PasswordLookup, SipDigest, Verdict, parse_credentials
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.syntax import is_number
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import SipUri, Uri, parse_uri
from vaxelbox.site import Site
from vaxelbox.site.model import User

log = logging.getLogger("vaxelbox.local.registrar")

DEFAULT_EXPIRES = 3600  # RFC 3261 §10.2.1.1: what a REGISTER without any expiry asks for
MIN_EXPIRES = 30  # seconds; shorter requests get 423
MAX_EXPIRES = 2**32 - 1
_index: tuple[Site, dict[str, User]] | None = None  # the last site's users by sip.user


class LocalRegistrar:
    """Answers REGISTER for the site's users while the cloud is away.

    Granted expiry is uniform in `expiry` (seconds, default 300-600) and never
    more than the phone asked. Short against an online registration (the cloud
    grants an hour), so a phone that moved or died leaves the table within
    minutes; long enough that after failback, which re-registers every phone
    with the cloud itself (edge/failback.py), the phones' own refreshes do not
    arrive on top of it in a wave: 2,000 phones refresh over 150-300 s, not all
    within a minute. Jittered, so that phones which registered together (after
    a power cut, at the moment local mode began) spread their refreshes instead
    of storming the cloud in step.
    """

    def __init__(
        self,
        auth: SipDigest,
        bindings: BindingMirror,
        expiry: tuple[int, int] = (300, 600),
        rng: random.Random | None = None,
        *,
        min_expires: int = MIN_EXPIRES,
    ) -> None:
        """Raises ValueError unless 0 < expiry[0] <= expiry[1]."""
        if not 0 < expiry[0] <= expiry[1]:
            raise ValueError(f"expiry must be (low, high) with 0 < low <= high, got {expiry}")
        self.auth = auth
        self.bindings = bindings
        self.expiry = expiry
        self.min_expires = min_expires
        self._rng = rng or random.Random()

    def register(self, request: Request, flow: Flow, site: Site) -> Response:
        """The final response to a REGISTER that arrived on `flow`; bindings change only on a 200.

        401 (challenge, stale=true when only the nonce was old), 403 (another
        user's AoR), 400 (Contact: * without Expires: 0), 423 (too brief), or
        200 listing the AoR's bindings with their `expires`.
        Raises ValueError for a request that is not a REGISTER.
        """
        if request.method != "REGISTER":
            raise ValueError(f"the registrar takes REGISTER, not {request.method}")
        verdict = self.auth.verify(
            "REGISTER", request.uri, request.get_all("Authorization"), password_of(site)
        )
        if verdict.username is None:
            _log_failure(request, verdict, flow.remote[0])
            return challenge(request, 401, self.auth, verdict.stale)
        user = user_for_aor(site, _user_part(request.to.uri))
        if user is None or user.sip.user != verdict.username:
            log.warning(
                "local REGISTER refused: source=%s user=%s reason=not-own-aor", flow.remote[0],
                _printable(verdict.username),
            )  # fmt: skip
            return make_response(request, 403, "Forbidden")
        aor = aor_for(user, site)
        if not request.get_all("Contact"):
            return self._ok(request, aor, {})  # a query (§10.3 step 8)
        if request.contacts == []:  # Contact: *
            return self._unregister_all(request, aor)
        return self._bind(request, flow, aor)

    def _bind(self, request: Request, flow: Flow, aor: str) -> Response:
        default = _expires(request.get("Expires"), DEFAULT_EXPIRES)
        asked = [(c, _expires(c.params.get("expires"), default)) for c in request.contacts]
        if any(0 < seconds < self.min_expires for _, seconds in asked):
            response = make_response(request, 423, "Interval Too Brief")
            response.add("Min-Expires", str(self.min_expires))
            return response
        agent = request.get("User-Agent") or ""
        for contact, seconds in asked:
            if seconds == 0:
                self.bindings.release(aor, bare_uri(contact.uri))
            else:
                granted = min(seconds, self._rng.randint(*self.expiry))
                self.bindings.grant(aor, bare_uri(contact.uri), flow, granted, agent, address=contact)
        return self._ok(request, aor, {bare_uri(c.uri): c for c, _ in asked})

    def _unregister_all(self, request: Request, aor: str) -> Response:
        if len(request.get_all("Contact")) != 1 or _expires(request.get("Expires"), -1) != 0:
            return make_response(request, 400, "Contact * Needs Expires 0")  # §10.3 step 6
        for binding, _ in self.bindings.contacts_of(aor):
            self.bindings.release(aor, binding.contact)
        return self._ok(request, aor, {})

    def _ok(self, request: Request, aor: str, sent: dict[str, Address]) -> Response:
        """200 with every current binding of `aor`: the contacts of this request as the phone wrote
        them (phones find their own by comparing), the others as stored."""
        response = make_response(request, 200, "OK")
        for binding, _ in self.bindings.contacts_of(aor):
            expires = str(binding.expires_in())
            address = sent.get(binding.contact)
            if address is None:
                response.add("Contact", f"<{binding.contact}>;expires={expires}")
            else:
                params = {k: v for k, v in address.params.items() if k != "expires"}
                response.add(
                    "Contact", str(Address(address.uri, address.display, {**params, "expires": expires}))
                )
        response.add("Date", formatdate(usegmt=True))  # some phones set their clock from it
        return response


def authenticate_call(request: Request, auth: SipDigest, site: Site) -> User | Response:
    """The site user placing this out-of-dialog request, or the response to send instead.

    407 with Proxy-Authenticate unless Proxy-Authorization is valid for the
    user whose sip.user is the From URI's user part (stale=true when only the
    nonce was old); 403 when valid credentials name another user than From.
    ACK and CANCEL cannot be challenged (§22.1): passing one raises ValueError.
    """
    if request.method in ("ACK", "CANCEL"):
        raise ValueError(f"{request.method} cannot be challenged (RFC 3261 §22.1)")
    verdict = auth.verify(
        request.method, request.uri, request.get_all("Proxy-Authorization"), password_of(site)
    )
    if verdict.username is None:
        via = request.top_via
        _log_failure(request, verdict, via.params.get("received") or via.host)
        return challenge(request, 407, auth, verdict.stale)
    caller = user_for_aor(site, _user_part(request.from_.uri))
    if caller is None or caller.sip.user != verdict.username:
        log.warning("local call refused: user=%s reason=from-not-own-user", _printable(verdict.username))
        return make_response(request, 403, "Forbidden")
    return caller


def challenge(request: Request, status: int, auth: SipDigest, stale: bool = False) -> Response:
    """401 with WWW-Authenticate, or 407 with Proxy-Authenticate: one per algorithm, preferred first."""
    if status == 401:
        response, header = make_response(request, 401, "Unauthorized"), "WWW-Authenticate"
    else:
        response, header = make_response(request, 407, "Proxy Authentication Required"), "Proxy-Authenticate"
    for value in auth.challenges(stale):
        response.add(header, value)
    return response


def aor_for(user: User, site: Site) -> str:
    """The address of record of a site user, `sip:<sip.user>@<cloud domain>`: the form
    `edge.bindings.aor_of` gives for the REGISTERs of phones the appliance provisioned."""
    return f"sip:{user.sip.user}@{site.cloud.domain}"


def user_for_aor(site: Site, aor_or_user_part: str) -> User | None:
    """The site user with this AoR, or with this user part (%-escapes undone, case-sensitive).

    A full sip:/sips: URI must name the site's cloud domain (case-insensitive);
    a bare user part (no ':') is looked up as it is.
    """
    if ":" not in aor_or_user_part:
        return _users(site).get(unquote(aor_or_user_part))
    try:
        uri = parse_uri(aor_or_user_part)
    except ValueError:
        return None
    if not isinstance(uri, SipUri) or uri.user is None or uri.host.lower() != site.cloud.domain.lower():
        return None
    return _users(site).get(unquote(uri.user))


def password_of(site: Site) -> PasswordLookup:
    """sip.user -> that user's SIP password, None for anyone else."""

    def lookup(name: str) -> str | None:
        user = _users(site).get(name)
        return user.sip.password.get_secret_value() if user is not None else None

    return lookup


def _users(site: Site) -> dict[str, User]:
    """The site's users by sip.user (the first wins a duplicate), kept for the last site seen."""
    global _index
    if _index is None or _index[0] is not site:
        users: dict[str, User] = {}
        for user in site.users:
            users.setdefault(user.sip.user, user)
        _index = (site, users)
    return _index[1]


def _user_part(uri: Uri) -> str:
    return unquote(uri.user or "") if isinstance(uri, SipUri) else ""


def _expires(text: str | None, default: int) -> int:
    """A delta-seconds value; `default` when absent or malformed (§20.19), capped at 2**32-1."""
    if text is None or not is_number(text.strip()):
        return default
    return min(int(text.strip()), MAX_EXPIRES)


def _log_failure(request: Request, verdict: Verdict, source: str) -> None:
    """One line per failed check (stale ones at INFO: they are routine), the claimed user named."""
    if verdict.reason == "no-credentials":
        return  # the first request of every phone: not a failure
    name = _claimed_user(request.get_all("Authorization") + request.get_all("Proxy-Authorization"))
    log.log(
        logging.INFO if verdict.stale else logging.WARNING,
        "SIP auth failed: source=%s user=%s method=%s reason=%s",
        source, name, request.method, verdict.reason,
    )  # fmt: skip


def _claimed_user(values: list[str]) -> str:
    for value in values:
        params = parse_credentials(value)
        if params and params.get("username"):
            return _printable(params["username"])
    return "-"


def _printable(text: str) -> str:
    """A client-chosen name made safe for one log line: printable, no spaces, bounded."""
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text)[:64]
