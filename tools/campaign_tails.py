"""TAILS campaign: torn and damaged active-segment tails, each recovered to the last whole batch.

Storage level and in one process (broker/storage's recovery, the code an SPU runs when it opens
a replica), so ten thousand cases take seconds, not a cluster restart each. A "golden" replica
directory is written with real record batches (encode_batch, several codecs and sizes, two
leader epochs, sometimes after a segment roll so the active segment does not start at offset 0)
and closed cleanly. Each case copies it, damages the active segment's bytes, reopens it with
``PartitionLog.open`` and compares the result with a byte model that knows nothing of the
recovery code: the batches kept must be the longest prefix of the golden batches that the
damaged file still holds byte for byte (a batch passes length, magic, CRC and offset checks
only when it is intact), the log end offset the one after them, the bytes read back those
batches exactly, and what followed them (up to its last non-zero byte) set aside in the side
file and zeroed in the segment. Damage kinds:

    cut        every cut point of the last batches of the tail (a write that never landed):
               the rest zero-filled (the preallocated file) or the file truncated there
    garbage    random bytes written at a random position, over the tail or past its end
    zero-page  4 KiB of the segment zeroed, at every 512-byte sector boundary (a page, or a run
               of sectors, the kernel never wrote back)
    bit-flip   one bit flipped anywhere in the tail's batches

One field is outside every check: the leader epoch (bytes 12-15 of a batch), which the leader
stamps after the producer computed the CRC (as in Kafka). The model ignores those bytes when it
decides which batches are whole, and counts the cases whose only change was there
(``epoch_only``): recovery keeps such a batch, epoch changed, and nothing can tell.

A mismatch is a case where the reopened log differs from the model in any of those ways.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rillet.broker.storage import PartitionLog
from rillet.ipc.records import PREAMBLE, encode_batch

SEGMENT_SIZE = 64 * 1024
PAGE = 4096
SECTOR = 512
TAIL_BATCHES = 3                # "cut" walks every position of the last three batches
RANDOM_PER_GOLDEN = 600         # garbage and bit flips per golden directory, beside its cut points and windows
KINDS = ("cut", "garbage", "zero-page", "bit-flip")
CODECS = ("none", "lz4", "zstd", "gzip", "snappy")
_LOG = logging.getLogger("rillet.campaign.tails")


@dataclass
class Golden:
    files: dict[str, bytes]     # every file of the cleanly closed directory
    active: str                 # the active segment's name
    data: bytes                 # the active segment's used bytes
    bounds: list[int]           # batch start positions in it, then its end
    next_offsets: list[int]     # the log end offset when the first i batches are kept


def make_golden(workdir: Path, rng: random.Random) -> Golden:
    d = workdir / "golden"
    shutil.rmtree(d, ignore_errors=True)
    log = PartitionLog.open(d, segment_size=SEGMENT_SIZE, logger=_LOG)
    try:
        if rng.random() < 0.5:          # roll once: the active segment then starts above offset 0
            while log.segment_count == 1:
                log.append(_batch(rng, 2000, 6000), leader_epoch=1)
        for i in range(rng.randrange(4, 10)):           # larger batches: the segment spans pages
            log.append(_batch(rng, 30, 3000), leader_epoch=1)
        for i in range(TAIL_BATCHES + rng.randrange(0, 3)):   # the tail: smaller, every cut point taken
            log.append(_batch(rng, 30, 500), leader_epoch=2)
    finally:
        log.close()
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    shutil.rmtree(d)
    active = max(n for n in files if n.endswith(".log"))
    data = files[active]
    bounds, pos = [0], 0
    while pos < len(data):
        pos += PREAMBLE.size + PREAMBLE.unpack_from(data, pos)[1]
        bounds.append(pos)
    assert pos == len(data), "a cleanly closed segment is trimmed to its last batch"
    next_offsets = [int(active[:20])]
    for start in bounds[:-1]:
        next_offsets.append(_next_offset(data, start))
    return Golden(files, active, data, bounds, next_offsets)


def _batch(rng: random.Random, low: int, high: int) -> bytes:
    count = rng.randrange(1, 6)
    size = rng.randrange(low, high) // count
    records = [(rng.randbytes(4) if rng.random() < 0.5 else None, rng.randbytes(max(1, size)), 1_700_000_000_000 + i)
               for i in range(count)]
    return encode_batch(records, rng.choice(CODECS))


def _next_offset(data: bytes, start: int) -> int:
    import struct
    base = struct.unpack_from("<q", data, start)[0]
    last_delta = struct.unpack_from("<i", data, start + 23)[0]     # BATCH_HEADER: last offset delta
    return base + last_delta + 1


def damages(golden: Golden, rng: random.Random, budget: int):
    """(kind, damaged active-segment bytes, keep the file's preallocated size) for one golden.

    Every cut point of the tail and every zeroed window come first in turn with random damage,
    so a small budget still sees each kind; ``cases_for(golden)`` is the budget that covers them all.
    """
    data = golden.data
    first = golden.bounds[max(0, len(golden.bounds) - 1 - TAIL_BATCHES)]
    cuts = iter([("cut", data[:p], p % 2 == 0) for p in range(first, len(data) + 1)])
    pages = iter([("zero-page", data[:w] + bytes(min(PAGE, len(data) - w)) + data[w + PAGE:], True)
                  for w in range(0, len(data), SECTOR)])
    made = 0
    while made < budget:
        for source in (cuts, pages, None):
            if made >= budget:
                return
            item = next(source, None) if source is not None else _random_damage(golden, rng, first, made)
            if item is not None:
                made += 1
                yield item


def cases_for(golden: Golden) -> int:
    first = golden.bounds[max(0, len(golden.bounds) - 1 - TAIL_BATCHES)]
    return (len(golden.data) + 1 - first) + len(range(0, len(golden.data), SECTOR)) + RANDOM_PER_GOLDEN


def _random_damage(golden: Golden, rng: random.Random, first: int, made: int):
    data = golden.data
    if made % 2:
        p = rng.randrange(first, len(data) + 200)
        garbage = rng.randbytes(rng.randrange(1, 300))
        padded = data + bytes(max(0, p - len(data)))
        return "garbage", padded[:p] + garbage + padded[p + len(garbage):], rng.random() < 0.5
    p = rng.randrange(first, len(data))
    flipped = bytearray(data)
    flipped[p] ^= 1 << rng.randrange(8)
    return "bit-flip", bytes(flipped), True


def expected(golden: Golden, damaged: bytes) -> tuple[int, bytes]:
    """(batches kept, bytes set aside) by the byte model."""
    plain, hurt = _mask_epochs(golden, golden.data), _mask_epochs(golden, damaged)
    kept = max(i for i, b in enumerate(golden.bounds) if len(hurt) >= b and hurt[:b] == plain[:b])
    return kept, damaged[golden.bounds[kept]:].rstrip(b"\0")


def _mask_epochs(golden: Golden, data: bytes) -> bytes:
    out = bytearray(data)
    for start in golden.bounds[:-1]:
        out[start + 12:start + 16] = bytes(len(out[start + 12:start + 16]))
    return bytes(out)


def check(workdir: Path, golden: Golden, damaged: bytes, full_size: bool) -> str | None:
    """Reopen a damaged copy; None when it matches the model, else what differs."""
    d = workdir / "case"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    for name, data in golden.files.items():
        body = damaged if name == golden.active else data
        with open(d / name, "wb") as f:
            f.write(body)
            if name == golden.active and full_size:
                f.truncate(SEGMENT_SIZE)        # the preallocated rest of the file reads as zeros
    # The file as recovery sees it: a zero-filled rest reads as zeros, and a batch that happens to
    # end in zero bytes is whole again when only those were torn off.
    seen = damaged + bytes(SEGMENT_SIZE - len(damaged)) if full_size else damaged
    kept, cut = expected(golden, seen)
    log = PartitionLog.open(d, segment_size=SEGMENT_SIZE, logger=_LOG)
    try:
        if log.leo != golden.next_offsets[kept]:
            return f"log end offset {log.leo}, expected {golden.next_offsets[kept]} ({kept} batches kept)"
        base = int(golden.active[:20])
        got = bytes(log.read(base, 1 << 20)) if log.leo > base else b""
        if got != seen[:golden.bounds[kept]]:
            return f"read back {len(got)} bytes, expected the first {kept} batches ({golden.bounds[kept]} bytes)"
        sides = sorted(d.glob("*.cut-*"))
        if not cut:
            return f"side files {sides} where nothing was to be cut" if sides else None
        side = d / f"{golden.active}.cut-{golden.bounds[kept]}"
        if sides != [side] or side.read_bytes() != cut:
            return f"side files {sides}, expected {side.name} holding {len(cut)} bytes"
    finally:
        log.close()
    with open(d / golden.active, "rb") as f:
        f.seek(golden.bounds[kept])
        if f.read(len(cut)).strip(b"\0"):
            return "the cut bytes are still in the segment"
    return None


def run_tails(cases: int, seed: int, workdir: str | None = None) -> dict:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="tails-", dir=workdir))
    counts = {k: 0 for k in KINDS}
    mismatches: list[str] = []
    goldens = epoch_only = 0
    t0 = time.monotonic()
    quiet = _LOG.level, _LOG.propagate
    _LOG.setLevel(logging.ERROR)        # every case logs its cut at WARNING: ten thousand lines say nothing
    try:
        while sum(counts.values()) < cases:
            golden = make_golden(root, rng)
            goldens += 1
            for kind, damaged, full in damages(golden, rng, min(cases_for(golden), cases - sum(counts.values()))):
                counts[kind] += 1
                problem = check(root, golden, damaged, full)
                whole = golden.bounds[-1]
                if damaged[:whole] != golden.data[:whole] and _mask_epochs(golden, damaged)[:whole] == _mask_epochs(golden, golden.data):
                    epoch_only += 1
                if problem:
                    mismatches.append(f"{kind}: {problem}")
    finally:
        _LOG.setLevel(quiet[0])
        shutil.rmtree(root, ignore_errors=True)
    return {"campaign": "TAILS", "seed": seed, "cases": sum(counts.values()), "by_kind": counts,
            "goldens": goldens, "seconds": round(time.monotonic() - t0, 1),
            "mismatches": len(mismatches), "epoch_only": epoch_only, "first_mismatches": mismatches[:5]}


def clean(report: dict) -> bool:
    return report["mismatches"] == 0


