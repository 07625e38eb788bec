"""FrameDecoder and encode_frame: whole, split, byte at a time, limits, EOF, random splits."""

from __future__ import annotations

import random

import pytest

from rillet.ipc.errors import BrokenConnection, FrameTooLarge, InvalidArgument, ProtocolError
from rillet.ipc.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FRAME_PREFIX,
    NEED_DATA,
    SPLIT_PAYLOAD_BYTES,
    FrameDecoder,
    encode_frame,
    encode_message,
    encode_message_parts,
    frame_prefix,
)

SEED = 20240611


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not NEED_DATA:
        frames.append(bytes(frame))
    return frames


def test_default_limit_and_prefix_vector():
    assert DEFAULT_MAX_FRAME_BYTES == 67174400
    assert FRAME_PREFIX.size == 4
    assert frame_prefix(1) == b"\x01\x00\x00\x00"
    assert encode_frame(b"abc") == b"\x03\x00\x00\x00abc"
    assert encode_frame(memoryview(b"xyz")) == b"\x03\x00\x00\x00xyz"


def test_whole_frame_is_a_zero_copy_view_of_the_chunk():
    chunk = encode_frame(b"hello")
    decoder = FrameDecoder()
    decoder.receive_data(chunk)
    frame = decoder.next_frame()
    assert frame == b"hello"
    assert isinstance(frame, memoryview) and frame.readonly
    assert frame.obj is chunk
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered_bytes == 0


def test_several_frames_in_one_chunk():
    payloads = [b"a", b"bb" * 100, b"c" * 5000]
    chunk = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    decoder.receive_data(chunk)
    frames = [decoder.next_frame() for _ in payloads]
    assert [bytes(f) for f in frames] == payloads
    assert all(f.obj is chunk for f in frames)
    assert decoder.next_frame() is NEED_DATA


def test_frame_fed_one_byte_at_a_time():
    payload = bytes(range(256)) * 40
    wire = encode_frame(payload) + encode_frame(b"next")
    decoder = FrameDecoder()
    frames = []
    for i in range(len(wire)):
        decoder.receive_data(wire[i:i + 1])
        frames += drain(decoder)
    assert frames == [payload, b"next"]
    assert decoder.buffered_bytes == 0


def test_trailing_bytes_are_kept_for_the_next_frame():
    first, second = encode_frame(b"first"), encode_frame(b"second frame")
    decoder = FrameDecoder()
    decoder.receive_data(first + second[:6])
    assert drain(decoder) == [b"first"]
    assert decoder.buffered_bytes == 6
    decoder.receive_data(second[6:])
    assert drain(decoder) == [b"second frame"]
    assert decoder.buffered_bytes == 0


def test_split_frame_is_assembled_and_survives_reuse_of_the_input_buffer():
    wire = bytearray(encode_frame(b"x" * 10_000))
    decoder = FrameDecoder()
    decoder.receive_data(wire[:5000])
    assert decoder.next_frame() is NEED_DATA
    tail = bytearray(wire[5000:])
    decoder.receive_data(tail)
    frame = decoder.next_frame()
    tail[:] = b"\xff" * len(tail)            # the caller reuses its receive buffer
    wire[:] = b"\xff" * len(wire)
    assert frame == b"x" * 10_000
    assert isinstance(frame.obj, bytes)


def test_readonly_view_over_bytes_is_not_copied():
    chunk = b"junk" + encode_frame(b"payload")
    decoder = FrameDecoder()
    decoder.receive_data(memoryview(chunk)[4:])
    assert decoder.next_frame().obj is chunk


def test_frame_exactly_at_the_limit_is_accepted():
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.receive_data(encode_frame(b"z" * 1000, max_frame_bytes=1000))
    assert decoder.next_frame() == b"z" * 1000


def test_one_byte_over_the_limit_is_rejected_before_the_body_arrives():
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.receive_data(FRAME_PREFIX.pack(1001))
    with pytest.raises(FrameTooLarge, match=r"^frame of 1001 bytes exceeds max_frame_bytes=1000$"):
        decoder.next_frame()
    assert decoder.buffered_bytes == 0       # nothing kept
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.receive_data(b"z" * 1001)
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.next_frame()


def test_default_limit_message():
    decoder = FrameDecoder()
    decoder.receive_data(FRAME_PREFIX.pack(70_000_000))
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert str(info.value) == "frame of 70000000 bytes exceeds max_frame_bytes=67174400"


def test_encoders_check_the_limit():
    with pytest.raises(FrameTooLarge, match="frame of 11 bytes exceeds max_frame_bytes=10"):
        encode_frame(b"x" * 11, max_frame_bytes=10)
    with pytest.raises(FrameTooLarge, match="frame of 11 bytes exceeds max_frame_bytes=10"):
        frame_prefix(11, max_frame_bytes=10)
    assert frame_prefix(10, max_frame_bytes=10) == FRAME_PREFIX.pack(10)
    with pytest.raises(ProtocolError, match="zero-length"):
        encode_frame(b"")
    with pytest.raises(ProtocolError, match="zero-length"):
        frame_prefix(0)
    with pytest.raises(InvalidArgument):
        frame_prefix(1.5)
    with pytest.raises(InvalidArgument):
        FrameDecoder(max_frame_bytes=0)
    with pytest.raises(InvalidArgument):
        FrameDecoder(max_frame_bytes=1 << 32)


def test_zero_length_frame_is_a_protocol_error():
    decoder = FrameDecoder()
    decoder.receive_data(FRAME_PREFIX.pack(0) + b"rest")
    with pytest.raises(ProtocolError, match="zero-length frame"):
        decoder.next_frame()


def test_clean_eof():
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"last"))
    decoder.receive_data(b"")
    assert not decoder.eof                   # a frame is still buffered
    assert drain(decoder) == [b"last"]
    assert decoder.eof
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(b"")                # a second EOF is harmless


def test_eof_mid_prefix():
    decoder = FrameDecoder()
    decoder.receive_data(b"\x05\x00")
    decoder.receive_data(b"")
    with pytest.raises(BrokenConnection, match=r"^connection closed mid-frame: 2 of 4 bytes received$"):
        decoder.next_frame()
    assert not decoder.eof
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.next_frame()


def test_eof_mid_body_after_whole_frames():
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"ok") + FRAME_PREFIX.pack(10) + b"abc")
    decoder.receive_data(b"")
    assert decoder.next_frame() == b"ok"     # whole frames still come out first
    with pytest.raises(BrokenConnection, match=r"^connection closed mid-frame: 7 of 14 bytes received$"):
        decoder.next_frame()


def test_data_after_eof_is_a_protocol_error():
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    with pytest.raises(ProtocolError, match="after end of stream"):
        decoder.receive_data(b"\x01\x00\x00\x00x")
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.next_frame()


def test_buffered_bytes_counts_a_parsed_prefix():
    decoder = FrameDecoder()
    decoder.receive_data(FRAME_PREFIX.pack(100) + b"x" * 10)
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered_bytes == 14


def test_dribbled_bytes_do_not_cost_an_object_each():
    # A 256 KiB frame sent one byte at a time: pieces are coalesced, not kept one per byte.
    payload = bytes(256 * 1024)
    wire = encode_frame(payload)
    decoder = FrameDecoder()
    for i in range(len(wire) - 1):
        decoder.receive_data(wire[i:i + 1])
    assert len(decoder._pieces) <= 5
    decoder.receive_data(wire[-1:])
    assert decoder.next_frame() == payload


def test_random_splits_of_200_random_frames():
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    payloads = [rng.randbytes(rng.choice((1, 2, 3, 5, rng.randrange(1, 300), rng.randrange(1, 20_000))))
                for _ in range(200)]
    wire = b"".join(encode_frame(p) for p in payloads)
    for trial in range(30):
        cuts = sorted(rng.sample(range(1, len(wire)), rng.choice((1, 5, 50, 500, 5000))))
        decoder = FrameDecoder(max_frame_bytes=20_000)
        frames: list[bytes] = []
        for start, end in zip([0] + cuts, cuts + [len(wire)]):
            decoder.receive_data(wire[start:end])
            if rng.random() < 0.8:           # sometimes let chunks pile up before draining
                frames += drain(decoder)
        decoder.receive_data(b"")
        frames += drain(decoder)
        assert frames == payloads, f"seed={SEED} trial={trial}"
        assert decoder.eof



# --- body_buffer: a large frame read straight into a buffer of its own --------------------------

def fill_body(decoder: FrameDecoder, wire: bytes, pos: int, step: int) -> int:
    """recv_into-style feeding of the body from ``wire[pos:]``, ``step`` bytes a call."""
    while (view := decoder.body_buffer()) is not None:
        n = min(step, len(view), len(wire) - pos)
        view[:n] = wire[pos:pos + n]
        view.release()
        decoder.body_received(n)
        pos += n
    return pos


def test_large_frame_lands_in_one_buffer_with_the_bytes_that_came_first():
    payload = random.Random(SEED).randbytes(300_000)
    wire = encode_frame(payload) + encode_frame(b"next")
    decoder = FrameDecoder()
    decoder.receive_data(wire[:1000])                     # prefix and the start of the body
    assert decoder.body_buffer() is None                  # the prefix is not parsed yet
    assert decoder.next_frame() is NEED_DATA
    assert len(decoder.body_buffer()) == len(payload) - 996
    assert decoder.buffered_bytes == 1000
    pos = fill_body(decoder, wire, 1000, 70_000)
    assert pos == 4 + len(payload) and decoder.body_buffer() is None
    frame = decoder.next_frame()
    assert frame == payload and frame.readonly
    decoder.receive_data(wire[pos:])
    assert drain(decoder) == [b"next"]
    assert decoder.buffered_bytes == 0


def test_small_frames_never_get_a_body_buffer():
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"x" * 1000)[:10])
    assert decoder.next_frame() is NEED_DATA
    assert decoder.body_buffer() is None
    assert decoder.body_buffer(min_bytes=100) is not None


def test_body_buffer_is_reused_only_once_no_view_of_it_is_left():
    a, b, c = (encode_frame(bytes([i]) * 100_000) for i in (1, 2, 3))
    decoder = FrameDecoder()

    def read(wire):
        decoder.receive_data(wire[:8])
        assert decoder.next_frame() is NEED_DATA
        fill_body(decoder, wire, 8, 1 << 20)
        return decoder.next_frame()
    first = read(a)
    kept = first[10:20]                                   # a view of a view still pins the buffer
    del first
    second = read(b)
    assert bytes(kept) == bytes([1]) * 10 and second.obj is not kept.obj
    del kept
    spare = id(second.obj)                                # holding .obj itself would pin it too
    del second
    third = read(c)
    assert id(third.obj) == spare and third == bytes([3]) * 100_000


def test_receive_data_tops_up_a_body_in_use_and_keeps_the_rest():
    payload = bytes(range(256)) * 400
    wire = encode_frame(payload) + encode_frame(b"after")
    decoder = FrameDecoder()
    decoder.receive_data(wire[:100])
    assert decoder.next_frame() is NEED_DATA
    view = decoder.body_buffer()
    view[:50_000] = wire[100:50_100]
    view.release()
    decoder.body_received(50_000)
    decoder.receive_data(bytearray(wire[50_100:]))        # mutable input, running past the frame
    assert drain(decoder) == [payload, b"after"]


def test_eof_inside_a_body_buffer():
    wire = encode_frame(b"z" * 100_000)
    decoder = FrameDecoder()
    decoder.receive_data(wire[:10])
    assert decoder.next_frame() is NEED_DATA
    view = decoder.body_buffer()
    view[:90] = wire[10:100]
    view.release()
    decoder.body_received(90)
    decoder.body_received(0)                              # end of stream
    with pytest.raises(BrokenConnection, match=r"^connection closed mid-frame: 100 of 100004 bytes received$"):
        decoder.next_frame()


def test_body_received_checks_its_count():
    decoder = FrameDecoder()
    with pytest.raises(InvalidArgument, match="without a body_buffer"):
        decoder.body_received(5)
    decoder.receive_data(FRAME_PREFIX.pack(100_000))
    assert decoder.next_frame() is NEED_DATA
    assert len(decoder.body_buffer()) == 100_000
    with pytest.raises(InvalidArgument, match="lacks 100000 bytes"):
        decoder.body_received(100_001)


@pytest.mark.parametrize("n", [0, 100, SPLIT_PAYLOAD_BYTES - 1, SPLIT_PAYLOAD_BYTES, 65535, 65536, 300_000])
def test_message_parts_join_to_the_one_buffer_frame(n):
    # The producer writes [head, payload] with sendmsg: the wire must not change.
    import msgspec

    from rillet.ipc import messages as m

    enc = msgspec.msgpack.Encoder()
    payload = memoryview(random.Random(n).randbytes(n))
    msg = m.ProduceRequest(7, "topic", 3, 1, 5000, payload)
    parts = encode_message_parts(enc, msg)
    assert len(parts) == (2 if n >= SPLIT_PAYLOAD_BYTES else 1)
    assert b"".join(parts) == bytes(encode_message(enc, msg))
    if len(parts) == 2:
        assert parts[1] is payload                  # sent from where it lies, not copied


def test_message_parts_refuse_a_field_that_is_not_bytes():
    import msgspec

    from rillet.ipc import messages as m

    msg = m.ProduceRequest(1, "t" * SPLIT_PAYLOAD_BYTES, 0, 1, 5000, memoryview(b"xy"))
    with pytest.raises(InvalidArgument, match="ProduceRequest.topic is a str, not bytes"):
        encode_message_parts(msgspec.msgpack.Encoder(), msg, payload_field="topic")
