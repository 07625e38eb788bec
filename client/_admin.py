"""Admin API: topics, partitions and SPUs, by request to the SC's socket."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterator

from rillet.ipc import messages as m
from rillet.ipc.admin_link import admin_connection
from rillet.ipc.errors import BrokenConnection, InvalidArgument, RilletError, ScUnavailable
from rillet.ipc.names import ClusterPaths, validate_name
from rillet.ipc.units import parse_duration, parse_size

from ._config import FluvioConfig
from ._enums import Compression, CompressionType
from ._smartmodule_admin import SmartModuleAdmin

WATCH_POLL_S = 0.2        # watch_topic: how often the SC is asked for the topic list

_CODEC_NAMES = {Compression.None_: "none", Compression.Gzip: "gzip", Compression.Snappy: "snappy",
                Compression.Lz4: "lz4", Compression.Zstd: "zstd"}


@dataclass(frozen=True)
class TopicSpec:
    """Immutable topic spec; every ``with_*`` returns a new one (Fluvio's shape)."""

    partitions: int = 1
    replications: int = 1
    ignore_rack: bool = True
    retention_time: int | None = None          # seconds
    segment_size: int | None = None            # bytes
    max_partition_size: int | None = None      # bytes
    compression_type: str = "any"
    min_in_sync_replicas: int | None = None
    flush: str = "none"                        # none | interval | every-batch
    flush_interval_ms: int = 1000

    @classmethod
    def create(cls) -> "TopicSpec":
        return cls()

    @classmethod
    def new(cls, partitions: int = 1, replication: int = 1, ignore: bool = True) -> "TopicSpec":
        return cls().with_partitions(partitions).with_replications(replication).with_ignore_rack(ignore)

    def with_partitions(self, n: int) -> "TopicSpec":
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"partitions must be a non-negative integer, got {n!r}")
        return replace(self, partitions=n)

    def with_replications(self, n: int) -> "TopicSpec":
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"replications must be a non-negative integer, got {n!r}")
        return replace(self, replications=n)

    def with_ignore_rack(self, ignore: bool = True) -> "TopicSpec":
        return replace(self, ignore_rack=bool(ignore))

    def with_retention_time(self, t: str | int) -> "TopicSpec":
        return replace(self, retention_time=int(parse_duration(t)))

    def with_segment_size(self, s: str | int) -> "TopicSpec":
        return replace(self, segment_size=parse_size(s))

    def with_max_partition_size(self, s: str | int) -> "TopicSpec":
        return replace(self, max_partition_size=parse_size(s))

    def with_compression(self, c: CompressionType | Compression | str) -> "TopicSpec":
        if isinstance(c, CompressionType):
            name = c.value
        elif isinstance(c, Compression):
            name = _CODEC_NAMES[c]
        else:
            name = str(c).lower()
        from rillet.ipc.compression import parse_topic_compression
        return replace(self, compression_type=parse_topic_compression(name))

    def with_min_in_sync_replicas(self, n: int) -> "TopicSpec":
        return replace(self, min_in_sync_replicas=int(n))

    def with_flush(self, policy: str, interval: str | int | None = None) -> "TopicSpec":
        """When the SPUs fsync: ``"none"`` (the page cache only: survives any process crash, not
        power loss), ``"every-batch"`` (before acknowledging, on every replica), or
        ``"interval"`` (every ``interval``, a duration or milliseconds)."""
        interval_ms = self.flush_interval_ms if interval is None else int(round(parse_duration(interval, default_unit="ms") * 1000))
        return replace(self, flush=str(policy), flush_interval_ms=interval_ms)

    def build(self) -> m.TopicConfig:
        return m.TopicConfig(
            partitions=self.partitions, replication=self.replications, retention_time_s=self.retention_time,
            segment_size=self.segment_size, max_partition_size=self.max_partition_size,
            compression_type=self.compression_type, min_in_sync_replicas=self.min_in_sync_replicas,
            flush=self.flush, flush_interval_ms=self.flush_interval_ms,
        )


class MetadataTopicSpec:
    """A topic as listed; ``name()`` as Fluvio, plus the spec and status."""

    def __init__(self, info: m.TopicInfo) -> None:
        self.info = info

    def name(self) -> str:
        return self.info.name

    @property
    def spec(self) -> m.TopicConfig:
        return self.info.config

    @property
    def status(self) -> str:
        return self.info.status

    def __repr__(self) -> str:
        return f"MetadataTopicSpec({self.info.name!r}, partitions={self.info.config.partitions}, status={self.info.status})"


class MetadataPartitionSpec:
    def __init__(self, info: m.PartitionInfo) -> None:
        self.info = info

    def name(self) -> str:
        return f"{self.info.topic}-{self.info.partition}"

    def __getattr__(self, item):
        return getattr(self.info, item)

    def __repr__(self) -> str:
        i = self.info
        return f"MetadataPartitionSpec({i.topic}/{i.partition}, leader={i.leader}, status={i.status}, hw={i.hw}, leo={i.leo})"


def topic_changes(before: dict[str, MetadataTopicSpec] | None,
                  after: dict[str, MetadataTopicSpec]) -> list[MessageMetadataTopicSpec]:
    """What changed between two listings (pure): updates (new or changed topics), then deletes."""
    if before is None:
        return []
    out = [MessageMetadataTopicSpec(t, deleted=False) for name, t in after.items()
           if name not in before or before[name].info != t.info]
    out += [MessageMetadataTopicSpec(t, deleted=True) for name, t in before.items() if name not in after]
    return out


class MessageMetadataTopicSpec:
    """One change in a watch: an update (created or changed) or a delete, of one topic."""

    def __init__(self, topic: MetadataTopicSpec, *, deleted: bool) -> None:
        self._topic = topic
        self._deleted = deleted

    def is_update(self) -> bool:
        return not self._deleted

    def is_delete(self) -> bool:
        return self._deleted

    def metadata_topic_spec(self) -> MetadataTopicSpec:
        return self._topic

    def __repr__(self) -> str:
        return f"MessageMetadataTopicSpec({'delete' if self._deleted else 'update'} {self._topic.name()!r})"


class MetaUpdateTopicSpec:
    """One item of ``FluvioAdmin.watch_topic()``: every topic, the changes, an epoch (1, 2, ...)."""

    def __init__(self, topics: list[MetadataTopicSpec], changes: list[MessageMetadataTopicSpec], epoch: int) -> None:
        self._all = topics
        self._changes = changes
        self._epoch = epoch

    def all(self) -> list[MetadataTopicSpec]:
        return list(self._all)

    def changes(self) -> list[MessageMetadataTopicSpec]:
        return list(self._changes)

    def epoch(self) -> int:
        return self._epoch


class FluvioAdmin(SmartModuleAdmin):
    """Admin calls to the SC (the SmartModule ones live in _smartmodule_admin.py). If the SC
    was restarted since the last call, the next call connects to the new one (waiting for it
    a few seconds at most); a call the SC dies in the middle of fails with the retriable
    ScUnavailable, since whether it took effect is unknown."""

    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self._connect = admin_connection
        self._conn = admin_connection(paths)
        self._closed = False

    @classmethod
    def connect(cls, cluster: str | None = None, *, home: str | None = None) -> "FluvioAdmin":
        return cls(ClusterPaths.for_cluster(cluster, home))

    @classmethod
    def connect_with_config(cls, config: FluvioConfig) -> "FluvioAdmin":
        """Connect to the cluster ``config`` names (``FluvioConfig.load()``: the default one)."""
        if not isinstance(config, FluvioConfig):
            raise InvalidArgument(f"connect_with_config needs a FluvioConfig, got {type(config).__name__}")
        return cls(config.paths())

    def _call(self, make):
        if not self._conn.closed:
            try:
                self._conn.poll()           # an SC that died since the last call shows here, before we send
            except RilletError:
                self._conn.close()
        if self._conn.closed and not self._closed:
            self._conn = self._connect(self.paths)
        try:
            return self._conn.call(make(self._conn.next_cid()), timeout_s=60)
        except BrokenConnection as exc:
            self._conn.close()
            if self._closed:
                raise
            raise ScUnavailable(f"the SC of cluster {self.paths.cluster!r} went away during the call ({exc}); "
                                "it is being restarted: retry") from exc

    def create_topic(self, topic: str, spec: TopicSpec | m.TopicConfig | None = None) -> None:
        validate_name(topic, "topic")
        if spec is None:
            config = m.TopicConfig()
        elif isinstance(spec, TopicSpec):
            config = spec.build()
        elif isinstance(spec, m.TopicConfig):
            config = spec
        else:
            raise InvalidArgument(f"create_topic needs a TopicSpec, got {type(spec).__name__}")
        self._call(lambda cid: m.CreateTopic(cid, topic, config))

    def delete_topic(self, topic: str) -> None:
        self._call(lambda cid: m.DeleteTopic(cid, topic))

    def update_topic(self, topic: str, *, retention_time: str | int | None = None,
                     max_partition_size: str | int | None = None, segment_size: str | int | None = None,
                     compression_type: CompressionType | Compression | str | None = None,
                     flush: str | None = None, flush_interval: str | int | None = None,
                     min_in_sync_replicas: int | None = None) -> None:
        """Change a live topic (what ``rillet topic update`` changes); arguments left None keep
        their value. Values read as in TopicSpec (``"7d"``, ``"64MiB"``, a codec); the SC checks
        them as it checks a new topic's. ``segment_size`` applies to segments made from now on."""
        spec, given = TopicSpec(), {}
        if retention_time is not None:
            given["retention_time_s"] = spec.with_retention_time(retention_time).retention_time
        if max_partition_size is not None:
            given["max_partition_size"] = parse_size(max_partition_size)
        if segment_size is not None:
            given["segment_size"] = parse_size(segment_size)
        if compression_type is not None:
            given["compression_type"] = spec.with_compression(compression_type).compression_type
        if flush is not None or flush_interval is not None:
            flushed = spec.with_flush(flush or "interval", flush_interval)
            given["flush"] = flush
            if flush_interval is not None:
                given["flush_interval_ms"] = flushed.flush_interval_ms
        if min_in_sync_replicas is not None:
            given["min_in_sync_replicas"] = int(min_in_sync_replicas)
        changes = m.TopicChanges(**given)
        self._call(lambda cid: m.UpdateTopic(cid, topic, changes))

    def add_partitions(self, topic: str, count: int = 1, *, timeout_ms: int = 30_000) -> None:
        """Add ``count`` partitions (Fluvio's ``topic add-partition``); returns once they are Online.
        Records already stored stay where they are; keys sent after this hash over the new count."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidArgument(f"partitions to add must be an integer of at least 1, got {count!r}")
        self._call(lambda cid: m.AddPartitions(cid, topic, count, timeout_ms))

    def all_topics(self) -> list[MetadataTopicSpec]:
        reply = self._call(lambda cid: m.ListTopics(cid, []))
        return [MetadataTopicSpec(t) for t in reply.topics]

    def list_topics(self, filters: list[str] | None = None) -> list[MetadataTopicSpec]:
        """The topics named in ``filters`` that exist, in that order (all topics for an empty
        list). A name that does not exist is left out, as in Fluvio: ``list_topics(["gone"])``
        is ``[]``, which is how Fluvio code checks that a topic exists."""
        topics = self.all_topics()
        if not filters:
            return topics
        by_name = {t.name(): t for t in topics}
        return [by_name[n] for n in dict.fromkeys(filters) if n in by_name]

    def list_topics_with_params(self, filters: list[str] | None, summary: bool = False) -> list[MetadataTopicSpec]:
        """Fluvio's variant with a ``summary`` flag; the listing is the same either way."""
        return self.list_topics(filters)

    def watch_topic(self, poll_interval_s: float = WATCH_POLL_S) -> Iterator[MetaUpdateTopicSpec]:
        """A never-ending iterator of topic changes, as Fluvio's: the first item's ``all()`` is
        every topic now; each later item comes when a topic was created, deleted or changed
        status, with ``changes()`` saying which. It polls the SC (``poll_interval_s``)."""
        previous: dict[str, MetadataTopicSpec] | None = None
        epoch = 0
        while True:
            topics = self.all_topics()
            current = {t.name(): t for t in topics}
            changes = topic_changes(previous, current)
            if previous is None or changes:
                epoch += 1
                yield MetaUpdateTopicSpec(topics, changes, epoch)
            previous = current
            time.sleep(poll_interval_s)

    def list_partitions(self, filters: list[str] | None = None) -> list[MetadataPartitionSpec]:
        reply = self._call(lambda cid: m.ListPartitions(cid, list(filters or [])))
        return [MetadataPartitionSpec(p) for p in reply.partitions]

    def list_spus(self) -> list[m.SpuInfo]:
        return self._call(lambda cid: m.ListSpus(cid)).spus

    def close(self) -> None:
        self._closed = True
        self._conn.close()

    def __enter__(self) -> "FluvioAdmin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
