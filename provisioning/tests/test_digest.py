"""HTTP Digest on the server side: RFC 7616's own example, stateless nonces, replays elsewhere refused."""

import hashlib

from phoneprov import digest
from phoneprov.digest import NONCE_LIFETIME, DigestAuth


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _authorization(auth: DigestAuth, user: str, password: str, method: str, uri: str, algorithm: str = "MD5"):
    challenge = next(c for c in auth.challenges() if f"algorithm={algorithm}," in c)
    nonce = challenge.split('nonce="')[1].split('"')[0]
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
    ha1 = h(f"{user}:{digest.REALM}:{password}".encode()).hexdigest()
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    response = h(f"{ha1}:{nonce}:00000001:abcdef:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{digest.REALM}", nonce="{nonce}", uri="{uri}", '
        f'algorithm={algorithm}, qop=auth, nc=00000001, cnonce="abcdef", response="{response}"'
    )


def test_rfc7616_example_responses():
    # RFC 7616 section 3.9.1, with its realm.
    params = {"qop": "auth", "nc": "00000001", "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"}
    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    original = digest.REALM
    try:
        digest.REALM = "http-auth@example.org"
        md5 = digest._response(
            hashlib.md5, "Mufasa", "Circle of Life", "GET", "/dir/index.html", nonce, params
        )
        sha = digest._response(
            hashlib.sha256, "Mufasa", "Circle of Life", "GET", "/dir/index.html", nonce, params
        )
    finally:
        digest.REALM = original
    assert md5 == "8ca523f5e9506fed4657c9700eebdbec"
    assert sha == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_right_password_passes_wrong_one_and_other_uri_do_not():
    clock = Clock()
    auth = DigestAuth(clock)
    users = {"0015654aa937": "s3cret-credential"}
    header = _authorization(auth, "0015654aa937", "s3cret-credential", "GET", "/0015654aa937.cfg")
    assert auth.verify("GET", "/0015654aa937.cfg", header, users.get).username == "0015654aa937"
    assert auth.verify("GET", "/000413922d24.cfg", header, users.get).username is None  # replayed elsewhere
    wrong = _authorization(auth, "0015654aa937", "guess", "GET", "/0015654aa937.cfg", "SHA-256")
    assert auth.verify("GET", "/0015654aa937.cfg", wrong, users.get).username is None
    assert auth.verify("GET", "/0015654aa937.cfg", None, users.get).username is None
    assert auth.verify("GET", "/0015654aa937.cfg", "Basic Zm9vOmJhcg==", users.get).username is None


def test_expired_nonce_is_stale_and_another_process_nonce_is_refused():
    clock = Clock()
    auth = DigestAuth(clock)
    users = {"m": "pw"}
    header = _authorization(auth, "m", "pw", "GET", "/f", "SHA-256")
    clock.now += NONCE_LIFETIME + 1
    verdict = auth.verify("GET", "/f", header, users.get)
    assert verdict.username is None
    assert verdict.stale
    other = DigestAuth(clock)  # a restarted agent: new key
    assert other.verify("GET", "/f", _authorization(auth, "m", "pw", "GET", "/f"), users.get).username is None
