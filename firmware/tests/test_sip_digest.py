"""SIP digest, server side: RFC 7616 vectors, the phone's round trip, stale, replays, what is refused."""

import hashlib
import re

import pytest
from vaxelbox.sip.digest import DigestAuthenticator, SipDigest, parse_credentials, response_digest

REALM = "demo.vaxel.example.net"
REGISTRAR = "sip:demo.vaxel.example.net"
USERS = {"demo-101": "demo-pw-anna-4f9c", 'odd"user\\': "pw-odd"}
HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

# RFC 7616 §3.9.1, unfolded.
RFC_AUTHORIZATION = (
    'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=MD5, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
    'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
    'response="8ca523f5e9506fed4657c9700eebdbec", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def nonce_of(challenge: str) -> str:
    return re.search(r'nonce="([^"]+)"', challenge)[1]


def phone_answer(
    challenge: str,
    user: str,
    password: str,
    method: str = "REGISTER",
    uri: str = REGISTRAR,
    nc: int = 1,
    algorithm: str | None = None,
    realm: str = REALM,
    qop: str | None = "auth",
    nonce: str | None = None,
) -> str:
    """What a phone sends back, computed here from RFC 7616 independently of the code under test."""
    algorithm = algorithm or re.search(r"algorithm=([\w-]+)", challenge)[1]
    nonce = nonce or nonce_of(challenge)
    h = HASH.get(algorithm, hashlib.md5)

    def hex_(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1, ha2 = hex_(f"{user}:{realm}:{password}"), hex_(f"{method}:{uri}")
    quoted_user = user.replace("\\", "\\\\").replace('"', '\\"')
    text = f'Digest username="{quoted_user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm={algorithm}'
    if qop is None:
        return f'{text}, response="{hex_(f"{ha1}:{nonce}:{ha2}")}"'
    response = hex_(f"{ha1}:{nonce}:{nc:08x}:0a4f113b:{qop}:{ha2}")
    return f'{text}, qop={qop}, nc={nc:08x}, cnonce="0a4f113b", response="{response}"'


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(clock: Clock) -> SipDigest:
    return SipDigest(REALM, clock=clock)


def challenge(auth: DigestAuthenticator, algorithm: str = "MD5") -> str:
    return next(c for c in auth.challenges() if f"algorithm={algorithm}," in c)


def test_rfc7616_example_vectors_md5_and_sha256():
    params = parse_credentials(RFC_AUTHORIZATION)
    assert params["username"] == "Mufasa"
    assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    common = ("Mufasa", params["realm"], "Circle of Life", "GET", params["uri"], params["nonce"], "auth")
    md5 = response_digest(hashlib.md5, *common, params["nc"], params["cnonce"])
    sha = response_digest(hashlib.sha256, *common, params["nc"], params["cnonce"])
    assert md5 == params["response"] == "8ca523f5e9506fed4657c9700eebdbec"
    assert sha == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_challenges_offer_sha256_first_then_md5_each_with_its_own_nonce(auth):
    sha, md5 = auth.challenges()
    assert sha.startswith(f'Digest realm="{REALM}", qop="auth", algorithm=SHA-256, nonce="')
    assert "algorithm=MD5," in md5
    assert nonce_of(sha) != nonce_of(md5)
    assert auth.challenges(stale=True)[0].endswith(", stale=true")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_a_phone_answering_the_challenge_is_authenticated(auth, algorithm):
    header = phone_answer(challenge(auth, algorithm), "demo-101", USERS["demo-101"])
    verdict = auth.verify("REGISTER", REGISTRAR, header, USERS.get)
    assert (verdict.username, verdict.stale, verdict.reason) == ("demo-101", False, "")


def test_quoted_string_escapes_are_removed_before_hashing(auth):
    assert parse_credentials(r'Digest username="a\"b\\c", realm="r"') == {"username": 'a"b\\c', "realm": "r"}
    header = phone_answer(challenge(auth), 'odd"user\\', "pw-odd")
    assert auth.verify("REGISTER", REGISTRAR, header, USERS.get).username == 'odd"user\\'


def test_wrong_password_and_unknown_user_get_the_same_plain_refusal(auth):
    wrong = auth.verify("REGISTER", REGISTRAR, phone_answer(challenge(auth), "demo-101", "guess"), USERS.get)
    unknown = auth.verify("REGISTER", REGISTRAR, phone_answer(challenge(auth), "demo-999", "x"), USERS.get)
    assert wrong == unknown
    assert (wrong.username, wrong.stale, wrong.reason) == (None, False, "credentials")


def test_an_expired_nonce_is_stale_only_with_the_right_password(auth, clock):
    right = phone_answer(challenge(auth, "SHA-256"), "demo-101", USERS["demo-101"])
    wrong = phone_answer(challenge(auth, "SHA-256"), "demo-101", "guess")
    clock.now += 299
    assert auth.verify("REGISTER", REGISTRAR, right, USERS.get).username == "demo-101"
    clock.now += 2  # 301 s after the challenge: past the 300 s lifetime
    verdict = auth.verify("REGISTER", REGISTRAR, right, USERS.get)
    assert (verdict.username, verdict.stale, verdict.reason) == (None, True, "expired")
    assert not auth.verify("REGISTER", REGISTRAR, wrong, USERS.get).stale
    clock.now -= 3600  # the clock stepped back: our own nonce from the "future" is stale too
    assert auth.verify("REGISTER", REGISTRAR, right, USERS.get).stale


def test_the_lifetime_is_a_parameter(clock):
    auth = SipDigest(REALM, clock=clock, lifetime=30)
    header = phone_answer(challenge(auth), "demo-101", USERS["demo-101"])
    clock.now += 31
    assert auth.verify("REGISTER", REGISTRAR, header, USERS.get).stale


def test_a_tampered_or_foreign_nonce_is_a_plain_failure_even_with_the_right_password(auth, clock):
    nonce = nonce_of(challenge(auth))
    stamp, rest = nonce.split(".", 1)
    younger = f"{int(stamp, 16) + 1000:x}.{rest}"  # pretend it was issued later, to live longer
    for forged in (younger, nonce[:-1] + ("0" if nonce[-1] != "0" else "1"), "deadbeef"):
        header = phone_answer("algorithm=MD5", "demo-101", USERS["demo-101"], nonce=forged)
        verdict = auth.verify("REGISTER", REGISTRAR, header, USERS.get)
        assert (verdict.username, verdict.stale, verdict.reason) == (None, False, "nonce")
    restarted = SipDigest(REALM, clock=clock)  # a new process: a new key
    old = phone_answer(challenge(auth), "demo-101", USERS["demo-101"])
    assert restarted.verify("REGISTER", REGISTRAR, old, USERS.get).reason == "nonce"
    shared_key = b"k" * 32
    other_realm = DigestAuthenticator("vaxelbox provisioning", clock=clock, key=shared_key)
    foreign = phone_answer(challenge(other_realm), "demo-101", USERS["demo-101"])
    assert (
        SipDigest(REALM, clock=clock, key=shared_key).verify("REGISTER", REGISTRAR, foreign, USERS.get).reason
        == "nonce"
    )


def test_uri_must_name_the_request_uri_loosely(auth):
    c = challenge(auth)
    user, password = "demo-101", USERS["demo-101"]
    counts = iter(range(1, 100))

    def verdict(uri: str, request_uri: str, method: str = "REGISTER") -> str:
        header = phone_answer(c, user, password, method=method, uri=uri, nc=next(counts))
        return auth.verify(method, request_uri, header, USERS.get).reason

    assert verdict("sip:DEMO.vaxel.example.net:5060;transport=udp", REGISTRAR) == ""
    assert (
        verdict("sip:demo-%32%301@demo.vaxel.example.net", "sip:demo-201@demo.vaxel.example.net", "INVITE")
        == ""
    )
    assert (
        verdict("sip:demo-201@demo.vaxel.example.net", "sip:demo-202@demo.vaxel.example.net", "INVITE")
        == "uri"
    )
    assert verdict("sip:demo.vaxel.example.net", "sip:other.example.net") == "uri"
    assert verdict("sip:demo.vaxel.example.net:5070", REGISTRAR) == "uri"
    assert verdict("sips:demo.vaxel.example.net", REGISTRAR) == "uri"
    assert verdict("tel:+46812345", "TEL:+46812345", "INVITE") == ""
    assert verdict("sip:127.0.0.1:5060", REGISTRAR) == "uri"  # sipp's default, not the Request-URI


def test_what_the_challenge_did_not_offer_is_refused(clock):
    auth = SipDigest(REALM, clock=clock, algorithms=("MD5",))
    c = challenge(auth)
    user, password = "demo-101", USERS["demo-101"]
    for algorithm in ("SHA-256", "MD5-sess", "SHA-512-256"):
        header = phone_answer(c, user, password, algorithm=algorithm)
        assert auth.verify("REGISTER", REGISTRAR, header, USERS.get).reason == "unsupported", algorithm
    assert (
        auth.verify("REGISTER", REGISTRAR, phone_answer(c, user, password, qop="auth-int"), USERS.get).reason
        == "unsupported"
    )
    rfc2069 = phone_answer(c, user, password, qop=None)
    assert auth.verify("REGISTER", REGISTRAR, rfc2069, USERS.get).reason == "unsupported"
    no_algorithm = phone_answer(c, user, password).replace(", algorithm=MD5", "")  # absent means MD5
    assert auth.verify("REGISTER", REGISTRAR, no_algorithm, USERS.get).username == user
    userhash = phone_answer(c, user, password, nc=2) + ", userhash=true"
    assert auth.verify("REGISTER", REGISTRAR, userhash, USERS.get).reason == "unsupported"


def test_a_replayed_nonce_count_is_stale_but_reordered_counts_pass(auth):
    c = challenge(auth)
    user, password = "demo-101", USERS["demo-101"]
    first = phone_answer(c, user, password, nc=1)
    assert auth.verify("REGISTER", REGISTRAR, first, USERS.get).username == user
    replay = auth.verify("REGISTER", REGISTRAR, first, USERS.get)
    assert (replay.username, replay.stale, replay.reason) == (None, True, "replay")
    assert (
        auth.verify("REGISTER", REGISTRAR, phone_answer(c, user, password, nc=3), USERS.get).username == user
    )
    assert (
        auth.verify("REGISTER", REGISTRAR, phone_answer(c, user, password, nc=2), USERS.get).username == user
    )


def test_replay_memory_is_bounded(clock):
    auth = SipDigest(REALM, clock=clock, replay_memory=2)
    answers = [phone_answer(challenge(auth), "demo-101", USERS["demo-101"]) for _ in range(3)]
    for header in answers:
        assert auth.verify("REGISTER", REGISTRAR, header, USERS.get).username == "demo-101"
    assert len(auth._seen) == 2
    assert auth.verify("REGISTER", REGISTRAR, answers[2], USERS.get).reason == "replay"


def test_credentials_for_another_realm_are_skipped_and_garbage_refused(auth):
    ours = phone_answer(challenge(auth), "demo-101", USERS["demo-101"])
    cloud = phone_answer("algorithm=MD5", "demo-101", USERS["demo-101"], realm="cloud", nonce="abc")
    assert auth.verify("REGISTER", REGISTRAR, [cloud, ours], USERS.get).username == "demo-101"
    assert auth.verify("REGISTER", REGISTRAR, [cloud], USERS.get).reason == "realm"
    assert auth.verify("REGISTER", REGISTRAR, None, USERS.get).reason == "no-credentials"
    assert auth.verify("REGISTER", REGISTRAR, [], USERS.get).reason == "no-credentials"
    for garbage in (
        "Basic ZGVtby0xMDE6cHc=",
        f'Digest realm="{REALM}", username="demo-101", username="x"',
        f'Digest realm="{REALM}", username="unterminated',
        f'Digest realm="{REALM}" username="no-comma"',
    ):
        assert auth.verify("REGISTER", REGISTRAR, garbage, USERS.get).reason == "malformed", garbage
    missing = f'Digest realm="{REALM}", username="demo-101", uri="{REGISTRAR}", response="00"'
    assert auth.verify("REGISTER", REGISTRAR, missing, USERS.get).reason == "malformed"


def test_no_secret_in_what_the_authenticator_shows():
    key = b"\x01" * 32
    auth = SipDigest(REALM, key=key)
    header = phone_answer(challenge(auth), "demo-101", "guess")
    verdict = auth.verify("REGISTER", REGISTRAR, header, USERS.get)
    shown = repr(auth) + repr(verdict) + "".join(auth.challenges())
    assert USERS["demo-101"] not in shown
    assert key.hex() not in shown
    assert "\\x01" not in shown
    with pytest.raises(ValueError, match="unsupported digest algorithms"):
        SipDigest(REALM, algorithms=("SHA-512",))
