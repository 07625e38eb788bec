"""The per-SPU positions tables (positions.py's layout) in POSIX shared memory.

Each SPU creates its own with :meth:`PositionsWriter.create` (exclusive, mode 0600, a stale
one replaced when its SPU is dead: shm.py's rules) and is its only writer; direct readers
and the SC map it read-only with :meth:`PositionsReader.open`. Both map it with libc's mmap
(shm.RawMapping): the futex words need the mapping's address.
"""

from __future__ import annotations

from . import futex, positions
from .errors import Closed
from .shm import RawMapping, create_raw, open_raw, process_alive, shm_names, unlink_if_exists


class PositionsWriter:
    """An SPU's writable positions table (the only writer). Build with :meth:`create`;
    ``close()`` unmaps and unlinks: the object lives as long as its SPU."""

    def __init__(self, name: str, mapping: RawMapping, max_rows: int) -> None:
        self.name = name
        self.max_rows = max_rows
        self._map: RawMapping | None = mapping

    @classmethod
    def create(cls, name: str, spu_id: int, spu_pid: int, max_rows: int = positions.DEFAULT_MAX_ROWS) -> "PositionsWriter":
        """Create ``name`` exclusively (mode 0600), replacing one a dead SPU left.

        Raises SharedMemoryRefused, ClusterAlreadyRunning (its SPU is alive: two SPUs
        with one id), MetadataTableError.
        """
        size = positions.size_for(max_rows)
        mapping = create_raw(
            name, positions.peek_spu_pid, f"positions table {name} belongs to a running SPU {spu_id}",
            size, lambda mapping: positions.init_positions(mapping.buf, max_rows, spu_id, spu_pid))
        return cls(name, mapping, max_rows)

    def publish(self, index: int, row: positions.Positions) -> None:
        """Write row ``index``, then move its wake word and wake (some of) its waiters."""
        mapping = self._map
        if mapping is None:
            raise Closed(f"positions table {self.name} is closed")
        positions.write_row(mapping.buf, index, row)
        self._wake(mapping, index)

    def _wake(self, mapping: RawMapping, index: int) -> None:
        """Move row ``index``'s wake word and wake a few sleepers; they relay to the others
        (futex.py) unless this wake found so few that it woke them all, as the row then says.
        (Every append of a leader runs this: the row's address is computed once.)"""
        buf = mapping.buf
        at = positions.row_offset(index)
        value = positions.bump_wake_at(buf, at)
        if futex.AVAILABLE:
            woken = futex.wake(mapping.address + at + positions.WAKE_OFFSET, futex.RELAY_FANOUT)
            positions.mark_woken_at(buf, at, value, woken < futex.RELAY_FANOUT)

    def publish_offsets(self, index: int, log_start: int, hw: int, leo: int, active_base: int,
                        active_used: int) -> None:
        """:meth:`publish` of new offsets only, in a row :meth:`publish` wrote whole before
        (same topic, partition, epoch and role)."""
        mapping = self._map
        if mapping is None:
            raise Closed(f"positions table {self.name} is closed")
        positions.write_offsets(mapping.buf, index, log_start, hw, leo, active_base, active_used)
        self._wake(mapping, index)

    def close(self) -> None:
        """Unmap and unlink (idempotent)."""
        if self._map is not None:
            self._map.close()
            self._map = None
            unlink_if_exists(self.name)


class PositionsReader:
    """A consumer's read-only mapping of one SPU's positions table. Build with :meth:`open`."""

    def __init__(self, name: str, mapping: RawMapping, spu_id: int, spu_pid: int, max_rows: int) -> None:
        self.name = name
        self.spu_id = spu_id
        self.spu_pid = spu_pid
        self.max_rows = max_rows
        self._map: RawMapping | None = mapping

    @classmethod
    def open(cls, name: str) -> "PositionsReader":
        """Map ``name`` read-only and check its header. MetadataTableError when it is missing
        or not initialised (an SPU starting, or one without direct reads), SharedMemoryRefused
        for a foreign or unsafe object, LayoutVersionMismatch."""
        mapping = open_raw(name, positions.HEADER_SIZE, "positions table")
        try:
            spu_id, spu_pid, max_rows = positions.read_header(mapping.buf)
        except BaseException:
            mapping.close()
            raise
        return cls(name, mapping, spu_id, spu_pid, max_rows)

    def _buf(self):
        mapping = self._map
        if mapping is None:
            raise Closed(f"positions reader for {self.name} is closed")
        return mapping.buf

    def find(self, topic: str, partition: int) -> int | None:
        return positions.find_row(self._buf(), self.max_rows, topic, partition)

    def rows(self) -> list[positions.Positions]:
        """Every row in use, as published now."""
        return positions.used_rows(self._buf(), self.max_rows)

    def row(self, index: int) -> positions.Positions:
        try:
            return positions.read_row(self._buf(), index)
        except ValueError as exc:       # released by close() in another thread meanwhile
            raise Closed(f"positions reader for {self.name} is closed") from exc

    @property
    def buffer(self):
        """The mapping's read-only view, for a reader's own struct reads (released, so any
        read raises ValueError, once the reader is closed)."""
        return self._buf()

    @property
    def address(self) -> int:
        """The mapping's address (futex words are at ``address + positions.wake_offset(i)``)."""
        self._buf()
        return self._map.address

    def row_fields(self, index: int) -> tuple:
        """positions.read_row_fields of row ``index``."""
        try:
            return positions.read_row_fields(self._buf(), index)
        except ValueError as exc:       # released by close() in another thread meanwhile
            raise Closed(f"positions reader for {self.name} is closed") from exc

    def wake_word(self, index: int) -> tuple[int, int]:
        """``(address, value now)`` of row ``index``'s futex word, for futex.wait."""
        buf = self._buf()
        return self._map.address + positions.wake_offset(index), positions.read_wake(buf, index)

    def woke_all(self, index: int, value: int) -> bool:
        """True when the publish that moved row ``index``'s word to ``value`` woke every
        sleeper: a reader woken by it has nobody left to relay the wake to."""
        return positions.woke_all(self._buf(), index, value)

    def writer_alive(self) -> bool:
        return process_alive(self.spu_pid)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


def positions_objects(prefix: str) -> list[str]:
    """Names of the positions objects whose name starts with ``prefix`` (for cleanup)."""
    return shm_names(prefix)
