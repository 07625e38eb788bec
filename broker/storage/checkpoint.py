"""Small checkpoint files of a replica directory, each replaced atomically.

``replication.chk``, the high-watermark checkpoint, little-endian, 20 bytes (``CHECKPOINT``)::

    pos size field     meaning
      0   4  magic     b"RLHW"
      4   2  version   CHECKPOINT_VERSION (1)
      6   2  reserved  0
      8   8  value     u64, the checkpointed offset
     16   4  crc       zlib CRC-32 of bytes 0-15

``leader-epoch.chk``, the leader-epoch cache: which epoch's leader appended from which
offset, little-endian, 16 + 12 * count bytes::

    pos size field          meaning
      0   4  magic          b"RLEP"
      4   2  version        EPOCHS_VERSION (1)
      6   2  reserved       0
      8   4  count          number of entries (``EPOCHS_HEADER``)
     12  12n entries        (i32 epoch, i64 start_offset), epochs and offsets increasing (``EPOCH_ENTRY``)
      -   4  crc            zlib CRC-32 of every byte before it

Both are written with :func:`write_atomic` (temp file, fsync, rename, fsync directory), so
a crash leaves the old or the new content. A file that fails its magic, size or CRC check
is reported with one WARNING and treated as absent: never a crash. The partition log
rebuilds a lost epoch cache from the batch headers, which carry the epoch too.
"""

from __future__ import annotations

import bisect
import logging
import struct
import zlib
from pathlib import Path

from rillet.ipc.errors import InvalidArgument, StorageError

from .files import storage_error, write_atomic

CHECKPOINT = struct.Struct("<4sHHQI")
assert CHECKPOINT.size == 20, CHECKPOINT.size
CHECKPOINT_MAGIC = b"RLHW"
CHECKPOINT_VERSION = 1

EPOCHS_HEADER = struct.Struct("<4sHHI")
assert EPOCHS_HEADER.size == 12, EPOCHS_HEADER.size
EPOCH_ENTRY = struct.Struct("<iq")
assert EPOCH_ENTRY.size == 12, EPOCH_ENTRY.size
_CRC = struct.Struct("<I")
EPOCHS_MAGIC = b"RLEP"
EPOCHS_VERSION = 1
# Kafka's UNDEFINED_EPOCH_OFFSET: the answer for an epoch this replica knows nothing after.
UNDEFINED_OFFSET = -1
MAX_EPOCH = 2**31 - 1
# Far more epochs than any partition sees; bounds what a corrupt count field can allocate.
MAX_EPOCH_ENTRIES = 1 << 20

_log = logging.getLogger("rillet.broker.storage")

__all__ = [
    "LeaderEpochCache",
    "UNDEFINED_OFFSET",
    "read_checkpoint",
    "write_atomic",
    "write_checkpoint",
]


def _read_bytes(path: Path) -> bytes | None:
    """The file's content, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, "read", path) from exc


def _merged(epochs: list[int], starts: list[int], pairs) -> tuple[list[int], list[int]]:
    """New epoch lists after assigning ``pairs`` in order (the rule of LeaderEpochCache.assign)."""
    epochs, starts = list(epochs), list(starts)
    for epoch, start in pairs:
        if not 0 <= epoch <= MAX_EPOCH:
            raise InvalidArgument(f"leader epoch {epoch} is out of range [0, {MAX_EPOCH}]")
        if start < 0:
            raise InvalidArgument(f"epoch start offset {start} is negative")
        if epochs and epoch <= epochs[-1]:
            continue
        # An entry starting at or after the new start was never followed by data (Kafka).
        while starts and starts[-1] >= start:
            epochs.pop()
            starts.pop()
        epochs.append(epoch)
        starts.append(start)
    return epochs, starts


def read_checkpoint(path: Path, default: int, *, logger: logging.Logger | None = None) -> int:
    """The value in ``path``; ``default`` when it is missing or damaged (damage is logged)."""
    path = Path(path)
    data = _read_bytes(path)
    if data is None:
        return default
    problem = None
    if len(data) != CHECKPOINT.size:
        problem = f"{len(data)} bytes, expected {CHECKPOINT.size}"
    else:
        magic, version, _, value, crc = CHECKPOINT.unpack(data)
        if magic != CHECKPOINT_MAGIC:
            problem = f"magic {magic!r}, expected {CHECKPOINT_MAGIC!r}"
        elif version != CHECKPOINT_VERSION:
            problem = f"version {version}, expected {CHECKPOINT_VERSION}"
        elif zlib.crc32(data[:-4]) != crc:
            problem = "CRC mismatch"
        elif value >= 2**63:
            problem = f"value {value} is not a valid offset"
    if problem is not None:
        (logger or _log).warning("checkpoint %s is damaged (%s); using %d instead", path, problem, default)
        return default
    return value


def write_checkpoint(path: Path, value: int) -> None:
    if not 0 <= value < 2**63:
        raise InvalidArgument(f"checkpoint value {value} is out of range [0, 2**63)")
    head = CHECKPOINT.pack(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, 0, value, 0)[:-4]
    write_atomic(Path(path), head + _CRC.pack(zlib.crc32(head)))


class LeaderEpochCache:
    """Epoch -> start offset, persisted in ``leader-epoch.chk`` after every change.

    Kafka's LeaderEpochFileCache: the leader records the first offset it appends in each
    new epoch; a follower asks the leader for ``end_offset_for(its latest epoch)`` and
    truncates there (KIP-101), never at its high watermark.
    """

    def __init__(self, path: Path, *, logger: logging.Logger | None = None) -> None:
        self.path = Path(path)
        self._logger = logger or _log
        self._epochs: list[int] = []
        self._starts: list[int] = []
        #: False when the file was missing or damaged, so the owner may rebuild it from the log.
        self.loaded = self._load()

    # --- queries ---------------------------------------------------------------

    @property
    def latest_epoch(self) -> int:
        """The newest epoch, or -1 when none is known."""
        return self._epochs[-1] if self._epochs else -1

    @property
    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts))

    def __len__(self) -> int:
        return len(self._epochs)

    def end_offset_for(self, epoch: int, leo: int) -> int:
        """Kafka's OffsetForLeaderEpoch answer for ``epoch`` on a log ending at ``leo``.

        The latest epoch ends at ``leo``; an older one ends where the first greater epoch
        starts (also for an epoch older than every entry). An epoch newer than the latest,
        a negative epoch or an empty cache gives UNDEFINED_OFFSET (-1).
        """
        if epoch < 0 or not self._epochs:
            return UNDEFINED_OFFSET
        if epoch == self._epochs[-1]:
            return leo
        i = bisect.bisect_right(self._epochs, epoch)
        return self._starts[i] if i < len(self._epochs) else UNDEFINED_OFFSET

    # --- changes ---------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; an epoch not newer than the latest is ignored.

        Returns whether the cache changed (and was persisted).
        """
        return self.assign_many([(epoch, start_offset)])

    def assign_many(self, pairs) -> bool:
        """``assign`` each ``(epoch, start_offset)`` in order, persisting once at the end."""
        return self._replace(*_merged(self._epochs, self._starts, pairs))

    def truncate_from(self, offset: int) -> bool:
        """Forget every epoch that starts at or after ``offset`` (the log was cut there)."""
        keep = bisect.bisect_left(self._starts, offset)
        return self._replace(self._epochs[:keep], self._starts[:keep])

    def reset(self, pairs) -> None:
        """Replace the whole cache (rebuilt from the log) and persist it."""
        epochs, starts = _merged([], [], pairs)
        if not self._replace(epochs, starts):
            self._persist()

    # --- file ----------------------------------------------------------------

    def _replace(self, epochs: list[int], starts: list[int]) -> bool:
        if epochs == self._epochs and starts == self._starts:
            return False
        old = self._epochs, self._starts
        self._epochs, self._starts = epochs, starts
        try:
            self._persist()
        except StorageError:
            self._epochs, self._starts = old
            raise
        return True

    def _persist(self) -> None:
        body = EPOCHS_HEADER.pack(EPOCHS_MAGIC, EPOCHS_VERSION, 0, len(self._epochs)) + b"".join(
            EPOCH_ENTRY.pack(e, s) for e, s in zip(self._epochs, self._starts)
        )
        write_atomic(self.path, body + _CRC.pack(zlib.crc32(body)))

    def _load(self) -> bool:
        data = _read_bytes(self.path)
        if data is None:
            return False
        problem = self._parse(data)
        if problem is not None:
            self._epochs, self._starts = [], []
            self._logger.warning("leader-epoch cache %s is damaged (%s); it will be rebuilt from the log",
                                 self.path, problem)
            return False
        return True

    def _parse(self, data: bytes) -> str | None:
        if len(data) < EPOCHS_HEADER.size + _CRC.size:
            return f"{len(data)} bytes is shorter than the header"
        magic, version, _, count = EPOCHS_HEADER.unpack_from(data)
        if magic != EPOCHS_MAGIC:
            return f"magic {magic!r}, expected {EPOCHS_MAGIC!r}"
        if version != EPOCHS_VERSION:
            return f"version {version}, expected {EPOCHS_VERSION}"
        if count > MAX_EPOCH_ENTRIES:
            return f"count {count} exceeds {MAX_EPOCH_ENTRIES}"
        expected = EPOCHS_HEADER.size + count * EPOCH_ENTRY.size + _CRC.size
        if len(data) != expected:
            return f"{len(data)} bytes, expected {expected} for {count} entries"
        if zlib.crc32(data[:-4]) != _CRC.unpack_from(data, len(data) - 4)[0]:
            return "CRC mismatch"
        pairs = [EPOCH_ENTRY.unpack_from(data, EPOCHS_HEADER.size + i * EPOCH_ENTRY.size) for i in range(count)]
        for (e0, s0), (e1, s1) in zip(pairs, pairs[1:]):
            if not (e0 < e1 and s0 < s1):
                return f"entries ({e0}, {s0}) and ({e1}, {s1}) are not increasing"
        if any(e < 0 or s < 0 for e, s in pairs):
            return "negative epoch or offset"
        self._epochs = [e for e, _ in pairs]
        self._starts = [s for _, s in pairs]
        return None
