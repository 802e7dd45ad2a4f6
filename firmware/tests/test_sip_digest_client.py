"""SIP digest, client side: RFC 7616 §3.9.1 vectors, RFC 2069 answers, round trips with our own
server side, and challenges we must refuse to answer rather than answer wrongly."""

import hashlib

import pytest
from vaxelbox.sip.digest import SipDigest, answerable, authorization, parse_credentials

# RFC 7616 §3.9.1: the challenge (unfolded) and the expected responses for Mufasa.
RFC_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_RESPONSES = {
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
}
REALM = "demo.vaxel.example.net"
REGISTRAR = "sip:demo.vaxel.example.net"


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_rfc_7616_vectors(algorithm: str) -> None:
    challenge = RFC_CHALLENGE.format(algorithm=algorithm)
    answer = authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC_CNONCE)
    params = parse_credentials(answer)
    assert params == {
        "username": "Mufasa",
        "realm": "http-auth@example.org",
        "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "uri": "/dir/index.html",
        "response": RFC_RESPONSES[algorithm],
        "algorithm": algorithm,
        "cnonce": RFC_CNONCE,
        "qop": "auth",  # auth-int was offered too, but only auth is spoken
        "nc": "00000001",
        "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    }


def test_a_challenge_without_qop_gets_an_rfc_2069_answer() -> None:
    """Kamailio's www_challenge without the qop flag (the test cloud) asks for this."""
    challenge = f'Digest realm="{REALM}", nonce="abc123"'
    params = parse_credentials(authorization(challenge, "REGISTER", REGISTRAR, "101", "pw-101"))
    assert params is not None
    assert not {"qop", "nc", "cnonce", "opaque"} & params.keys()
    assert params["algorithm"] == "MD5"  # absent means MD5 (RFC 7616 §3.4)

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = md5(f"101:{REALM}:pw-101"), md5(f"REGISTER:{REGISTRAR}")
    assert params["response"] == md5(f"{ha1}:abc123:{ha2}")


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_our_own_server_accepts_the_answer_and_refuses_a_wrong_password(algorithm: str) -> None:
    server = SipDigest(REALM, algorithms=(algorithm,))
    (challenge,) = server.challenges()
    passwords = {"101": "pw-101-secret"}.get
    good = authorization(challenge, "REGISTER", REGISTRAR, "101", "pw-101-secret")
    assert server.verify("REGISTER", REGISTRAR, good, passwords).username == "101"
    bad = authorization(challenge, "REGISTER", REGISTRAR, "101", "not-the-password")
    assert server.verify("REGISTER", REGISTRAR, bad, passwords).reason == "credentials"


def test_a_nonce_is_reused_with_a_higher_nc_and_a_repeated_nc_is_a_replay() -> None:
    server = SipDigest(REALM)
    challenge = server.challenges()[0]
    passwords = {"101": "a", "102": "b"}.get
    first = authorization(challenge, "REGISTER", REGISTRAR, "101", "a", nc=1)
    second = authorization(challenge, "REGISTER", REGISTRAR, "102", "b", nc=2)
    assert server.verify("REGISTER", REGISTRAR, first, passwords).username == "101"
    assert server.verify("REGISTER", REGISTRAR, second, passwords).username == "102"
    again = authorization(challenge, "REGISTER", REGISTRAR, "102", "b", nc=2)
    assert server.verify("REGISTER", REGISTRAR, again, passwords).stale


def test_names_with_quotes_and_backslashes_survive_quoting() -> None:
    server = SipDigest('odd "realm" \\ here')
    challenge = server.challenges()[0]
    name = 'odd"user\\'
    answer = authorization(challenge, "REGISTER", REGISTRAR, name, "pw")
    params = parse_credentials(answer)
    assert params is not None
    assert params["username"] == name
    assert server.verify("REGISTER", REGISTRAR, answer, {name: "pw"}.get).username == name


@pytest.mark.parametrize(
    "challenge",
    [
        'Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth"',
        'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n", algorithm=MD5, qop="auth-int"',
        'Digest realm="r", algorithm=MD5, qop="auth"',  # no nonce
        'Digest nonce="n", algorithm=MD5',  # no realm
        'Basic realm="r"',
        'Digest realm="r", realm="s", nonce="n"',  # broken: a repeated parameter
    ],
)
def test_challenges_we_cannot_answer_are_refused(challenge: str) -> None:
    with pytest.raises(ValueError, match=r"Digest challenge|cannot answer"):
        authorization(challenge, "REGISTER", REGISTRAR, "101", "pw")
    assert answerable([challenge]) is None


def test_the_first_answerable_challenge_in_the_servers_order_wins() -> None:
    offered = [
        'Digest realm="r", nonce="1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="3", algorithm=MD5, qop="auth"',
    ]
    assert answerable(offered) == offered[1]
    assert answerable(list(reversed(offered))) == offered[2]
    assert answerable([]) is None
