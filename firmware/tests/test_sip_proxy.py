"""The proxy core (RFC 3261 §16) without sockets: checks, routing, the forwarded copy, forking."""

import pytest
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.proxy import (
    ProxyCall,
    best_response,
    cancel_for,
    check_request,
    forward_copy,
    new_branch,
    preprocess_routes,
)
from vaxelbox.sip.uri import SipUri
from vaxelbox.sip.via import Via

OURS = ("192.0.2.1", 5060)


def invite(extra: str = "", uri: str = "sip:201@example.net", max_forwards: int = 70) -> Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c1\r\n{extra}"
        f"Max-Forwards: {max_forwards}\r\nFrom: <sip:101@example.net>;tag=f\r\nTo: <sip:201@example.net>\r\n"
        "Call-ID: c@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def response(request: Request, status: int, extra: str = "") -> Response:
    text = (
        f"SIP/2.0 {status} X\r\n" + "".join(f"Via: {v}\r\n" for v in request.get_all("Via")) + extra
        + f"From: {request.get('From')}\r\nTo: {request.get('To')};tag=t{status}\r\nCall-ID: c@x\r\n"
        f"CSeq: {request.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
    )  # fmt: skip
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def is_ours(uri) -> bool:
    return isinstance(uri, SipUri) and (uri.host, uri.port or 5060) == OURS


def test_max_forwards_zero_gets_483():
    assert check_request(invite(max_forwards=0), set()).status == 483


def test_proxy_require_gets_420_listing_the_tags():
    refusal = check_request(invite("Proxy-Require: foo, bar\r\n"), set())
    assert (refusal.status, refusal.get("Unsupported")) == (420, "foo, bar")


def test_a_request_coming_back_unchanged_is_a_loop_but_a_spiral_is_not():
    original = invite()
    ours = Via("UDP", *OURS, {"branch": new_branch(original)})
    looped = forward_copy(original, ours)
    # The same request arrives again with our Via below the sender's.
    looped.add("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c1", first=True)
    looped_back = parse_message(looped.to_bytes().replace(b"Max-Forwards: 69", b"Max-Forwards: 70"))
    looped_back.remove("Via")
    for via in ["SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c1", str(ours)]:
        looped_back.add("Via", via)
    assert check_request(looped_back, {"192.0.2.1:5060"}).status == 482
    spiral = parse_message(looped_back.to_bytes().replace(b"INVITE sip:201@", b"INVITE sip:301@", 1))
    assert check_request(spiral, {"192.0.2.1:5060"}) is None


def test_our_route_entries_are_removed_and_strict_routing_is_undone():
    loose = invite("Route: <sip:192.0.2.1;lr>, <sip:sbc.example.net;lr>\r\n")
    preprocess_routes(loose, is_ours)
    assert [str(r.uri) for r in loose.routes] == ["sip:sbc.example.net;lr"]
    strict = invite("Route: <sip:sbc.example.net;lr>, <sip:201@192.0.2.50>\r\n", uri="sip:192.0.2.1;lr")
    preprocess_routes(strict, is_ours)
    assert str(strict.uri) == "sip:201@192.0.2.50"
    assert [str(r.uri) for r in strict.routes] == ["sip:sbc.example.net;lr"]


def test_forwarded_copy_has_our_via_on_top_double_record_route_and_one_hop_less():
    original = invite()
    via = Via("TCP", "198.51.100.1", 5062, {"branch": new_branch(original)})
    copy = forward_copy(
        original, via, record_route=("sip:198.51.100.1:5062;transport=tcp;lr", "sip:192.0.2.1;lr")
    )
    assert copy.vias[0].host == "198.51.100.1"
    assert copy.max_forwards == 69
    assert [str(a.uri) for a in copy.record_routes] == [
        "sip:198.51.100.1:5062;transport=tcp;lr",
        "sip:192.0.2.1;lr",
    ]
    assert original.max_forwards == 70  # the original is untouched


@pytest.mark.parametrize(
    "text",
    [
        "INVITE sip:201@example.net SIP/2.0\r\nMax-Forwards: 9\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c1, SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-c0\r\n"
        "Record-Route: <sip:sbc.example.net;lr>\r\nRecord-Route: <sip:core.example.net;lr>\r\n",
        "INVITE sip:201@example.net SIP/2.0\r\nv: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bK-c1\r\n",  # no Max-Forwards
        "BYE sip:201@192.0.2.20 SIP/2.0\r\nMax-Forwards: 70\r\nRoute: <sip:192.0.2.1;lr>\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c1\r\n",
    ],
)
def test_the_forwarded_copy_is_the_request_edited_step_by_step(text: str) -> None:
    """forward_copy builds the copy in one pass (issue 12); it must equal §16.6's edits made one at
    a time: Max-Forwards less one where it stood (70 when absent), our Record-Routes above the
    first one (on top when there is none), our Via above the first."""
    request = parse_message(
        (text + "From: <sip:101@example.net>;tag=f\r\nTo: <sip:201@example.net>\r\nCall-ID: c@x\r\n"
         f"CSeq: 1 {text.split()[0]}\r\nContent-Length: 0\r\n\r\n").encode()
    )  # fmt: skip
    assert isinstance(request, Request)
    via = Via("TCP", "198.51.100.1", 5062, {"branch": "z9hG4bK-ours"})
    ours = ("sip:198.51.100.1:5062;transport=tcp;lr", "sip:192.0.2.1;lr")
    expected = Request(request.method, request.uri, list(request.headers), request.body)
    expected.replace("Max-Forwards", str((request.max_forwards or 70) - 1))
    for uri in reversed(ours):
        expected.add("Record-Route", f"<{uri}>", first=True)
    expected.add("Via", str(via), first=True)
    copy = forward_copy(request, via, record_route=ours)
    assert copy.to_bytes() == expected.to_bytes()
    # Its first-line values are carried over, not read again: they must be what its lines say.
    names = ("Via", "Max-Forwards", "Record-Route", "Route", "From", "CSeq", "Content-Length")
    assert [copy.get(n) for n in names] == [parse_message(copy.to_bytes()).get(n) for n in names]


def test_a_strict_next_hop_gets_the_request_uri_and_the_old_one_goes_last_in_route():
    """Issue 13: the cloud's 200 carried a Record-Route without ;lr above ours, and the phone's ACK
    and BYE went out loose-routed, so the strict hop dropped them (§16.6 step 6)."""
    bye = invite(
        "Route: <sip:192.0.2.1;lr>\r\nRoute: <sip:sbc.example.net>\r\nRoute: <sip:core.example.net;lr>\r\n",
        uri="sip:201@192.0.2.20:5060",
    )
    preprocess_routes(bye, lambda uri: (uri.host, uri.port or 5060) == OURS)
    copy = forward_copy(bye, Via("UDP", *OURS, {"branch": new_branch(bye)}))
    assert str(copy.uri) == "sip:sbc.example.net"
    assert copy.get_all("Route") == ["<sip:core.example.net;lr>", "<sip:201@192.0.2.20:5060>"]
    loose = invite("Route: <sip:core.example.net;lr>\r\n", uri="sip:201@192.0.2.20:5060")
    kept = forward_copy(loose, Via("UDP", *OURS, {"branch": new_branch(loose)}))
    assert str(kept.uri) == "sip:201@192.0.2.20:5060"
    assert kept.get_all("Route") == ["<sip:core.example.net;lr>"]


def test_cancel_for_a_branch():
    original = invite("Route: <sip:sbc.example.net;lr>\r\n")
    cancel = cancel_for(original)
    assert (cancel.method, cancel.cseq, str(cancel.uri)) == ("CANCEL", (1, "CANCEL"), "sip:201@example.net")
    assert [v.branch for v in cancel.vias] == ["z9hG4bK-c1"]
    assert [str(r.uri) for r in cancel.routes] == ["sip:sbc.example.net;lr"]


def test_best_response_prefers_6xx_then_the_lowest_class_and_merges_challenges():
    request = invite()
    busy, not_found, decline = response(request, 486), response(request, 404), response(request, 603)
    assert best_response([busy, decline, not_found]).status == 603
    assert best_response([response(request, 500), response(request, 302)]).status == 302
    first = response(request, 401, 'WWW-Authenticate: Digest realm="a"\r\n')
    second = response(request, 407, 'Proxy-Authenticate: Digest realm="b"\r\n')
    merged = best_response([first, second])
    assert merged.get_all("WWW-Authenticate") == ['Digest realm="a"']
    assert merged.get_all("Proxy-Authenticate") == ['Digest realm="b"']
    assert best_response([response(request, 503)]).status == 500  # §16.7: never pass 503 upstream


class Recorder:
    """Stands in for the driver: records what a ProxyCall asks it to do."""

    def __init__(self, request: Request, targets: int, strategy="parallel"):
        self.sent, self.cancelled, self.upstream = [], [], []
        self.call = ProxyCall(
            request, self.sent.append, self.cancelled.append, self.upstream.append, strategy
        )
        copies = []
        for n in range(targets):
            copy = forward_copy(request, Via("UDP", *OURS, {"branch": f"z9hG4bK-b{n}"}))
            copies.append(copy)
        self.call.start(copies)


def test_parallel_fork_forwards_the_first_2xx_and_cancels_the_others():
    proxy = Recorder(invite(), targets=3)
    a, b, c = proxy.sent
    proxy.call.on_response(a, response(a.request, 180))
    proxy.call.on_response(b, response(b.request, 180))
    proxy.call.on_response(b, response(b.request, 200))
    assert [r.status for r in proxy.upstream] == [180, 180, 200]
    assert proxy.cancelled == [a]  # c never rang: its CANCEL waits for a provisional (§9.1)
    proxy.call.on_response(c, response(c.request, 100))
    assert proxy.cancelled == [a, c]
    assert all(r.vias[0].branch == "z9hG4bK-c1" for r in proxy.upstream)  # our Via is stripped


def test_parallel_fork_without_2xx_answers_the_best_final_once_all_are_in():
    proxy = Recorder(invite(), targets=2)
    a, b = proxy.sent
    proxy.call.on_response(a, response(a.request, 486))
    assert proxy.upstream == []
    proxy.call.on_timeout(b)
    assert [r.status for r in proxy.upstream] == [486]  # same class as the 408: the first branch's wins
    proxy.call.on_response(a, response(a.request, 486))  # a retransmission changes nothing
    assert len(proxy.upstream) == 1


def test_sequential_fork_tries_the_next_target_after_ring_timeout():
    proxy = Recorder(invite(), targets=2, strategy="sequential")
    (first,) = proxy.sent
    proxy.call.on_response(first, response(first.request, 180))
    proxy.call.ring_timeout(first)
    assert proxy.cancelled == [first]
    proxy.call.on_response(first, response(first.request, 487))
    assert len(proxy.sent) == 2
    second = proxy.sent[1]
    proxy.call.on_response(second, response(second.request, 200))
    assert [r.status for r in proxy.upstream] == [180, 200]


def test_caller_cancel_cancels_ringing_branches_and_starts_no_more():
    proxy = Recorder(invite(), targets=2, strategy="sequential")
    (first,) = proxy.sent
    proxy.call.on_response(first, response(first.request, 180))
    proxy.call.cancel()
    proxy.call.on_response(first, response(first.request, 487))
    assert len(proxy.sent) == 1
    assert [r.status for r in proxy.upstream] == [180, 487]


@pytest.mark.parametrize("strategy", ["parallel", "sequential"])
def test_no_targets_gets_480(strategy):
    proxy = Recorder(invite(), targets=0, strategy=strategy)
    assert [r.status for r in proxy.upstream] == [480]
