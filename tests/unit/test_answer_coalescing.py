"""The server shell writes the answers to the requests of one read together (ipc/transport.py,
COALESCE_BYTES): in order, in one write, and an error answer before a close still goes out.

A real asyncio server on a real Unix socket in this process; the only addition is a count of
the transport's writes (a thin proxy in front of the real transport)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

import pytest

from rillet.ipc import messages as m
from rillet.ipc import transport
from rillet.ipc.framing import NEED_DATA, FrameDecoder, encode_message

log = logging.getLogger("test-coalescing")


class _CountingTransport:
    """The real transport, with its writes counted (sizes kept)."""

    def __init__(self, real, writes: list[int]) -> None:
        self._real, self._writes = real, writes

    def write(self, data) -> None:
        self._writes.append(len(data))
        self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _Echo(transport.FramedProtocol):
    """Answers every request with Ok(cid); a request with cid 13 gets ``big`` bytes back."""

    def __init__(self, writes: list[int], big: int = 0) -> None:
        super().__init__(log)
        self._writes, self._big = writes, big

    def connection_made(self, t) -> None:
        super().connection_made(t)
        self.transport = _CountingTransport(t, self._writes)

    def dispatch(self, msg):
        if msg.cid == 13 and self._big:
            return m.ErrorResponse(msg.cid, 1, "x" * self._big)
        return m.Ok(msg.cid)


@pytest.fixture
def sock_dir():
    d = Path(tempfile.mkdtemp(prefix="rillet-coalesce-", dir="/tmp"))
    d.chmod(0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def _exchange(path: Path, make, payload: bytes, answers: int) -> tuple[list, bool]:
    """Serve ``make()`` on ``path``, send ``payload`` in one write, read ``answers`` answers;
    also whether the server closed the connection after them."""
    server = await transport.start_unix_server(make, path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(payload)
            await writer.drain()
            decoder, decode, got = FrameDecoder(), m.new_decoder().decode, []
            while len(got) < answers:
                data = await asyncio.wait_for(reader.read(1 << 20), 5)
                if not data:
                    break
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not NEED_DATA:
                    got.append(decode(frame))
            try:
                eof = await asyncio.wait_for(reader.read(1), 0.2) == b""
            except asyncio.TimeoutError:
                eof = False
            return got, eof
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


def _requests(cids) -> bytes:
    enc = m.new_encoder()
    out = bytearray(encode_message(enc, m.Hello(1, m.PROTOCOL_VERSION, "test")))
    for cid in cids:
        out += encode_message(enc, m.OffsetsRequest(cid, "t", 0))
    return bytes(out)


def test_answers_to_one_read_go_out_in_one_write_in_order(sock_dir):
    writes: list[int] = []
    cids = list(range(2, 52))
    got, _eof = asyncio.run(_exchange(sock_dir / "s.sock", lambda: _Echo(writes), _requests(cids), 1 + len(cids)))
    assert isinstance(got[0], m.HelloOk)
    assert [a.cid for a in got[1:]] == cids and all(isinstance(a, m.Ok) for a in got[1:])
    # 51 answers; the server may read the 51 requests in more than one piece, but not in 51.
    assert 1 <= len(writes) <= 3, writes


def test_held_answers_go_out_before_a_protocol_error_closes(sock_dir):
    writes: list[int] = []
    payload = _requests([2, 3, 4]) + b"\x03\x00\x00\x00\xc1\xc1\xc1"      # a frame msgpack cannot decode
    got, eof = asyncio.run(_exchange(sock_dir / "s.sock", lambda: _Echo(writes), payload, 5))
    assert [type(a) for a in got] == [m.HelloOk, m.Ok, m.Ok, m.Ok, m.ErrorResponse]
    assert [a.cid for a in got] == [1, 2, 3, 4, 0] and eof


def test_past_coalesce_bytes_the_held_answers_are_written_at_once(sock_dir):
    writes: list[int] = []
    big = transport.COALESCE_BYTES           # one answer over the limit: written when sent
    got, _eof = asyncio.run(_exchange(sock_dir / "s.sock", lambda: _Echo(writes, big), _requests([2, 13, 14]), 4))
    assert [a.cid for a in got] == [1, 2, 13, 14]
    assert len(got[2].message) == big
    assert len(writes) == 2 and writes[0] > big and writes[1] < 100, writes
