"""Transactions as pure state machines on a fake clock: every RFC 3261 §17 / RFC 6026 timer and path."""

import pytest
from fake_clock import Driver
from vaxelbox.sip.errors import LocalProtocolError
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Send,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    TimedOut,
    TimerSettings,
    ToUser,
    client_key,
    server_key,
)

TIMERS = TimerSettings(t1=0.5, t2=4.0, t4=5.0)


def request(method: str, branch: str = "z9hG4bK-1", cseq: int = 1) -> Request:
    text = (
        f"{method} sip:201@example.net SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:101@example.net>;tag=f1\r\nTo: <sip:201@example.net>\r\n"
        f"Call-ID: call-1\r\nCSeq: {cseq} {method}\r\nRoute: <sip:192.0.2.1;lr>\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def response_to(req: Request, status: int, to_tag: str = "t1") -> Response:
    text = (
        f"SIP/2.0 {status} Whatever\r\n"
        + "".join(f"Via: {v}\r\n" for v in req.get_all("Via"))
        + f"From: {req.get('From')}\r\nTo: {req.get('To')}{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: {req.call_id}\r\nCSeq: {req.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


# -- client INVITE --------------------------------------------------------------------------------


def test_invite_retransmits_on_timer_a_doubling_until_timer_b():
    tx = ClientInviteTransaction(request("INVITE"), reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.advance(40)
    # A: 0.5, 1, 2, 4, 8, 16 s after the previous send; B at 64*T1 = 32 s.
    assert clock.sent_at() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert clock.of(TimedOut)
    assert tx.state is State.TERMINATED


def test_invite_over_tcp_never_retransmits():
    tx = ClientInviteTransaction(request("INVITE"), reliable=True, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.advance(31.9)
    assert clock.sent_at() == [0]
    clock.advance(0.2)
    assert tx.terminated


def test_provisional_stops_retransmission_and_waits_for_the_final():
    invite = request("INVITE")
    tx = ClientInviteTransaction(invite, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.advance(0.6)
    clock.run(tx.on_response(response_to(invite, 180)))
    clock.advance(120)  # a phone may ring for minutes: no timeout in Proceeding
    assert clock.sent_at() == [0, 0.5]
    assert tx.state is State.PROCEEDING


def test_2xx_goes_accepted_passes_retransmissions_to_the_user_then_timer_m():
    invite = request("INVITE")
    tx = ClientInviteTransaction(invite, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    ok = response_to(invite, 200)
    clock.run(tx.on_response(ok))
    assert tx.state is State.ACCEPTED
    clock.run(tx.on_response(ok))  # a retransmitted 200: the user must ACK it again
    assert [a.message.status for a in clock.of(ToUser)] == [200, 200]
    assert not [s for s in clock.of(Send) if isinstance(s.message, Request) and s.message.method == "ACK"]
    clock.advance(31.9)
    assert tx.state is State.ACCEPTED
    clock.advance(0.2)
    assert tx.terminated


def test_non_2xx_final_is_acked_by_the_transaction_and_absorbed_until_timer_d():
    invite = request("INVITE")
    tx = ClientInviteTransaction(invite, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    busy = response_to(invite, 486)
    clock.run(tx.on_response(busy))
    clock.run(tx.on_response(busy))  # retransmission: ACK again, not to the user
    acks = [s.message for s in clock.of(Send) if isinstance(s.message, Request) and s.message.method == "ACK"]
    assert len(acks) == 2
    ack = acks[0]
    assert ack.cseq == (1, "ACK")
    assert ack.to.tag == "t1"
    assert [v.branch for v in ack.vias] == ["z9hG4bK-1"]
    assert [str(r.uri) for r in ack.routes] == ["sip:192.0.2.1;lr"]
    assert str(ack.uri) == str(invite.uri)
    assert len(clock.of(ToUser)) == 1
    clock.advance(31.9)
    assert tx.state is State.COMPLETED
    clock.advance(0.2)
    assert tx.terminated


def test_transport_error_times_out_and_terminates():
    tx = ClientInviteTransaction(request("INVITE"), reliable=True, timers=TIMERS)
    tx.start()
    actions = tx.on_transport_error()
    assert isinstance(actions[0], TimedOut)
    assert tx.terminated
    assert tx.on_transport_error() == []


# -- client non-INVITE ----------------------------------------------------------------------------


def test_non_invite_retransmits_capped_at_t2_and_times_out_on_f():
    tx = ClientNonInviteTransaction(request("REGISTER"), reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.advance(40)
    # E: 0.5, 1, 2, 4, 4, 4 ... until F at 32 s.
    assert clock.sent_at() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert clock.of(TimedOut)


def test_non_invite_in_proceeding_retransmits_every_t2():
    req = request("OPTIONS")
    tx = ClientNonInviteTransaction(req, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.run(tx.on_response(response_to(req, 100)))
    clock.advance(9)
    assert clock.sent_at() == [0, 0.5, 4.5, 8.5]


def test_non_invite_final_then_timer_k_absorbs_retransmissions():
    req = request("REGISTER")
    tx = ClientNonInviteTransaction(req, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    ok = response_to(req, 200)
    clock.run(tx.on_response(ok))
    clock.run(tx.on_response(ok))
    assert len(clock.of(ToUser)) == 1
    clock.advance(4.9)
    assert tx.state is State.COMPLETED
    clock.advance(0.2)
    assert tx.terminated


# -- server INVITE --------------------------------------------------------------------------------


def status_of(send: Send) -> int:
    """The status code of a response a server transaction sends (as bytes: sip.transaction)."""
    return int(send.message[8:11])


def test_server_invite_sends_trying_and_answers_retransmissions_with_the_last_response():
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    trying = response_to(invite, 100, to_tag="")
    actions = clock.run(tx.start(trying))
    assert isinstance(actions[0], Send)
    assert status_of(actions[0]) == 100
    assert isinstance(actions[1], ToUser)
    clock.run(tx.on_request(invite))
    ringing = response_to(invite, 180)
    clock.run(tx.respond(ringing))
    clock.run(tx.on_request(invite))
    assert [status_of(s) for s in clock.of(Send)] == [100, 100, 180, 180]
    assert all(isinstance(s.message, bytes) for s in clock.of(Send))  # kept as sent, not parsed


def test_server_invite_final_retransmits_on_g_until_ack_then_i():
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.run(tx.respond(response_to(invite, 486)))
    clock.advance(3.6)  # G: 0.5, 1, 2 -> resent at 0.5, 1.5, 3.5
    assert clock.sent_at() == [0, 0.5, 1.5, 3.5]
    ack = request("ACK")
    clock.run(tx.on_request(ack))
    assert tx.state is State.CONFIRMED
    clock.advance(4.9)
    assert tx.state is State.CONFIRMED
    clock.advance(0.2)
    assert tx.terminated
    assert clock.sent_at() == [0, 0.5, 1.5, 3.5]


def test_server_invite_without_ack_times_out_on_h():
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.run(tx.respond(response_to(invite, 404)))
    clock.advance(33)
    assert clock.of(TimedOut)
    assert tx.terminated
    # G capped at T2: 0.5, 1, 2, 4, 4, ...
    assert clock.sent_at()[:7] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5]


def test_server_invite_2xx_accepted_absorbs_invite_retransmissions_until_l():
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    ok = response_to(invite, 200)
    clock.run(tx.respond(ok))
    assert tx.state is State.ACCEPTED
    clock.run(tx.on_request(invite))  # absorbed (RFC 6026)
    clock.run(tx.respond(ok))  # the user's own 2xx retransmission passes
    assert clock.sent_at() == [0, 0]
    clock.advance(32.1)
    assert tx.terminated


# -- server non-INVITE ----------------------------------------------------------------------------


def test_server_non_invite_absorbs_in_trying_and_replays_the_final_until_j():
    req = request("REGISTER")
    tx = ServerNonInviteTransaction(req, reliable=False, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.run(tx.on_request(req))
    assert clock.sent_at() == []
    clock.run(tx.respond(response_to(req, 200)))
    clock.run(tx.on_request(req))
    assert clock.sent_at() == [0, 0]
    with pytest.raises(LocalProtocolError, match="500 to REGISTER"):  # a second final: our bug, loud
        tx.respond(response_to(req, 500))
    assert clock.sent_at() == [0, 0]
    clock.advance(32.1)
    assert tx.terminated


def test_server_non_invite_over_tcp_terminates_at_once():
    req = request("OPTIONS")
    tx = ServerNonInviteTransaction(req, reliable=True, timers=TIMERS)
    clock = Driver(tx)
    clock.run(tx.start())
    clock.run(tx.respond(response_to(req, 200)))
    clock.advance(0)
    assert tx.terminated


# -- matching -------------------------------------------------------------------------------------


def test_responses_match_by_branch_and_cseq_method():
    invite = request("INVITE")
    cancel = request("CANCEL")
    assert client_key(invite) != client_key(cancel)  # same branch, different method
    assert client_key(response_to(invite, 180)) == client_key(invite)
    assert client_key(response_to(cancel, 200)) == client_key(cancel)


def test_ack_matches_its_invite_server_transaction_and_cancel_does_not():
    assert server_key(request("ACK")) == server_key(request("INVITE"))
    assert server_key(request("CANCEL")) != server_key(request("INVITE"))
    assert server_key(request("INVITE", branch="z9hG4bK-2")) != server_key(request("INVITE"))


@pytest.mark.parametrize("branch", ["z9hG4bK", "1234"])
def test_rfc2543_requests_fall_back_to_the_old_matching_rule(branch):
    key = server_key(request("INVITE", branch=branch))
    assert key[0] == "rfc2543"
    assert server_key(request("ACK", branch=branch)) == key
    assert server_key(request("INVITE", branch=branch, cseq=2)) != key


def test_a_second_final_to_an_invite_is_our_bug_and_raises():
    """Issue 13: misuse was silent (`[]`); with two routing policies a double response must be seen."""
    req = request("INVITE")
    tx = ServerInviteTransaction(req, reliable=True, timers=TIMERS)
    tx.start()
    tx.respond(response_to(req, 486))
    with pytest.raises(LocalProtocolError, match="180 to INVITE"):
        tx.respond(response_to(req, 180))
    accepted = ServerInviteTransaction(req, reliable=True, timers=TIMERS)
    accepted.start()
    accepted.respond(response_to(req, 200))
    assert accepted.respond(response_to(req, 200))  # the user's own 2xx retransmission is fine
