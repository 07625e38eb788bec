"""The sans-IO client session (ipc/session.py): bytes in, answers out; cids, the
handshake, error translation and deadlines, with no socket and no clock."""

from __future__ import annotations

import msgspec
import pytest

from rillet.ipc import messages as m
from rillet.ipc.errors import Busy, NotLeader, ProtocolError, UnsupportedVersion
from rillet.ipc.framing import NEED_DATA, FrameDecoder, encode_frame, encode_message
from rillet.ipc.session import ClientSession

ENCODER = m.new_encoder()


def wire(*msgs) -> bytes:
    return b"".join(bytes(encode_message(ENCODER, msg)) for msg in msgs)


def sent(frame) -> m.Message:
    frames = FrameDecoder()
    frames.receive_data(bytes(frame))
    return m.new_decoder().decode(frames.next_frame())


def greeted(timeout_s=None) -> ClientSession:
    session = ClientSession("SPU 7", "test", request_timeout_s=timeout_s)
    hello = sent(session.start(now=0.0))
    session.receive_data(wire(m.HelloOk(hello.cid, m.PROTOCOL_VERSION, "spu-7")))
    assert session.next_event() is NEED_DATA
    return session


def test_handshake_is_taken_inside_and_names_the_server():
    session = ClientSession("SPU 7", "me")
    hello = sent(session.start())
    assert isinstance(hello, m.Hello) and hello.client_id == "me" and hello.version == m.PROTOCOL_VERSION
    assert not session.greeted
    session.receive_data(wire(m.HelloOk(hello.cid, m.PROTOCOL_VERSION, "spu-7")))
    assert session.next_event() is NEED_DATA
    assert session.greeted and session.server == "spu-7"
    with pytest.raises(ProtocolError):
        session.start()


def test_refused_handshake_raises_its_error_naming_the_peer():
    session = ClientSession("SPU 7", "me")
    hello = sent(session.start())
    session.receive_data(wire(m.ErrorResponse(hello.cid, UnsupportedVersion.code, "version 9")))
    with pytest.raises(UnsupportedVersion, match="SPU 7 refused the handshake: version 9"):
        session.next_event()


def test_answers_are_matched_to_their_tokens_whatever_the_order_and_chunking():
    session = greeted()
    a = sent(session.send(lambda cid: m.OffsetsRequest(cid, "t", 0), token="a"))
    b = sent(session.send(lambda cid: m.OffsetsRequest(cid, "t", 1), token="b"))
    assert a.cid != b.cid
    data = wire(m.OffsetsResponse(b.cid, 0, 5, 5), m.ErrorResponse(a.cid, NotLeader.code, "moved"))
    for i in range(len(data)):            # a byte at a time
        session.receive_data(data[i:i + 1])
    first, second = session.next_event(), session.next_event()
    assert (first.token, first.error) == ("b", None)
    assert second.token == "a" and isinstance(second.error, NotLeader) and "moved" in str(second.error)
    assert session.next_event() is NEED_DATA and session.pending == {}


def test_a_message_with_its_own_cid_and_unknown_cids():
    session = greeted()
    cid = session.next_cid()
    session.send(m.OffsetsRequest(cid, "t", 0), token="mine")
    session.receive_data(wire(m.ErrorResponse(0, Busy.code, "too many"), m.OffsetsResponse(cid, 0, 1, 1)))
    refused = session.next_event()
    assert refused.cid == 0 and refused.token is None and isinstance(refused.error, Busy)
    assert session.next_event().token == "mine"


def test_malformed_frame_is_a_protocol_error_and_the_session_stays_failed():
    session = greeted()
    session.receive_data(encode_frame(msgspec.msgpack.encode({"not": "a message"})) + wire(m.Ok(3)))
    with pytest.raises(ProtocolError, match="malformed message from SPU 7"):
        session.next_event()
    with pytest.raises(ProtocolError):
        session.next_event()


def test_deadlines_are_data_in_submission_order():
    session = ClientSession("SPU 7", "me", request_timeout_s=2.0)
    session.start(now=10.0)
    assert session.first_deadline() == 12.0
    session.send(lambda cid: m.OffsetsRequest(cid, "t", 0), token="x", now=11.0)
    assert not session.expired(11.9) and session.expired(12.0)
    left = session.take_pending()
    assert left == [("x", 13.0)]            # the handshake is no request of the caller's
    assert session.first_deadline() is None and not session.expired(99.0)


def test_no_timeout_means_no_deadline():
    session = greeted()
    session.send(lambda cid: m.OffsetsRequest(cid, "t", 0), token="x", now=5.0)
    assert not session.expired(1e12)
