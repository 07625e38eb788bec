"""Wire messages: msgspec Structs are the schema and the validator.

Every message is a frozen, tagged, array-like Struct, so an envelope encodes as a
msgpack array ``[tag, field, ...]``. A frame (ipc/framing.py) carries exactly one.

Conventions:

* every request carries ``cid`` (correlation id, > 0), echoed in its answer;
* any request may be answered with :class:`ErrorResponse` (code from ipc/errors);
* record batches travel as msgpack ``bin`` fields typed ``memoryview``, so decoding
  a frame gives a view of the received bytes with no copy (the broker never
  decodes the records inside);
* each connection opens with :class:`Hello`; a peer speaking another
  PROTOCOL_VERSION gets an ErrorResponse (UnsupportedVersion) and is closed.

Three conversations share this module: clients with an SPU (produce, fetch,
offsets), clients with the SC (admin), and SPUs with the SC (control plane).
"""

from __future__ import annotations

from typing import Union

import msgspec

PROTOCOL_VERSION = 1

ISOLATION_READ_UNCOMMITTED = 0
ISOLATION_READ_COMMITTED = 1


class _Msg(msgspec.Struct, frozen=True, tag=True, array_like=True, omit_defaults=False):
    pass


# --- every connection ---------------------------------------------------------------

class Hello(_Msg, tag=1):
    cid: int
    version: int
    client_id: str = ""


class HelloOk(_Msg, tag=2):
    cid: int
    version: int
    server: str          # "sc" or "spu-<id>"


class ErrorResponse(_Msg, tag=3):
    cid: int             # 0 when the request could not be parsed
    code: int
    message: str


class Ok(_Msg, tag=4):
    cid: int


# --- client <-> SPU (data plane) --------------------------------------------------------

class ProduceRequest(_Msg, tag=10):
    cid: int
    topic: str
    partition: int
    isolation: int       # ISOLATION_*
    timeout_ms: int      # how long a ReadCommitted produce may wait for the high watermark
    batches: memoryview  # one or more whole record batches, as the producer built them


class ProduceResponse(_Msg, tag=11):
    cid: int
    base_offset: int     # offset given to the first record of the first batch
    leo: int
    hw: int


class FetchRequest(_Msg, tag=12):
    cid: int
    topic: str
    partition: int
    offset: int
    max_bytes: int
    isolation: int
    max_wait_ms: int     # long poll: answer at once if data exists, else wait up to this long


class FetchResponse(_Msg, tag=13):
    cid: int
    hw: int
    leo: int
    log_start: int
    batches: memoryview  # whole batches; the first may start before the requested offset


class OffsetsRequest(_Msg, tag=14):
    cid: int
    topic: str
    partition: int


class OffsetsResponse(_Msg, tag=15):
    cid: int
    log_start: int
    hw: int
    leo: int


# --- client <-> SC (admin) ----------------------------------------------------------------

class TopicConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A topic's spec as the admin gives it; the SC validates and stores it."""
    partitions: int = 1
    replication: int = 1
    retention_time_s: int | None = None
    segment_size: int | None = None
    max_partition_size: int | None = None
    compression_type: str = "any"
    min_in_sync_replicas: int | None = None
    flush: str = "none"              # none | interval | every-batch: fsync before the ack, or every interval
    flush_interval_ms: int = 1000


class CreateTopic(_Msg, tag=30):
    cid: int
    name: str
    config: TopicConfig
    timeout_ms: int = 30_000   # wait this long for every partition to be Online


class DeleteTopic(_Msg, tag=31):
    cid: int
    name: str


class TopicChanges(msgspec.Struct, frozen=True, kw_only=True):
    """What `topic update` may change on a live topic; None keeps the current value.
    Partitions grow with AddPartitions; the replication factor cannot change."""
    retention_time_s: int | None = None
    max_partition_size: int | None = None
    segment_size: int | None = None          # for segments created from now on
    compression_type: str | None = None
    flush: str | None = None
    flush_interval_ms: int | None = None
    min_in_sync_replicas: int | None = None


class UpdateTopic(_Msg, tag=46):
    cid: int
    name: str
    changes: TopicChanges


class AddPartitions(_Msg, tag=47):
    """Add ``count`` partitions to a topic (Fluvio's `topic add-partition`)."""
    cid: int
    name: str
    count: int
    timeout_ms: int = 30_000   # wait this long for the new partitions to be Online


class ListTopics(_Msg, tag=32):
    cid: int
    names: list[str] = []      # empty: all


class TopicInfo(msgspec.Struct, frozen=True):
    name: str
    config: TopicConfig
    status: str


class TopicList(_Msg, tag=33):
    cid: int
    topics: list[TopicInfo]


class ListPartitions(_Msg, tag=34):
    cid: int
    topics: list[str] = []


class ReplicaIssue(msgspec.Struct, frozen=True):
    """Why one SPU's replica of a partition is not whole. ``kind`` is one of ISSUE_KINDS."""
    spu: int
    kind: str
    cause: str


# cannot-create: the SPU could not open or create the replica (its cause: ENOSPC, a damaged log);
# missing: its directory was deleted or became unreadable while the SPU ran;
# damaged: a batch of a sealed segment fails its CRC (the scrub found it; the offsets are named);
# rebuilding: a follower copy being fetched again from the leader after one of the above.
ISSUE_KINDS = ("cannot-create", "missing", "damaged", "rebuilding")


class PartitionInfo(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    in_sync: list[int]
    status: str
    hw: int
    leo: int
    log_start: int
    size_bytes: int
    flushes: int = 0          # fsyncs of this partition's log on its leader since the SPU started
    # Replicas of this partition that are not whole (issue 10): a replica an SPU could not create
    # (disk full), whose directory vanished, or that is being rebuilt from the leader.
    problems: list[ReplicaIssue] = []


class PartitionList(_Msg, tag=35):
    cid: int
    partitions: list[PartitionInfo]


class ListSpus(_Msg, tag=36):
    cid: int


class SpuInfo(msgspec.Struct, frozen=True):
    id: int
    name: str
    status: str
    pid: int
    socket: str
    leaders: int
    replicas: int


class SpuList(_Msg, tag=37):
    cid: int
    spus: list[SpuInfo]


class ClusterStatusRequest(_Msg, tag=38):
    cid: int


class ClusterStatus(_Msg, tag=39):
    cid: int
    cluster: str
    sc_pid: int
    spus_online: int
    spus_total: int
    topics: int
    partitions_online: int
    partitions_total: int
    metrics_url: str = ""          # the metrics endpoint, when the cluster serves one
    metrics_error: str = ""        # why it is configured but not served (port taken, extra missing)


class ShutdownCluster(_Msg, tag=40):
    cid: int


class AddSpu(_Msg, tag=48):
    """Start one more SPU (the next id); answered with a SpuList of that SPU once it is Online."""
    cid: int
    timeout_ms: int = 30_000


class RemoveSpu(_Msg, tag=49):
    """Move every replica off an SPU (copies caught up first), then stop it and forget it."""
    cid: int
    spu_id: int
    timeout_ms: int = 60_000


class StartSpu(_Msg, tag=41):
    cid: int
    spu_id: int


# --- follower SPU -> leader SPU (replication) ---------------------------------------------

class FollowerFetch(_Msg, tag=70):
    """A follower asks for batches from its log end offset; that offset also tells
    the leader how far the follower has got (its LEO)."""
    cid: int
    topic: str
    partition: int
    follower: int        # SPU id
    leader_epoch: int    # the epoch the follower believes current; a mismatch is refused
    offset: int          # the follower's LEO
    max_bytes: int
    max_wait_ms: int


class FollowerFetchResponse(_Msg, tag=71):
    cid: int
    hw: int
    leo: int
    batches: memoryview
    log_start: int = 0   # a follower whose log ends before this starts over here (retention)


class EpochEndOffset(_Msg, tag=72):
    """Where does ``epoch`` end in the leader's log? (Kafka's OffsetForLeaderEpoch.)"""
    cid: int
    topic: str
    partition: int
    leader_epoch: int    # the current epoch as the follower knows it
    epoch: int           # the follower's last epoch


class EpochEndOffsetResponse(_Msg, tag=73):
    cid: int
    epoch: int           # the largest epoch <= the one asked that the leader knows (-1: none)
    end_offset: int      # where that epoch ends in the leader's log


# --- reader (consumer or follower) -> leader SPU: damage found (tags 190-199) -------------------

class ReportDamage(_Msg, tag=190):
    """A batch read from the leader's copy at ``offset`` failed its checks. The leader checks it
    at once (not at its next scrub): answered Ok when its copy is whole there, NotLeader
    (retriable) when it is damaged and a whole in-sync copy takes over, RecordsLost when no
    whole copy exists."""
    cid: int
    topic: str
    partition: int
    offset: int


# --- SPU <-> SC (control plane) -------------------------------------------------------------

class RegisterSpu(_Msg, tag=60):
    cid: int
    spu_id: int
    pid: int


class ReplicaSpec(msgspec.Struct, frozen=True):
    """What the SC wants one SPU to do with one partition."""
    topic: str
    partition: int
    replicas: list[int]
    leader: int
    leader_epoch: int
    segment_size: int
    compression_type: str
    min_in_sync_replicas: int
    in_sync: list[int] = []      # replicas the SC last knew in sync (a new leader starts from these)
    retention_time_s: int | None = None      # delete sealed segments whose newest record is older
    max_partition_size: int | None = None    # delete the oldest sealed segments while larger
    flush: str = "none"
    flush_interval_ms: int = 1000


class UpdateReplicas(_Msg, tag=61):
    cid: int
    replicas: list[ReplicaSpec]   # the full desired set for this SPU; others are dropped


class ReplicaStatus(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    leader_epoch: int
    is_leader: bool
    leo: int
    hw: int
    log_start: int
    size_bytes: int
    in_sync: list[int]
    flushes: int = 0
    # Counters since the SPU started (metrics, broker/sc/metrics.py). In: records and bytes of
    # produced batches this replica stored as leader (retried duplicates not counted). Out:
    # records and bytes sent to consumers over this SPU's socket (direct reads and followers
    # not counted).
    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0


class SpuCounters(msgspec.Struct, frozen=True):
    """An SPU's own counters since it started, sent with each status report (metrics)."""
    connections: int = 0                   # open connections to its socket now
    requests: dict[str, int] = {}          # by request type name (ProduceRequest, FetchRequest, ...)
    errors: dict[str, int] = {}            # error answers by error name (NotLeader, ...)
    leaderships_gained: int = 0            # times a replica here became leader (start included)


class ReplicaProblem(msgspec.Struct, frozen=True):
    """An SPU's report of one replica it cannot serve whole (see ReplicaIssue)."""
    topic: str
    partition: int
    kind: str
    cause: str


class StatusReport(_Msg, tag=62):
    cid: int
    replicas: list[ReplicaStatus]
    problems: list[ReplicaProblem] = []
    counters: SpuCounters | None = None


class Shutdown(_Msg, tag=63):
    cid: int


# --- client <-> SC (consumer offsets) ----------------------------------------------------------

class TopicPartitionOffset(msgspec.Struct, frozen=True, array_like=True):
    topic: str
    partition: int
    offset: int          # the last offset the consumer has seen (it resumes at offset + 1)


class ConsumerOffsetInfo(msgspec.Struct, frozen=True):
    consumer: str
    topic: str
    partition: int
    offset: int          # the last offset the consumer has seen
    modified_ms: int     # when it was stored, ms since the epoch (SC clock)
    # The partition's high watermark as the SC last heard it from the leader (ListConsumerOffsets
    # only; -1 unknown: no leader online). Lag is ipc/lag.consumer_lag(hw, offset).
    hw: int = -1


class CommitConsumerOffsets(_Msg, tag=80):
    """Store offsets of a named consumer; Ok once they are fsynced by the SC."""
    cid: int
    consumer: str
    offsets: list[TopicPartitionOffset]


class FetchConsumerOffsets(_Msg, tag=81):
    """A consumer's stored offsets on one topic; answered with ConsumerOffsetList."""
    cid: int
    consumer: str
    topic: str


class ListConsumerOffsets(_Msg, tag=82):
    cid: int


class ConsumerOffsetList(_Msg, tag=83):
    cid: int
    offsets: list[ConsumerOffsetInfo]


class DeleteConsumerOffsets(_Msg, tag=84):
    """Delete a consumer's offsets (all, one topic's, or one partition's); none -> ConsumerOffsetNotFound."""
    cid: int
    consumer: str
    topic: str | None = None
    partition: int | None = None


class ConsumerOffsetsDeleted(_Msg, tag=85):
    cid: int
    deleted: list[ConsumerOffsetInfo]


# --- connectors (issue 12; tags 100-119) ---------------------------------------------------

class CreateConnector(_Msg, tag=100):
    cid: int
    name: str
    config_json: str             # the connector YAML as loaded, in JSON (secret references, no values)
    secrets: dict[str, str]      # the values of the secrets it uses (kept by the SC, never listed)
    base_dir: str = ""           # the YAML's directory: python.module paths are relative to it


class ListConnectors(_Msg, tag=101):
    cid: int


class ConnectorInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str
    topic: str
    direction: str               # sink | source | "" (a user type, before its module was imported)
    status: str                  # running | starting | restarting | failed | finished
    pid: int                     # 0 when no process runs
    restarts: int                # restarts since this SC started
    offset: int                  # sinks: the consumer's stored last-seen offset summed over partitions, -1 none
    lag: int                     # sinks: records of the topic (committed) not yet stored as seen, -1 unknown
    last_exit: str = ""          # how its last process ended ("exit code 1", "signal 9")
    config_json: str = ""        # the config as given (secret references only)


class ConnectorList(_Msg, tag=102):
    cid: int
    connectors: list[ConnectorInfo]


class DeleteConnector(_Msg, tag=103):
    cid: int
    name: str


# --- client <-> SC: SmartModules (tags 120-139) -----------------------------------------

class SmartModuleInfo(msgspec.Struct, frozen=True):
    name: str
    size: int            # bytes of the .wasm
    transform: str       # the function it runs: filter, map, filter_map, array_map, aggregate
    sha256: str          # hex digest of the .wasm
    created_ms: int      # when it was stored, ms since the epoch (SC clock)


class CreateSmartModule(_Msg, tag=120):
    """Store a .wasm under ``name`` (checked first; ``dry_run`` only checks); answered with Ok."""
    cid: int
    name: str
    wasm: bytes
    dry_run: bool = False


class DeleteSmartModule(_Msg, tag=121):
    cid: int
    name: str


class ListSmartModules(_Msg, tag=122):
    """The stored modules named in ``names`` (all when empty); answered with SmartModuleList."""
    cid: int
    names: list[str]


class SmartModuleList(_Msg, tag=123):
    cid: int
    modules: list[SmartModuleInfo]


class GetSmartModule(_Msg, tag=124):
    """A stored module's bytes, for a consumer that applies it; answered with SmartModuleBody."""
    cid: int
    name: str


class SmartModuleBody(_Msg, tag=125):
    cid: int
    info: SmartModuleInfo
    wasm: bytes


# --- the produce ring (ipc/produce_ring.py): a producer link's requests through shared memory ---

class RingAttach(_Msg, tag=126):
    """Take the ring this client passed on the SPU's ring socket with ``nonce`` (its memfd
    and two eventfds, SCM_RIGHTS); from the answer on, this connection's produce requests
    may come through it. Answered with RingAttached or an ErrorResponse (then the socket)."""
    cid: int
    nonce: bytes
    capacity: int        # the ring's data area in bytes (ipc/produce_ring.py)


class RingAttached(_Msg, tag=127):
    cid: int


Message = Union[
    Hello, HelloOk, ErrorResponse, Ok,
    ProduceRequest, ProduceResponse, FetchRequest, FetchResponse, OffsetsRequest, OffsetsResponse,
    CreateTopic, DeleteTopic, UpdateTopic, AddPartitions, ListTopics, TopicList, ListPartitions, PartitionList, ListSpus, SpuList,
    ClusterStatusRequest, ClusterStatus, ShutdownCluster, StartSpu, AddSpu, RemoveSpu,
    RegisterSpu, UpdateReplicas, StatusReport, Shutdown,
    FollowerFetch, FollowerFetchResponse, EpochEndOffset, EpochEndOffsetResponse, ReportDamage,
    CommitConsumerOffsets, FetchConsumerOffsets, ListConsumerOffsets, ConsumerOffsetList,
    DeleteConsumerOffsets, ConsumerOffsetsDeleted,
    CreateConnector, ListConnectors, ConnectorList, DeleteConnector,
    CreateSmartModule, DeleteSmartModule, ListSmartModules, SmartModuleList, GetSmartModule, SmartModuleBody,
    RingAttach, RingAttached,
]


def new_decoder() -> msgspec.msgpack.Decoder:
    """One decoder per connection (msgspec habit: build once, reuse)."""
    return msgspec.msgpack.Decoder(Message)


def new_encoder() -> msgspec.msgpack.Encoder:
    return msgspec.msgpack.Encoder()
