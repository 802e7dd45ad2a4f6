"""The local registrar and call authentication: pure, then against sipp as a real phone stack.

The pure tests build messages with the SIP parser and answer challenges the
way a phone does (RFC 7616, computed here, not by the code under test).
The last tests run sipp against our real SIP stack on loopback UDP.
"""

import asyncio
import hashlib
import logging
import random
import re

import pytest
from peers import SCENARIOS, free_port, tool
from vaxelbox.edge.bindings import BindingMirror, aor_of
from vaxelbox.local.registrar import LocalRegistrar, aor_for, authenticate_call, user_for_aor
from vaxelbox.sip.digest import SipDigest
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.stack import ServerTx, SipStack
from vaxelbox.sip.transport import Flow, TransportLayer
from vaxelbox.site import Site, demo_site
from vaxelbox.store import Store

SITE = demo_site()
DOMAIN = SITE.cloud.domain
ANNA = next(u for u in SITE.users if u.sip.user == "demo-101")
BJORN = next(u for u in SITE.users if u.sip.user == "demo-102")
PASSWORD = {u.sip.user: u.sip.password.get_secret_value() for u in SITE.users}
HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class PhoneFlow(Flow):
    transport = "udp"
    reliable = False

    def __init__(self, remote: tuple[str, int] = ("192.0.2.50", 5062), alive: bool = True) -> None:
        super().__init__(("192.0.2.1", 5060), remote)
        self._alive = alive

    @property
    def alive(self) -> bool:
        return self._alive

    def send(self, data: bytes) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def register(
    user: str = "demo-101",
    contact: str | None = "<sip:{user}@192.0.2.50:5062;transport=udp>",
    expires: int | str | None = 3600,
    to_user: str | None = None,
    authorization: str = "",
    cseq: int = 1,
) -> Request:
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.50:5062;branch=z9hG4bK-r{cseq}",
        f"From: <sip:{user}@{DOMAIN}>;tag=a",
        f"To: <sip:{to_user or user}@{DOMAIN}>",
        "Call-ID: reg@192.0.2.50",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: Yealink SIP-T46U 108.86.0.20",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact.format(user=user)}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization:
        lines.append(authorization)
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def invite(user: str = "demo-101", callee: str = "demo-102", authorization: str = "") -> Request:
    text = (
        f"INVITE sip:{callee}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5062;branch=z9hG4bK-i\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=f\r\nTo: <sip:{callee}@{DOMAIN}>\r\nCall-ID: call@x\r\n"
        f"CSeq: 1 INVITE\r\n{authorization}Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def answer(
    challenge: Response,
    user: str,
    password: str,
    method: str = "REGISTER",
    uri: str = f"sip:{DOMAIN}",
    algorithm: str = "MD5",
    nc: int = 1,
) -> str:
    """The Authorization (or Proxy-Authorization) line a phone sends for this challenge."""
    name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
    offer = next(v for v in challenge.get_all(name) if f"algorithm={algorithm}," in v)
    realm, nonce = re.search(r'realm="([^"]*)"', offer)[1], re.search(r'nonce="([^"]*)"', offer)[1]
    h = HASH[algorithm]
    ha1 = h(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    response = h(f"{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}".encode()).hexdigest()
    header = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    return (
        f'{header}: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'algorithm={algorithm}, qop=auth, nc={nc:08x}, cnonce="c0ffee", response="{response}"'
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mirror() -> BindingMirror:
    return BindingMirror()


@pytest.fixture
def registrar(clock, mirror) -> LocalRegistrar:
    return LocalRegistrar(SipDigest(DOMAIN, clock=clock), mirror, rng=random.Random(18))


def registered(
    registrar: LocalRegistrar, flow: Flow | None = None, user: str = "demo-101", password: str = "", **kwargs
) -> Response:
    """REGISTER, take the 401, answer it as the phone would, return the final response."""
    flow = flow or PhoneFlow()
    challenge = registrar.register(register(user, **kwargs), flow, SITE)
    assert challenge.status == 401
    password = password or PASSWORD[user]
    return registrar.register(
        register(user, authorization=answer(challenge, user, password), cseq=2, **kwargs), flow, SITE
    )


def granted(response: Response) -> dict[str, int]:
    return {str(c.uri): int(c.params["expires"]) for c in response.contacts}


def test_register_without_credentials_is_challenged_with_both_algorithms(registrar, mirror):
    response = registrar.register(register(), PhoneFlow(), SITE)
    assert (response.status, response.reason) == (401, "Unauthorized")
    offers = response.get_all("WWW-Authenticate")
    assert [re.search(r"algorithm=([\w-]+)", o)[1] for o in offers] == ["SHA-256", "MD5"]
    assert all(f'realm="{DOMAIN}"' in o and 'qop="auth"' in o for o in offers)
    assert response.to.tag is not None
    assert len(mirror) == 0


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_a_phone_answering_the_challenge_is_bound_and_the_200_lists_its_contact(registrar, mirror, algorithm):
    flow = PhoneFlow()
    challenge = registrar.register(register(), flow, SITE)
    request = register(
        authorization=answer(challenge, "demo-101", PASSWORD["demo-101"], algorithm=algorithm), cseq=2
    )
    response = registrar.register(request, flow, SITE)
    assert response.status == 200
    (contact,) = response.contacts
    assert str(contact.uri) == "sip:demo-101@192.0.2.50:5062;transport=udp"  # as the phone wrote it
    assert 300 <= int(contact.params["expires"]) <= 600
    assert response.get("Date").endswith(" GMT")
    ((binding, live),) = mirror.contacts_of(aor_for(ANNA, SITE))
    assert live is flow
    assert binding.aor == aor_of(request) == f"sip:demo-101@{DOMAIN}"
    assert (binding.contact, binding.remote, binding.transport) == (
        "sip:demo-101@192.0.2.50:5062",
        flow.remote,
        "udp",
    )
    assert binding.user_agent == "Yealink SIP-T46U 108.86.0.20"
    assert abs(binding.expires_in() - int(contact.params["expires"])) <= 1


def test_granted_expiry_is_uniform_in_the_range_and_never_more_than_asked(mirror):
    auth = SipDigest(DOMAIN)
    registrar = LocalRegistrar(auth, mirror, rng=random.Random(7))
    grants = [next(iter(granted(registered(registrar)).values())) for _ in range(200)]
    assert min(grants) >= 300
    assert max(grants) <= 600
    assert min(grants) < 330  # spread over the range, not one value
    assert max(grants) > 570
    assert len(set(grants)) > 100
    asked_400 = [next(iter(granted(registered(registrar, expires=400)).values())) for _ in range(50)]
    assert max(asked_400) <= 400
    assert granted(registered(registrar, expires=45)) == {"sip:demo-101@192.0.2.50:5062;transport=udp": 45}
    # A contact's own expires parameter wins over the Expires header.
    own = registered(registrar, contact="<sip:{user}@192.0.2.50:5062>;expires=40", expires=3600)
    assert granted(own) == {"sip:demo-101@192.0.2.50:5062": 40}
    narrow = LocalRegistrar(auth, BindingMirror(), expiry=(300, 300))
    assert granted(registered(narrow)) == {"sip:demo-101@192.0.2.50:5062;transport=udp": 300}
    with pytest.raises(ValueError, match="expiry"):
        LocalRegistrar(auth, mirror, expiry=(120, 60))


@pytest.mark.parametrize("written", ["\u00b2", "\u0665", "1\u00b2"])
def test_an_expires_in_other_digits_is_malformed_and_the_default_applies(registrar, written):
    """§20.19: a malformed Expires counts as absent (3600 asked, 300-600 granted): '²' once reached
    int() (ValueError), '٥' was read as 5 and refused 423."""
    response = registered(registrar, expires=written)
    assert response.status == 200
    assert all(300 <= seconds <= 600 for seconds in granted(response).values())


def test_a_wrong_password_is_challenged_again_and_binds_nothing(registrar, mirror, caplog):
    caplog.set_level(logging.INFO, "vaxelbox.local.registrar")
    response = registered(registrar, password="guess-me")
    assert response.status == 401
    assert "stale" not in " ".join(response.get_all("WWW-Authenticate"))
    assert len(mirror) == 0
    assert (
        "SIP auth failed: source=192.0.2.50 user=demo-101 method=REGISTER reason=credentials" in caplog.text
    )
    for secret in PASSWORD.values():
        assert secret not in caplog.text


def test_an_unknown_user_gets_exactly_what_a_wrong_password_gets(registrar, mirror):
    unknown = registered(registrar, user="demo-999", password="whatever")
    wrong = registered(registrar, user="demo-101", password="whatever")
    assert (unknown.status, unknown.reason) == (wrong.status, wrong.reason) == (401, "Unauthorized")
    strip = lambda r: [re.sub(r'nonce="[^"]*"', "", v) for v in r.get_all("WWW-Authenticate")]  # noqa: E731
    assert strip(unknown) == strip(wrong)
    assert [h.name for h in unknown.headers] == [h.name for h in wrong.headers]
    assert len(mirror) == 0


def test_a_user_may_not_register_another_users_aor(registrar, mirror):
    flow = PhoneFlow()
    challenge = registrar.register(register(to_user="demo-102"), flow, SITE)
    assert challenge.status == 401  # challenged before anything is looked up
    anna_for_bjorn = register(
        to_user="demo-102", authorization=answer(challenge, "demo-101", PASSWORD["demo-101"])
    )
    assert registrar.register(anna_for_bjorn, flow, SITE).status == 403
    nobody = register(
        to_user="demo-999", authorization=answer(challenge, "demo-101", PASSWORD["demo-101"], nc=2)
    )
    assert registrar.register(nobody, flow, SITE).status == 403
    assert len(mirror) == 0


def test_an_expired_nonce_gets_401_stale_true(registrar, mirror, clock):
    flow = PhoneFlow()
    challenge = registrar.register(register(), flow, SITE)
    clock.now += 301
    late = register(authorization=answer(challenge, "demo-101", PASSWORD["demo-101"]), cseq=2)
    response = registrar.register(late, flow, SITE)
    assert response.status == 401
    assert all(v.endswith("stale=true") for v in response.get_all("WWW-Authenticate"))
    assert len(mirror) == 0
    retry = register(authorization=answer(response, "demo-101", PASSWORD["demo-101"]), cseq=3)
    assert registrar.register(retry, flow, SITE).status == 200


def test_unregister_one_contact_then_all_with_star(registrar, mirror):
    desk, dect = PhoneFlow(("192.0.2.50", 5062)), PhoneFlow(("192.0.2.60", 5060))
    registered(registrar, desk)
    both = registered(registrar, dect, contact="<sip:{user}@192.0.2.60:5060>")
    assert set(granted(both)) == {"sip:demo-101@192.0.2.50:5062", "sip:demo-101@192.0.2.60:5060"}
    one_left = registered(registrar, dect, contact="<sip:{user}@192.0.2.60:5060>", expires=0)
    assert set(granted(one_left)) == {"sip:demo-101@192.0.2.50:5062"}
    bad_star = registered(registrar, desk, contact="*", expires=60)
    assert bad_star.status == 400  # §10.3 step 6: Contact * only with Expires 0
    assert len(mirror.contacts_of(aor_for(ANNA, SITE))) == 1
    gone = registered(registrar, desk, contact="*", expires=0)
    assert (gone.status, gone.contacts) == (200, [])
    assert mirror.contacts_of(aor_for(ANNA, SITE)) == []


def test_a_register_without_contact_queries_the_bindings(registrar, mirror):
    registered(registrar)
    before = mirror.all()
    query = registered(registrar, contact=None, expires=None)
    assert query.status == 200
    assert set(granted(query)) == {"sip:demo-101@192.0.2.50:5062"}
    assert mirror.all() == before  # nothing changed
    assert registered(registrar, user="demo-102", contact=None).contacts == []


def test_too_brief_an_expiry_gets_423_with_min_expires(registrar, mirror):
    response = registered(registrar, expires=10)
    assert (response.status, response.get("Min-Expires")) == (423, "30")
    assert len(mirror) == 0
    assert registered(registrar, expires=30).status == 200


def test_calls_are_challenged_with_407_and_pass_with_the_callers_credentials(clock):
    auth = SipDigest(DOMAIN, clock=clock)
    challenge = authenticate_call(invite(), auth, SITE)
    assert isinstance(challenge, Response)
    assert (challenge.status, len(challenge.get_all("Proxy-Authenticate"))) == (407, 2)
    assert challenge.get("WWW-Authenticate") is None
    uri = f"sip:demo-102@{DOMAIN}"
    good = answer(challenge, "demo-101", PASSWORD["demo-101"], method="INVITE", uri=uri)
    assert authenticate_call(invite(authorization=good + "\r\n"), auth, SITE) == ANNA
    wrong = answer(challenge, "demo-101", "guess", method="INVITE", uri=uri, nc=2)
    assert authenticate_call(invite(authorization=wrong + "\r\n"), auth, SITE).status == 407
    # Bjorn's valid credentials on a call claiming to come from Anna.
    bjorn = answer(challenge, "demo-102", PASSWORD["demo-102"], method="INVITE", uri=uri, nc=3)
    assert authenticate_call(invite(authorization=bjorn + "\r\n"), auth, SITE).status == 403
    # Credentials for REGISTER do not authenticate a call (Authorization, not Proxy-Authorization).
    www = answer(registered_challenge(auth), "demo-101", PASSWORD["demo-101"], method="INVITE", uri=uri)
    assert authenticate_call(invite(authorization=www + "\r\n"), auth, SITE).status == 407
    clock.now += 301
    stale = answer(challenge, "demo-101", PASSWORD["demo-101"], method="INVITE", uri=uri, nc=4)
    refused = authenticate_call(invite(authorization=stale + "\r\n"), auth, SITE)
    assert refused.status == 407
    assert refused.get("Proxy-Authenticate").endswith("stale=true")
    ack = parse_message(invite().to_bytes().replace(b"INVITE", b"ACK"))
    with pytest.raises(ValueError, match="cannot be challenged"):
        authenticate_call(ack, auth, SITE)


def registered_challenge(auth: SipDigest) -> Response:
    return LocalRegistrar(auth, BindingMirror()).register(register(), PhoneFlow(), SITE)


def test_aor_helpers_agree_with_the_mirror():
    request = register()
    assert aor_for(ANNA, SITE) == aor_of(request) == f"sip:demo-101@{DOMAIN}"
    assert user_for_aor(SITE, aor_of(request)) == ANNA
    assert user_for_aor(SITE, f"sips:demo-102@{DOMAIN.upper()};transport=tls") == BJORN
    assert user_for_aor(SITE, "demo-%31%30%32") == BJORN
    assert user_for_aor(SITE, "demo-102") == BJORN
    assert user_for_aor(SITE, "DEMO-102") is None  # user parts are case-sensitive
    assert user_for_aor(SITE, "sip:demo-102@elsewhere.example.net") is None
    assert user_for_aor(SITE, "tel:+4684650040") is None
    assert user_for_aor(SITE, "sip:[not a uri") is None
    other: Site = SITE.model_copy(update={"users": [BJORN]})
    assert user_for_aor(other, "demo-101") is None  # the cache follows the site it is given
    assert user_for_aor(SITE, "demo-101") == ANNA


def test_contacts_of_gives_live_flows_and_none_after_a_restart(tmp_path, registrar, mirror):
    assert mirror.contacts_of(aor_for(ANNA, SITE)) == []
    dead = PhoneFlow(("192.0.2.60", 5060), alive=False)
    registered(registrar, PhoneFlow())
    registered(registrar, dead, contact="<sip:{user}@192.0.2.60:5060>")
    flows = [flow for _, flow in mirror.contacts_of(aor_for(ANNA, SITE))]
    assert flows[0] is not None
    assert flows[1] is None  # its connection is gone
    binding = mirror.contacts_of(aor_for(ANNA, SITE))[0][0]
    assert mirror.contacts_of(aor_for(ANNA, SITE), now=binding.expires_at + 1) == []
    store = Store(tmp_path)
    persisted = BindingMirror(store)
    persisted.grant(aor_for(ANNA, SITE), "sip:demo-101@192.0.2.50:5062", PhoneFlow(), 90, "Snom D785")
    persisted.flush()
    store.close()
    ((restored, flow),) = BindingMirror(Store(tmp_path)).contacts_of(aor_for(ANNA, SITE))
    assert flow is None
    assert (restored.transport, restored.remote, restored.local) == (
        "udp",
        ("192.0.2.50", 5062),
        ("192.0.2.1", 5060),
    )
    with pytest.raises(ValueError, match="positive"):
        persisted.grant(aor_for(ANNA, SITE), "sip:x@192.0.2.9", PhoneFlow(), 0, "")


# -- sipp, a real phone stack, against our SIP stack -------------------------------------------------


class RegistrarOnly:
    """The smallest transaction user: REGISTER to the local registrar, everything else 501."""

    def __init__(self, stack: SipStack, registrar: LocalRegistrar) -> None:
        self.stack, self.registrar = stack, registrar
        self.answered: list[int] = []

    def admit(self, message: Request | Response, flow: Flow) -> bool:
        return True

    def on_request(self, transaction: ServerTx, request: Request) -> None:
        if request.method == "REGISTER":
            response = self.registrar.register(request, transaction.flow, SITE)
        else:
            response = make_response(request, 501, "Not Implemented")
        self.answered.append(response.status)
        self.stack.respond(transaction, response)

    def on_cancel(self, invite: ServerTx, cancel: Request) -> None:
        pass

    def on_stray(self, message: Request | Response, flow: Flow) -> None:
        pass


@pytest.fixture
async def server():
    transports = TransportLayer(lambda message, flow: None)
    stack = SipStack(transports)
    # sipp 3.6 answers only the first challenge and knows MD5 alone, so MD5 is offered first here.
    registrar = LocalRegistrar(SipDigest(DOMAIN, algorithms=("MD5", "SHA-256")), BindingMirror())
    stack.user = user = RegistrarOnly(stack, registrar)
    address = await transports.listen_udp("127.0.0.1", free_port("127.0.0.1"))
    yield address, user
    await transports.close()


async def sipp(
    scenario: str, address: tuple[str, int], user: str, password: str, workdir
) -> tuple[int, str, int]:
    """Run one sipp phone registering `user`; its exit code, its message trace and its port."""
    port = free_port("127.0.0.1")
    process = await asyncio.create_subprocess_exec(
        tool("sipp"), f"{address[0]}:{address[1]}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
        "-p", str(port), "-m", "1", "-timeout", "15s", "-timeout_error", "-nostdin", "-trace_msg",
        "-s", user, "-au", user, "-ap", password, "-auth_uri", DOMAIN, "-key", "expires", "3600",
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    await asyncio.wait_for(process.communicate(), 30)
    trace = "".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))
    return process.returncode, trace, port


async def test_sipp_registers_with_digest_against_the_local_registrar(server, tmp_path):
    address, user = server
    code, trace, port = await sipp("register.xml", address, "demo-101", PASSWORD["demo-101"], tmp_path)
    assert code == 0, trace[-3000:]
    assert user.answered == [401, 200]
    assert 'uri="sip:demo.vaxel.example.net"' in trace  # sipp answered with the Request-URI
    ((binding, flow),) = user.registrar.bindings.contacts_of(aor_for(ANNA, SITE))
    assert binding.contact == f"sip:demo-101@127.0.0.1:{port}"
    assert flow is not None
    assert flow.remote == ("127.0.0.1", port)
    assert 300 <= binding.expires_in() <= 600  # sipp asked for 3600


async def test_sipp_with_a_wrong_password_is_refused_and_not_bound(server, tmp_path):
    address, user = server
    code, trace, _ = await sipp("register_refused.xml", address, "demo-102", "not-bjorns-password", tmp_path)
    assert code == 0, trace[-3000:]
    assert user.answered == [401, 401]
    assert len(user.registrar.bindings) == 0
