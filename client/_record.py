"""Records as consumers see them, and the Offset a stream starts from."""

from __future__ import annotations

from rillet.ipc.errors import InvalidArgument, RilletError
from rillet.ipc.record_decoding import DecodedRecord


class Record(DecodedRecord):
    """One consumed record. ``key()`` is None for a keyless record (Fluvio returns
    b"No key", which cannot be told apart from a real key; rillet does not copy that).

    Built by the stream straight from the fetched bytes (see record_decoding.decode_records):
    it holds the record's offset, timestamp delta, key, value and headers, and shares
    its batch's ``(partition, first_timestamp)`` tuple. Like Fluvio's, it is not meant
    to be constructed by user code.
    """

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._batch[0]

    def value(self) -> bytes:
        return self._value

    def value_string(self) -> str:
        try:
            return self._value.decode()
        except UnicodeDecodeError as exc:
            raise RilletError(f"record {self._offset} value is not valid UTF-8: {exc}") from None

    def key(self) -> bytes | None:
        return self._key

    def key_string(self) -> str:
        """The key as text; "" when there is no key (as Fluvio)."""
        if self._key is None:
            return ""
        try:
            return self._key.decode()
        except UnicodeDecodeError as exc:
            raise RilletError(f"record {self._offset} key is not valid UTF-8: {exc}") from None

    def timestamp(self) -> int:
        """Milliseconds since the Unix epoch, set by the producer."""
        return self._batch[1] + self._timestamp_delta

    def __repr__(self) -> str:
        return (f"Record(partition={self.partition()}, offset={self._offset}, key={self._key!r}, "
                f"value={self._value[:40]!r})")


class Offset:
    """Where a stream starts. Relative offsets resolve against the log's start and
    high watermark when the stream opens (``end()`` is the HW, as in Fluvio)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: int) -> None:
        self.kind, self.value = kind, value

    @staticmethod
    def absolute(index: int) -> "Offset":
        if not isinstance(index, int) or index < 0:
            raise InvalidArgument(f"absolute offset must be a non-negative integer, got {index!r}")
        return Offset("absolute", index)

    @staticmethod
    def beginning() -> "Offset":
        return Offset("from_beginning", 0)

    @staticmethod
    def end() -> "Offset":
        return Offset("from_end", 0)

    @staticmethod
    def from_beginning(n: int) -> "Offset":
        if not isinstance(n, int) or n < 0:
            raise InvalidArgument(f"from_beginning needs a non-negative count, got {n!r}")
        return Offset("from_beginning", n)

    @staticmethod
    def from_end(n: int) -> "Offset":
        if not isinstance(n, int) or n < 0:
            raise InvalidArgument(f"from_end needs a non-negative count, got {n!r}")
        return Offset("from_end", n)

    def resolve(self, log_start: int, end: int) -> int:
        """The absolute offset to fetch from. Relative forms clamp to [log_start, end];
        an absolute offset is returned as is (the SPU rejects one past the log end)."""
        if self.kind == "absolute":
            return self.value
        if self.kind == "from_beginning":
            return min(log_start + self.value, end)
        return max(end - self.value, log_start)

    def __repr__(self) -> str:
        return f"Offset.{self.kind}({self.value})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Offset) and (self.kind, self.value) == (other.kind, other.value)

    def __hash__(self) -> int:
        return hash((self.kind, self.value))
