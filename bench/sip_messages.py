"""The relay's message layer, without sockets: what one call's messages cost to parse, check,
forward (or strip our Via from) and serialise, in microseconds of CPU.

The messages are those the edge relays for one call of the relay bench (bench/sip_relay.py):
the phone's INVITE and its retry with credentials, the cloud's INVITE back to the callee
(three Vias, double Record-Route, our Route), ACK and BYE with our Routes, the cloud's 407,
and 180, 200 and the BYE's 200 with two Vias. Each is handled as the edge does (sip.proxy:
§16.3 checks, 100 Trying for an INVITE, §16.4 route preprocessing, §16.6 forwarded copy with a
new branch; §16.7 our Via stripped from a response), twice per call: the edge sees most of them
on both legs. It measures the sip package alone; bench/sip_relay.py measures the whole agent.

    python bench/sip_messages.py [--repeat 7] [--calls 3000]

To compare with an older tree: PYTHONPATH=/path/to/old/firmware python bench/sip_messages.py
On a shared VM its CPU time moves by 10-60 % from run to run; bench/instructions.sh counts the
instructions of the same calls under valgrind, which do not move.
"""

import argparse
import time

from vaxelbox.sip.message import Request, parse_message
from vaxelbox.sip.proxy import check_request, forward_copy, new_branch, preprocess_routes, strip_top_via
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.uri import SipUri, Uri
from vaxelbox.sip.via import Via

SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
PHONE = "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1234-1-0;rport"
PHONE_SEEN = "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1234-1-0;rport=6000;received=127.0.0.1"
EDGE = (
    "Via: SIP/2.0/TCP 127.0.0.2:5062;branch=z9hG4bK0123456789.abcd1234;rport=40000;alias;received=127.0.0.2"
)
CLOUD = "Via: SIP/2.0/TCP 127.0.0.3:5060;branch=z9hG4bKcydzigwkX;i=1"
FROM = "From: sipp <sip:demo-101@127.0.0.1:6000>;tag=1234SIPpTag001"
TO, TO_TAGGED = "To: <sip:demo-102@example.net>", "To: <sip:demo-102@example.net>;tag=99SIPpTag01"
CALL_ID = "Call-ID: 1-1234@127.0.0.1"
CONTACT = "Contact: <sip:demo-101@127.0.0.1:6000;transport=UDP>"
RECORD_ROUTES = [
    "Record-Route: <sip:127.0.0.3;transport=tcp;lr>",
    "Record-Route: <sip:127.0.0.2:5062;transport=tcp;lr>",
    "Record-Route: <sip:MTI3LjAuMC4xfDYwMDA@127.0.0.1:5060;transport=udp;lr>",
]
OUR_ROUTES = [
    "Route: <sip:MTI3LjAuMC4xfDYwMDA@127.0.0.1:5060;transport=udp;lr>",
    "Route: <sip:127.0.0.2:5062;transport=tcp;lr>",
    "Route: <sip:127.0.0.3;transport=tcp;lr>",
]
CREDENTIALS = (
    'Proxy-Authorization: Digest username="demo-101",realm="example.net",nonce="abcdef0123456789",'
    'uri="sip:demo-102@example.net",response="0123456789abcdef0123456789abcdef",algorithm=MD5'
)
TO_PHONE = "Route: <sip:MTI3LjAuMC4xfDcwMDA@127.0.0.2:5062;transport=tcp;lr>"
OURS = frozenset({"127.0.0.1:5060", "127.0.0.2:5062"})


def wire(start: str, headers: list[str], body: bytes = b"") -> bytes:
    head = "\r\n".join([start, *headers, f"Content-Length: {len(body)}"])
    return f"{head}\r\n\r\n".encode() + body


def invite(*extra: str, cseq: int = 1) -> bytes:
    headers = [PHONE, FROM, TO, CALL_ID, f"CSeq: {cseq} INVITE", CONTACT, "Max-Forwards: 70", *extra]
    return wire("INVITE sip:demo-102@example.net SIP/2.0", [*headers, "Content-Type: application/sdp"], SDP)


REQUESTS = [
    invite(),
    invite(CREDENTIALS, cseq=2),
    wire(
        "INVITE sip:demo-102@127.0.0.1:7000 SIP/2.0",
        [
            *RECORD_ROUTES,
            CLOUD,
            EDGE,
            PHONE_SEEN,
            TO_PHONE,
            FROM,
            TO,
            CALL_ID,
            "CSeq: 2 INVITE",
            CONTACT,
            "Max-Forwards: 68",
            "Content-Type: application/sdp",
        ],
        SDP,
    ),
    wire(
        "ACK sip:demo-102@127.0.0.1:7000 SIP/2.0",
        [PHONE, *OUR_ROUTES, FROM, TO_TAGGED, CALL_ID, "CSeq: 2 ACK"],
    ),
    wire(
        "BYE sip:demo-102@127.0.0.1:7000 SIP/2.0",
        [PHONE, *OUR_ROUTES, FROM, TO_TAGGED, CALL_ID, "CSeq: 3 BYE"],
    ),
]
RESPONSES = [
    wire(
        "SIP/2.0 407 Proxy Authentication Required",
        [
            EDGE,
            PHONE_SEEN,
            FROM,
            f"{TO};tag=k407",
            CALL_ID,
            "CSeq: 1 INVITE",
            'Proxy-Authenticate: Digest realm="example.net", nonce="abcdef0123456789"',
        ],
    ),
    wire(
        "SIP/2.0 180 Ringing", [EDGE, PHONE_SEEN, *RECORD_ROUTES, FROM, TO_TAGGED, CALL_ID, "CSeq: 2 INVITE"]
    ),
    wire(
        "SIP/2.0 200 OK", [EDGE, PHONE_SEEN, *RECORD_ROUTES, FROM, TO_TAGGED, CALL_ID, "CSeq: 2 INVITE"], SDP
    ),
    wire("SIP/2.0 200 OK", [EDGE, PHONE_SEEN, FROM, TO_TAGGED, CALL_ID, "CSeq: 3 BYE"]),
]
RECORD_ROUTE = ("sip:MTI3@127.0.0.2:5062;transport=tcp;lr", "sip:MTI3@127.0.0.1:5060;transport=udp;lr")


def is_ours(uri: Uri) -> bool:
    return isinstance(uri, SipUri) and f"{uri.host}:{uri.port}" in OURS


def one_leg() -> None:
    for data in REQUESTS:
        request = parse_message(data)
        assert isinstance(request, Request)
        assert check_request(request, OURS) is None
        if request.method == "INVITE":
            make_response(request, 100, "Trying").to_bytes()
        preprocess_routes(request, is_ours)
        via = Via("TCP", "127.0.0.2", 5062, {"branch": new_branch(request), "rport": None})
        record_route = RECORD_ROUTE if request.method == "INVITE" else ()
        forward_copy(request, via, record_route=record_route).to_bytes()
    for data in RESPONSES:
        upstream = strip_top_via(parse_message(data))  # type: ignore[arg-type]
        _ = upstream.top_via  # where it goes next
        upstream.to_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7, help="runs; the fastest counts (default 7)")
    parser.add_argument("--calls", type=int, default=3000, help="calls per run (default 3000)")
    args = parser.parse_args()
    best = float("inf")
    for _ in range(args.repeat):
        start = time.process_time()
        for _ in range(args.calls):
            one_leg()
            one_leg()
        best = min(best, (time.process_time() - start) / args.calls)
    print(f"sip message layer: {best * 1e6:.1f} us of CPU per call (fastest of {args.repeat} runs)")


if __name__ == "__main__":
    main()
