"""FUZZ campaign: malformed frames against the SC (admin and control links) and the SPU.

The cases come from a seeded generator (pure: bytes out, no sockets) so a run can be
replayed with its seed. Seven kinds, drawn in turn:

    random         random bytes, with or without a Hello before them
    truncated      a valid request frame cut short, then the write side closed
    bad-length     length prefixes of 0, past the 64 MiB limit, or larger than the bytes that follow
    wrong-types    a frame with a known tag and the right field count, fields of random types
    random-msgpack a frame holding random well-formed msgpack (maps, arrays, unknown tags)
    garbage-batch  a valid ProduceRequest whose batch bytes are random (bad length, magic, CRC)
    poison-batch   a valid ProduceRequest whose batch has a right header and CRC around a records
                   block no consumer could read (garbage, wrong shape, count, codec, bad lz4)

Every payload but the two produce kinds is checked against the wire decoder before it is sent:
one the decoder would take is not malformed, so it is dropped (``skipped_valid``) rather than
sent. That also guarantees no random frame is ever a well-formed ShutdownCluster or DeleteTopic.
Produce kinds go to the SPU only; the rest is spread over the SC's admin link (Hello as a
client), the SC's control link (Hello as ``spu-<id>``, the prefix of the cluster's own links)
and the SPU. Each case has a connection of its own: a malformed frame closes it, by contract.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Iterator

import msgspec
import psutil

from rillet.ipc import messages as m
from rillet.ipc.compression import Codec
from rillet.ipc.framing import DEFAULT_MAX_FRAME_BYTES
from rillet.ipc.records import ATTRIBUTES_POS, BATCH_HEADER, HEADER_SIZE, MAGIC, encode_batch

KINDS = ("random", "truncated", "bad-length", "wrong-types", "random-msgpack", "garbage-batch", "poison-batch")
TARGETS = ("sc-admin", "sc-control", "spu")
FUZZ_TOPIC = "fuzz"
POISON_PER_CONNECTION = 4       # poison produces ride one connection: each is refused, the link stays
REPLY_TIMEOUT_S = 5.0
_LEN = struct.Struct("<I")
_ENC = msgspec.msgpack.Encoder()
# Every request class with its tag and field count, for "wrong-types".
_SHAPES = [(cls.__struct_config__.tag, len(cls.__struct_fields__))
           for cls in m.Message.__args__]                                     # type: ignore[attr-defined]


@dataclass(frozen=True)
class Case:
    kind: str
    target: str
    payload: bytes          # everything sent, Hello included
    requests: int = 1       # frames in it that count as malformed input (poison: one per produce)


def frame(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload


def hello(target: str, spu_id: int) -> bytes:
    client = f"spu-{spu_id}" if target == "sc-control" else "rillet-fuzz"
    return frame(_ENC.encode(m.Hello(1, m.PROTOCOL_VERSION, client)))


def poison_batch(block: bytes, *, count: int = 1, codec: int = 0) -> bytes:
    """A batch with a right header and CRC around ``block`` (the SPU must still refuse it)."""
    buf = bytearray(HEADER_SIZE) + block
    BATCH_HEADER.pack_into(buf, 0, 0, HEADER_SIZE - 12 + len(block), -1, MAGIC, 0, codec,
                           count - 1, 1, 1, -1, -1, -1, count)
    fields = list(BATCH_HEADER.unpack_from(buf, 0))
    fields[4] = zlib.crc32(memoryview(buf)[ATTRIBUTES_POS:])
    BATCH_HEADER.pack_into(buf, 0, *fields)
    return bytes(buf)


def _random_builtin(rng: random.Random, depth: int = 0):
    pick = rng.randrange(9 if depth < 2 else 7)
    if pick == 0:
        return rng.randrange(-2**63, 2**64)
    if pick == 1:
        return rng.choice([0, -1, 1, 2**31, -2**31 - 1, 2**63 - 1])
    if pick == 2:
        return rng.random() * 10 ** rng.randrange(-5, 20)
    if pick == 3:
        return "".join(rng.choice("ab-_/.\x00é0") for _ in range(rng.randrange(0, 20)))
    if pick == 4:
        return rng.randbytes(rng.randrange(0, 40))
    if pick == 5:
        return rng.choice([None, True, False])
    if pick == 6:
        return msgspec.msgpack.Ext(rng.randrange(-128, 128), rng.randbytes(rng.randrange(0, 8)))
    if pick == 7:
        return [_random_builtin(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    return {str(_random_builtin(rng, 2)): _random_builtin(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _poison_block(rng: random.Random) -> bytes:
    record = [0, None, b"v", None]
    choice = rng.randrange(6)
    if choice == 0:
        return poison_batch(rng.randbytes(rng.randrange(1, 200)))
    if choice == 1:
        return poison_batch(_ENC.encode([[0, "str key", b"v", None]]))
    if choice == 2:
        return poison_batch(_ENC.encode([record] * 2), count=rng.choice([1, 3, 100]))
    if choice == 3:
        return poison_batch(_ENC.encode([record]), codec=rng.choice([5, 6, 7]))
    if choice == 4:
        return poison_batch(b"\x00not lz4" + rng.randbytes(20), codec=int(Codec.LZ4))
    return poison_batch(_ENC.encode(_random_builtin(rng)))


def _produce(batch: bytes, cid: int) -> bytes:
    return frame(_ENC.encode(m.ProduceRequest(cid, FUZZ_TOPIC, 0, 0, 1000, memoryview(batch))))


def _valid_request(rng: random.Random, target: str) -> bytes:
    if target == "spu":
        return rng.choice([_ENC.encode(m.FetchRequest(2, FUZZ_TOPIC, 0, 0, 1 << 20, 0, 0)),
                           _ENC.encode(m.ProduceRequest(2, FUZZ_TOPIC, 0, 0, 1000, memoryview(encode_batch([(None, b"x", 1)]))))])
    return rng.choice([_ENC.encode(m.ListTopics(2, [])), _ENC.encode(m.ListPartitions(2, [])),
                       _ENC.encode(m.ListSpus(2))])


def cases(rng: random.Random, count: int, spu_id: int) -> Iterator[Case | None]:
    """``count`` cases (None for a generated payload the decoder would accept: skipped)."""
    decoder = m.new_decoder()

    def rejected(payload: bytes) -> bool:
        try:
            decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return True
        return False

    made = turn = 0
    while made < count:
        kind = KINDS[turn % len(KINDS)]
        turn += 1
        target = "spu" if kind.endswith("batch") else TARGETS[rng.randrange(len(TARGETS))]
        greet = hello(target, spu_id)
        if kind == "poison-batch":
            n = min(POISON_PER_CONNECTION, count - made)
            made += n
            yield Case(kind, target, greet + b"".join(_produce(_poison_block(rng), cid) for cid in range(2, 2 + n)), n)
            continue
        if kind in ("wrong-types", "random-msgpack"):
            tag, nfields = rng.choice(_SHAPES)
            payload = (_ENC.encode([tag] + [_random_builtin(rng) for _ in range(nfields + rng.choice([0, 0, 0, -1, 1]))])
                       if kind == "wrong-types" else _ENC.encode(_random_builtin(rng)))
            if rejected(payload):
                made += 1
                yield Case(kind, target, greet + frame(payload))
            else:
                yield None
            continue
        made += 1
        if kind == "garbage-batch":
            yield Case(kind, target, greet + _produce(rng.randbytes(rng.randrange(0, 300)), 2))
            continue
        if kind == "random":
            body = rng.randbytes(rng.randrange(1, 300))
            whole = (greet if rng.random() < 0.5 else b"") + body
            # Only the part after the Hello is judged; a random 4-byte prefix usually announces more than follows.
            yield Case(kind, target, whole)
            continue
        if kind == "truncated":
            full = frame(_valid_request(rng, target))
            yield Case(kind, target, greet + full[:rng.randrange(1, len(full))])
            continue
        if kind == "bad-length":
            body = rng.randbytes(rng.randrange(0, 64))
            prefix = rng.choice([0, DEFAULT_MAX_FRAME_BYTES + 1, 0xFFFFFFFF, len(body) + rng.randrange(1, 1 << 20)])
            yield Case(kind, target, (greet if rng.random() < 0.8 else b"") + _LEN.pack(prefix) + body)


def exchange(path, case: Case, timeout_s: float = REPLY_TIMEOUT_S) -> list:
    """Send a case, read until the server closes (or, for produces, until each has its answer)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(str(path))
        s.sendall(case.payload)
        if case.kind != "poison-batch":
            s.shutdown(socket.SHUT_WR)          # EOF: the server closes its side once it has answered
        answers, data, decoder = [], b"", m.new_decoder()
        wanted = case.requests + 1 if case.kind == "poison-batch" else None      # + HelloOk
        while wanted is None or len(answers) < wanted:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
            while len(data) >= 4 and len(data) >= 4 + _LEN.unpack_from(data)[0]:
                n = _LEN.unpack_from(data)[0]
                answers.append(decoder.decode(data[4:4 + n]))
                data = data[4 + n:]
        return answers
    except (BrokenPipeError, ConnectionResetError):
        return []                               # closed on us mid-send: a refusal too
    finally:
        s.close()


class RssSampler:
    """Peak RSS of some processes, sampled every ``period_s`` on a thread of its own.

    Keys are the names given, and ``<name>-anon`` for the anonymous part (heap and buffers,
    /proc's RssAnon): RSS also counts segment pages a fetch touched, which are page cache
    shared with every reader, not memory the process holds on a peer's behalf.
    """

    def __init__(self, pids: dict[str, int], period_s: float = 0.02) -> None:
        self.pids = dict(pids)
        self.first = self.rss()
        self.peak = dict(self.first)
        self._stop = threading.Event()
        self._period = period_s
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def rss(self) -> dict[str, int]:
        out = {}
        for name, pid in self.pids.items():
            out[name] = out[f"{name}-anon"] = 0
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            out[name] = int(line.split()[1]) * 1024
                        elif line.startswith("RssAnon:"):
                            out[f"{name}-anon"] = int(line.split()[1]) * 1024
            except OSError:
                pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for name, value in self.rss().items():
                self.peak[name] = max(self.peak[name], value)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        last = self.rss()
        for name, value in last.items():
            self.peak[name] = max(self.peak[name], value)
        return last


def _mib(n: int) -> float:
    return round(n / (1 << 20), 1)


def run_fuzz(cluster, frames: int, seed: int, spu_id: int = 5001) -> dict:
    """Send ``frames`` malformed frames; report crashes, RSS, poison acknowledged, and a normal client after."""
    cluster.create_topic(FUZZ_TOPIC)
    pids = {"sc": _sc_pid(cluster), f"spu-{spu_id}": cluster.spu_pid(spu_id)}
    paths = {"sc-admin": cluster.paths.sc_socket, "sc-control": cluster.paths.sc_socket,
             "spu": cluster.paths.spu_socket(spu_id)}
    rng = random.Random(seed)
    sampler = RssSampler(pids)
    by_kind = {k: 0 for k in KINDS}
    by_target = {t: 0 for t in TARGETS}
    sent = skipped = poison_acked = 0
    t0 = time.monotonic()
    for case in cases(rng, frames, spu_id):
        if case is None:
            skipped += 1
            continue
        answers = exchange(paths[case.target], case)
        sent += case.requests
        by_kind[case.kind] += case.requests
        by_target[case.target] += case.requests
        if case.kind == "poison-batch":
            poison_acked += sum(isinstance(a, m.ProduceResponse) for a in answers)
        elif any(isinstance(a, m.ProduceResponse) for a in answers):
            poison_acked += 1
    seconds = time.monotonic() - t0
    last = sampler.stop()
    alive = {name: psutil.pid_exists(pid) and _pid_of(cluster, name, spu_id) == pid for name, pid in pids.items()}
    stored = _log_end(cluster, paths["spu"])
    internal = _internal_errors(cluster, spu_id)
    served = _normal_client(cluster)
    return {
        "campaign": "FUZZ", "seed": seed, "frames": sent, "seconds": round(seconds, 1),
        "by_kind": by_kind, "by_target": by_target, "skipped_valid": skipped,
        "crashes": sum(not ok for ok in alive.values()), "same_pids": alive,
        "rss_mib": {name: {"before": _mib(sampler.first[name]), "peak": _mib(sampler.peak[name]),
                           "after": _mib(last[name])} for name in sampler.first},
        "poison_acknowledged": poison_acked, "records_stored_by_fuzz": stored,
        "internal_errors_logged": internal,
        "normal_client_served": served,
    }


def clean(report: dict) -> bool:
    return (report["crashes"] == 0 and report["poison_acknowledged"] == 0
            and report["records_stored_by_fuzz"] == 0 and report["internal_errors_logged"] == 0
            and report["normal_client_served"])


def _sc_pid(cluster) -> int:
    return int(cluster.paths.sc_pid_file.read_text().split()[0])


def _internal_errors(cluster, spu_id: int) -> int:
    """Handler failures the servers logged (a bug reached by input, even if the process lived)."""
    found = 0
    for log in (cluster.paths.sc_log_file, cluster.paths.spu_log_file(spu_id)):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        found += text.count("Traceback (most recent call last)")
    return found


def _log_end(cluster, spu_socket) -> int:
    """The fuzz partition's log end offset: every fuzz produce was refused, so it must be 0."""
    from rillet.ipc.connection import Connection
    conn = Connection(spu_socket)
    try:
        return conn.call(m.OffsetsRequest(conn.next_cid(), FUZZ_TOPIC, 0)).leo
    finally:
        conn.close()


def _pid_of(cluster, name: str, spu_id: int) -> int | None:
    try:
        return _sc_pid(cluster) if name == "sc" else cluster.spu_pid(spu_id)
    except Exception:           # the pid file or table entry is gone: counted as a crash
        return None


def _normal_client(cluster) -> bool:
    """A producer, a consumer over the socket and an admin call, after the campaign."""
    from rillet import ConsumerConfig, Offset
    fluvio = cluster.fluvio()
    try:
        with fluvio.topic_producer(FUZZ_TOPIC) as producer:
            offset = producer.send(None, b"after the fuzz").wait(timeout=10).offset()
        stream = fluvio.partition_consumer(FUZZ_TOPIC, 0).stream_with_config(
            Offset.absolute(offset), ConsumerConfig().disable_continuous())
        values = [r.value() for r in stream]
        listed = FUZZ_TOPIC in [t.name() for t in cluster.admin().all_topics()]
        return values == [b"after the fuzz"] and listed
    finally:
        fluvio.close()
