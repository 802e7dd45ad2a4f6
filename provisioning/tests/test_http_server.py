"""The provisioning server's HTTP/1.1 (phoneprov.http on h11, phoneprov.http11), on loopback.

curl and raw sockets play the phones; a recorder stands in for ProvisioningService (the server's
only peer inside the agent), so each test sees exactly what the service was asked. The server
replaced aiohttp's (issue 12: the agent kept ~10 MiB of it for life); these pin what phones rely
on: keep-alive, a PUT body dropped without losing the connection, HEAD, HTTP/1.0, HTTPS, paths
decoded as before, malformed requests refused with h11's status (400 mostly), and a clean stop.
"""

import asyncio
import threading
import time
from pathlib import Path

import pytest
from phoneprov import http
from phoneprov.http import ProvisioningServer
from phoneprov.http11 import BadRequest, decoded_path, target_path
from phoneprov.pki import ensure_site_pki
from phoneprov.service import HttpReply, HttpRequest
from structlog.testing import capture_logs


class Recorder:
    """Answers GET and HEAD with a small file (HEAD of /slow after `slow` seconds), anything else
    with 405, and keeps every request it was handed."""

    def __init__(self, slow: float = 0.0) -> None:
        self.requests: list[HttpRequest] = []
        self.slow = slow
        self.started = threading.Event()

    def handle(self, request: HttpRequest) -> HttpReply:
        self.requests.append(request)
        self.started.set()
        if request.path == "/slow":
            time.sleep(self.slow)
        if request.path == "/boom":
            raise RuntimeError("a bug in the service")
        if request.method not in ("GET", "HEAD"):
            return HttpReply(405, b"GET only\n", headers={"Allow": "GET, HEAD"})
        return HttpReply(200, b"hello\n", "text/plain", headers={"X-Two": ["a", "b"]})


@pytest.fixture
async def served(tmp_path: Path):
    recorder = Recorder(slow=1.0)
    identity = ensure_site_pki(tmp_path / "pki", "127.0.0.1")
    server = ProvisioningServer(recorder, "127.0.0.1", 0, 0, identity)  # type: ignore[arg-type]
    await server.start()
    yield server, recorder
    await server.stop()


async def curl(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of curl with `args`."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()


async def exchange(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """Send `data` on one connection and read until the server closes it (or `wait` passes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                received += chunk
            received += b"<closed>"
    except TimeoutError:
        pass
    writer.close()
    return received


async def test_keep_alive_serves_a_phones_requests_on_one_connection(served):
    server, recorder = served
    base = f"http://127.0.0.1:{server.ports()['http']}"
    code, out, err = await curl("-A", "Yealink SIP-T46U", "-o", "/dev/null", "-o", "/dev/null",
                                "-w", "%{http_code} %{num_connects}\n", f"{base}/a.cfg?x=1", f"{base}/b%20c.cfg")  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == ["200 1", "200 0"]  # the second request reused the connection
    first, second = recorder.requests
    assert (first.method, first.target, first.path, first.user_agent) == (
        "GET",
        "/a.cfg?x=1",
        "/a.cfg",
        "Yealink SIP-T46U",
    )
    assert (second.target, second.path, second.client, second.secure) == (
        "/b%20c.cfg",
        "/b c.cfg",
        "127.0.0.1",
        False,
    )


async def test_the_reply_carries_the_services_headers_and_the_same_head_as_before(served):
    server, _ = served
    code, out, err = await curl(
        "-D", "-", "-o", "/dev/null", f"http://127.0.0.1:{server.ports()['http']}/a.cfg"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "HTTP/1.1 200 OK"
    names = [line.split(":")[0] for line in lines[1:] if line]
    assert names == ["Server", "Cache-Control", "Content-Type", "X-Two", "X-Two", "Content-Length", "Date"]
    assert "Server: vaxelbox" in lines
    assert "Cache-Control: no-store" in lines
    assert "Content-Length: 6" in lines


async def test_head_gets_the_length_but_no_body(served):
    server, recorder = served
    port = server.ports()["http"]
    received = await exchange(
        port,
        b"HEAD /a.cfg HTTP/1.1\r\nHost: x\r\n\r\nGET /b.cfg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, _, rest = received.partition(b"\r\n\r\n")
    assert b"Content-Length: 6" in head
    assert rest.startswith(b"HTTP/1.1 200 OK"), "the HEAD's answer had a body"
    assert rest.endswith(b"\r\n\r\nhello\n<closed>")
    assert [r.method for r in recorder.requests] == ["HEAD", "GET"]


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 11\r\n\r\nphone log\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nphone\r\n4\r\n log\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_put_body_is_dropped_and_the_connection_serves_the_next_request(served, body):
    """Poly phones PUT their logs: refused (405), and the same connection goes on."""
    server, recorder = served
    received = await exchange(server.ports()["http"], b"PUT /0004f2aabbcc-app.log HTTP/1.1\r\nHost: x\r\n" + body
                              + b"GET /a.cfg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert received.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: GET, HEAD\r\n" in received
    assert received.count(b"HTTP/1.1 ") == 2
    assert received.endswith(b"hello\n<closed>")
    assert [r.method for r in recorder.requests] == ["PUT", "GET"]


async def test_a_client_waiting_for_100_continue_gets_the_answer_and_the_connection_closes(served):
    server, _ = served
    received = await exchange(
        server.ports()["http"],
        b"PUT /x.log HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    assert received.startswith(b"HTTP/1.1 405 ")
    assert b"Connection: close\r\n" in received
    assert received.endswith(b"<closed>")


@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n"], ids=["plain", "keep-alive"])
async def test_http_1_0_gets_its_answer_and_the_connection_closes(served, connection):
    """h11 answers in its own version (RFC 9110 §2.5) and keeps no HTTP/1.0 connection open."""
    server, _ = served
    received = await exchange(server.ports()["http"], b"GET /a.cfg HTTP/1.0\r\n" + connection + b"\r\n")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in received
    assert received.endswith(b"hello\n<closed>")


async def test_https_with_the_site_ca(served, tmp_path):
    server, recorder = served
    url = f"https://127.0.0.1:{server.ports()['https']}/a.cfg"
    code, out, err = await curl("--cacert", str(tmp_path / "pki" / "ca.pem"), url)
    assert code == 0, err
    assert out == "hello\n"
    assert recorder.requests[-1].secure is True


HOST = b"Host: x\r\n"  # so that each request below is refused for its own fault, not for lacking Host


@pytest.mark.parametrize(
    ("request_bytes", "status", "detail"),
    [
        (b"GARBAGE\r\n\r\n", "400 Bad Request", "illegal request line"),
        (b"GET /a.cfg HTTP/1.1\r\n\r\n", "400 Bad Request", "Missing mandatory Host: header"),
        (b"GET /a.cfg HTTP/1.1\r\nHost x\r\n\r\n", "400 Bad Request", "illegal header line"),
        (
            b"GET /a.cfg HTTP/2.0\r\n" + HOST + b"\r\n",
            "400 Bad Request",
            "only HTTP/1.0 and HTTP/1.1 are spoken here",
        ),
        (b"GET a.cfg HTTP/1.1\r\n" + HOST + b"\r\n", "400 Bad Request", "invalid request target"),
        (b"GET * HTTP/1.1\r\n" + HOST + b"\r\n", "400 Bad Request", "only OPTIONS may ask for *"),
        (b"GET /\xc3\xa9.cfg HTTP/1.1\r\n" + HOST + b"\r\n", "400 Bad Request", "illegal request line"),
        (
            b"PUT /a HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "400 Bad Request",
            "conflicting Content-Length headers",
        ),
        (
            b"PUT /a HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
            "400 Bad Request",
            "bad Content-Length",
        ),
        (
            b"PUT /a HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
            "501 Not Implemented",
            "Only Transfer-Encoding: chunked is supported",
        ),
        # A head h11 still has not seen the end of after 16 KiB (its max_incomplete_event_size).
        (
            b"GET /a.cfg HTTP/1.1\r\n" + HOST + b"X: " + b"a" * 20000,
            "431 Request Header Fields Too Large",
            "Receive buffer too long",
        ),
        (b"GET /" + b"a" * 20000, "431 Request Header Fields Too Large", "Receive buffer too long"),
    ],
    ids=[
        "garbage",
        "no-host",
        "no-colon",
        "http2",
        "relative",
        "star-get",
        "raw-utf8",
        "two-lengths",
        "negative-length",
        "gzip-coding",
        "long-header",
        "long-target",
    ],
)
async def test_a_malformed_request_gets_h11s_status_and_the_connection_closes(
    served, request_bytes, status, detail
):
    """...and one `provisioning refused` line at WARNING (as the service's refusals: the installer
    sees why the phone failed, fail2ban counts it) with the phone's address, status and reason."""
    server, recorder = served
    with capture_logs() as logs:
        received = await exchange(server.ports()["http"], request_bytes)
    assert received.startswith(f"HTTP/1.1 {status}\r\n".encode()), received[:200]
    assert b"Connection: close\r\n" in received
    assert received.endswith(b"<closed>")
    assert recorder.requests == [], "the service was asked"
    assert logs == [
        {
            "event": "provisioning refused",
            "log_level": "warning",
            "client": "127.0.0.1",
            "reason": "bad-request",
            "status": int(status.split()[0]),
            "detail": detail,
        }
    ]


@pytest.mark.parametrize(
    ("request_bytes", "detail"),
    [
        (b"GET /a.cfg?password=hunter2 HTTP/1.1 x\r\n" + HOST + b"\r\n", "illegal request line"),
        (
            b"GET /a.cfg HTTP/1.1\r\n" + HOST + b"Authorization : Basic aHVudGVyMg==\r\n\r\n",
            "illegal header line",
        ),
    ],
    ids=["query", "authorization"],
)
async def test_the_refusal_line_leaves_out_what_h11_quotes(served, request_bytes, detail):
    """h11's reason quotes the line it could not read; the log keeps only its words."""
    server, _ = served
    with capture_logs() as logs:
        received = await exchange(server.ports()["http"], request_bytes)
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    (line,) = logs
    assert (line["event"], line["detail"]) == ("provisioning refused", detail)
    assert "hunter2" not in repr(logs)
    assert "aHVudGVyMg" not in repr(logs)  # hunter2 in base64


async def test_a_request_cut_by_its_phone_is_no_refusal(served):
    """A phone switched off in the middle of its request head refused nothing: a debug line."""
    server, _ = served
    with capture_logs() as logs:
        _, writer = await asyncio.open_connection("127.0.0.1", server.ports()["http"])
        writer.write(b"GET /a.cfg HTTP/1.1\r\n" + HOST)
        await writer.drain()
        writer.close()
        async with asyncio.timeout(5):
            while not logs:
                await asyncio.sleep(0.01)
    assert [(line["event"], line["log_level"]) for line in logs] == [("provisioning request cut", "debug")]


async def test_a_failing_service_costs_one_request_not_the_server(served):
    server, _ = served
    port = server.ports()["http"]
    received = await exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert received.endswith(b"<closed>")
    assert (await exchange(port, b"GET /a.cfg HTTP/1.0\r\n\r\n")).endswith(b"hello\n<closed>")


async def test_an_idle_connection_is_closed_after_the_keep_alive_time(served, monkeypatch):
    server, _ = served
    monkeypatch.setattr(http, "KEEP_ALIVE", 0.3)
    started = time.monotonic()
    received = await exchange(server.ports()["http"], b"GET /a.cfg HTTP/1.1\r\nHost: x\r\n\r\n", wait=5)
    assert received.endswith(b"hello\n<closed>")
    assert time.monotonic() - started < 3


async def test_stop_closes_idle_connections_and_lets_an_answer_in_progress_finish(tmp_path):
    recorder = Recorder(slow=0.5)
    server = ProvisioningServer(recorder, "127.0.0.1", 0, 0, ensure_site_pki(tmp_path, "127.0.0.1"))  # type: ignore[arg-type]
    await server.start()
    port = server.ports()["http"]
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    slow = asyncio.create_task(exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", wait=5))
    await asyncio.to_thread(recorder.started.wait, 5)
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < http.SHUTDOWN_GRACE + 0.5
    assert (await slow).endswith(b"hello\n<closed>")
    assert await asyncio.wait_for(idle_reader.read(), 2) == b""  # closed by the server
    idle_writer.close()


# Targets -> the path aiohttp 3.14 (yarl) handed the service, recorded from the server this one
# replaced: percent-escapes decoded where they spell UTF-8, others and `+` kept as written.
AS_BEFORE = {
    "/ca.pem": "/ca.pem",
    "/ca.pem?x=1&y=%20": "/ca.pem",
    "http://x/ca.pem?q": "/ca.pem",
    "/%2e%2e/ca.pem": "/../ca.pem",
    "/a%20b.cfg": "/a b.cfg",
    "/a+b.cfg": "/a+b.cfg",
    "/%2Fetc.cfg": "//etc.cfg",
    "/%zz.cfg": "/%zz.cfg",
    "/%ff.cfg": "/%ff.cfg",
    "/%c3%a9%ff.cfg": "/é%ff.cfg",
    "/cfg%25.cfg": "/cfg%.cfg",
    "//ca.pem": "//ca.pem",
    "/x/../ca.pem": "/x/../ca.pem",
    "/ca.pem%00": "/ca.pem\x00",
    "/a#frag": "/a",
    "/%C3%A9.cfg": "/é.cfg",
}


@pytest.mark.parametrize("target", AS_BEFORE)
def test_paths_are_decoded_as_the_service_saw_them_before(target):
    assert target_path("GET", target) == AS_BEFORE[target]


def test_a_target_that_names_no_path_is_refused():
    assert target_path("OPTIONS", "*") == "*"
    for method, target in (("GET", "*"), ("GET", "a.cfg"), ("GET", "x:/a")):
        with pytest.raises(BadRequest):
            target_path(method, target)


def test_decoded_path_keeps_what_is_not_an_escape():
    assert decoded_path("/%4") == "/%4"
    assert decoded_path("/100%") == "/100%"


async def test_header_values_are_trimmed_and_the_first_of_a_name_counts(served):
    server, recorder = served
    received = await exchange(server.ports()["http"], b"GET /a.cfg HTTP/1.1\r\n" + HOST
                              + b"User-Agent:  a  b \r\nuser-agent: other\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert received.endswith(b"hello\n<closed>")
    assert [r.user_agent for r in recorder.requests] == ["a  b"]
