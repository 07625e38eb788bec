"""The one exception tree of rillet, shared by broker and client.

Every error that crosses the wire has a numeric ``code`` (the registry below) so
the receiving side can rebuild the same class with :func:`error_from_code`.  Two
flags drive client behaviour, never the message text:

* ``retriable``: trying the same request again may succeed (a transport break,
  a leader change, too few in-sync replicas).
* ``refresh_metadata``: re-read the shared-memory metadata table before retrying
  (the leader may have moved).

Foreign exceptions (OSError, msgspec.DecodeError, struct.error) are translated
once, at the I/O boundary, with ``raise ... from exc``.
"""

from __future__ import annotations

import re
from typing import ClassVar


class RilletError(Exception):
    """Base of every error rillet raises on purpose."""

    code: ClassVar[int] = 1
    retriable: ClassVar[bool] = False
    refresh_metadata: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- client-side and usage errors -------------------------------------------------

class InvalidArgument(RilletError):
    """A value given by the caller is out of range or malformed."""
    code = 2


class InvalidName(InvalidArgument):
    """A topic, consumer or cluster name breaks the naming rule."""
    code = 3


class UnknownCodec(InvalidArgument):
    code = 4


class ClusterNotRunning(RilletError):
    """No SC answers for this cluster name (not started, or stopped)."""
    code = 5


class ScUnavailable(ClusterNotRunning):
    """The cluster runs (its supervisor or SPUs live) but its SC does not answer now:
    it is being restarted. Data keeps flowing; admin calls may be retried shortly."""
    code = 9
    retriable = True


class ClusterAlreadyRunning(RilletError):
    code = 6


class ClusterUnavailable(ClusterNotRunning):
    """The cluster a client was using is away (stopped, or its SC restarting): its
    metadata table is gone or not published yet. Following consumers and retrying
    producers wait for it to come back."""
    code = 56
    retriable = True
    refresh_metadata = True


class Timeout(RilletError):
    """A client-side wait ran out; the message names the timeout."""
    code = 7
    retriable = True


class Closed(RilletError):
    """Used after close(): the producer, consumer or connection is closed."""
    code = 8


# --- protocol and transport ----------------------------------------------------

class ProtocolError(RilletError):
    """Bytes that do not form a valid frame or message. The connection is closed."""
    code = 20


class FrameTooLarge(ProtocolError):
    code = 21


class UnsupportedVersion(ProtocolError):
    code = 22


class BrokenConnection(RilletError):
    """The peer closed or reset the connection mid-request."""
    code = 23
    retriable = True
    refresh_metadata = True


class CorruptBatch(RilletError):
    """A record batch failed its length, magic or CRC check."""
    code = 24


class CompressionError(RilletError):
    code = 25


# --- metadata and shared memory -------------------------------------------------

class MetadataTableError(RilletError):
    code = 30


class LayoutVersionMismatch(MetadataTableError):
    code = 31


class MetadataTableBusy(MetadataTableError):
    """The seqlock stayed odd (writer mid-update or dead) past the retry bound."""
    code = 32
    retriable = True


class SharedMemoryRefused(MetadataTableError):
    """A shared-memory object exists with a foreign owner or an unsafe mode."""
    code = 33


# --- broker answers ------------------------------------------------------------------

class TopicNotFound(RilletError):
    code = 40
    refresh_metadata = True


class TopicAlreadyExists(RilletError):
    code = 41


class PartitionNotFound(RilletError):
    code = 42
    refresh_metadata = True


class NotLeader(RilletError):
    """The SPU does not lead this partition (any more). Re-read the table, retry."""
    code = 43
    retriable = True
    refresh_metadata = True


class StaleLeaderEpoch(NotLeader):
    """The request named a leader epoch older than the SPU's (stale leader or client)."""
    code = 44


class OffsetOutOfRange(RilletError):
    code = 45


class MessageTooLarge(RilletError):
    code = 46


class StorageError(RilletError):
    code = 47


class DamagedLog(StorageError):
    """A replica's sealed segments do not chain or hold bytes that are no batches: it cannot be
    opened as it is. A follower copy is set aside and fetched again from its leader."""
    code = 58


class RequestTimedOut(RilletError):
    """The broker gave up waiting (for example for the high watermark)."""
    code = 48
    retriable = True


class NotEnoughReplicas(RilletError):
    code = 49
    retriable = True


class InsufficientResources(RilletError):
    """Not enough SPUs for the requested replication factor."""
    code = 50


class PartitionOffline(RilletError):
    """The partition has no online leader right now."""
    code = 51
    retriable = True
    refresh_metadata = True


class SpuNotFound(RilletError):
    code = 52


class ConsumerOffsetNotFound(RilletError):
    code = 53


class Busy(RilletError):
    """The broker refused work it cannot take on now (too many requests in flight); retry."""
    code = 54
    retriable = True


class OutOfOrderSequence(RilletError):
    """An idempotent producer's batch does not continue its sequence on this partition:
    a batch before it is missing (a hole), so storing it would lose records silently.

    Not retriable by the flag: only the producer knows whether the missing batch is
    still on its way (then it sends this one again after it) or failed for good.
    """
    code = 55
    # Set by ``of`` where the gap is found (the SPU); an error rebuilt from the wire has the message only.
    topic: str | None = None
    partition: int | None = None
    producer_id: int | None = None
    expected: int | None = None
    got: int | None = None

    @classmethod
    def of(cls, topic: str, partition: int, producer_id: int, expected: int, got: int) -> "OutOfOrderSequence":
        error = cls(f"{topic}/{partition}: producer {producer_id} sent sequence {got}, expected {expected} "
                    f"(a batch before it is missing)")
        error.topic, error.partition, error.producer_id = topic, partition, producer_id
        error.expected, error.got = expected, got
        return error


class RecordsLost(RilletError):
    """Offsets of a partition whose records are damaged on every copy there is (a sealed
    segment's batch failing its CRC at RF=1, say). Every record before them was delivered;
    a reader steps past them only on purpose (``skip_damaged``, ``consume --skip-damaged``).

    The fields survive the wire: the message starts with them in a fixed form that
    :meth:`from_wire` parses back."""
    code = 57
    topic: str = ""
    partition: int = -1
    first_offset: int = -1
    last_offset: int = -1

    _FORM = re.compile(r"^(\S+)/(\d+): offsets (\d+) to (\d+) are lost")

    @classmethod
    def of(cls, topic: str, partition: int, first_offset: int, last_offset: int, cause: str) -> "RecordsLost":
        error = cls(f"{topic}/{partition}: offsets {first_offset} to {last_offset} are lost: {cause}")
        error.topic, error.partition, error.first_offset, error.last_offset = topic, partition, first_offset, last_offset
        return error

    @classmethod
    def from_wire(cls, message: str) -> "RecordsLost":
        error = cls(message)
        found = cls._FORM.match(message)
        if found:
            error.topic, error.partition = found.group(1), int(found.group(2))
            error.first_offset, error.last_offset = int(found.group(3)), int(found.group(4))
        return error


class SmartModuleNotFound(RilletError):
    """No SmartModule of that name is stored in the cluster (Fluvio's message)."""
    code = 120

    @classmethod
    def named(cls, name: str) -> "SmartModuleNotFound":
        return cls(f"SmartModule {name} was not found")


class SmartModuleAlreadyExists(RilletError):
    code = 123


class InvalidSmartModule(InvalidArgument):
    """A file given as a SmartModule is not one (not wasm, no SmartModule export), or the
    engine to run it is not installed."""
    code = 121


class SmartModuleError(RilletError):
    """A SmartModule failed on a record (it trapped, ran out of fuel or memory, or returned an
    error): the stream ends with this error, which names the module and the source offset.
    ``offset`` is that offset when known here (None when rebuilt from the wire)."""
    code = 122
    offset: int | None = None
    delivered: list = []


class ForeignPeer(RilletError):
    """The process at the other end of a socket runs as another user: refused, never retried."""
    code = 90


class FollowerRefused(RilletError):
    """A FollowerFetch from a process that is not the SPU it names (SO_PEERCRED pid checked
    against the SC's metadata table): only real SPUs replicate, and only as themselves."""
    code = 91


class ConnectorConfigError(InvalidArgument):
    """A connector's YAML is refused; the message starts with the field at fault."""
    code = 100


class ConnectorNotFound(RilletError):
    code = 101


class ConnectorAlreadyExists(RilletError):
    code = 102


class InternalError(RilletError):
    """A bug or an unexpected OS error inside a broker; details are in its log."""
    code = 99


_REGISTRY: dict[int, type[RilletError]] = {}


def _register(cls: type[RilletError]) -> None:
    for sub in cls.__subclasses__():
        if sub.code in _REGISTRY and _REGISTRY[sub.code] is not sub:
            raise AssertionError(f"duplicate error code {sub.code}: {sub} and {_REGISTRY[sub.code]}")
        _REGISTRY[sub.code] = sub
        _register(sub)


_REGISTRY[RilletError.code] = RilletError
_register(RilletError)


def error_from_code(code: int, message: str) -> RilletError:
    """Rebuild the error a peer sent; an unknown code becomes a plain RilletError."""
    cls = _REGISTRY.get(code, RilletError)
    from_wire = getattr(cls, "from_wire", None)
    return from_wire(message) if from_wire is not None else cls(message)


def error_codes() -> dict[int, type[RilletError]]:
    return dict(_REGISTRY)
