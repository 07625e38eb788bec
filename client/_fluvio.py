"""The client handle: connect to a local cluster by name, make producers and consumers.

Data goes straight to the SPUs (leaders found in the shared-memory table); named
consumers' offsets go to the SC, over one admin connection opened on first use.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from rillet.ipc.errors import ClusterNotRunning, InvalidArgument, TopicNotFound
from rillet.ipc.names import ClusterPaths, validate_name

from ._config import FluvioConfig
from ._consumer import MultiplePartitionConsumer, PartitionConsumer, PartitionSelectionStrategy
from ._consumer_iterator import ConsumerIterator
from ._metadata import MetadataView
from ._offsets import ConsumerConfigExt, ConsumerOffset, OffsetClient
from ._producer import TopicProducer, TopicProducerConfig

_log = logging.getLogger("rillet.consumer")


class Fluvio:
    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        try:
            self._meta = MetadataView(paths)
        except ClusterNotRunning as exc:
            raise ClusterNotRunning(f"cluster {paths.cluster!r} is not running ({exc})") from None
        self._offsets = OffsetClient(paths)
        self._consumers: "weakref.WeakSet[ConsumerIterator]" = weakref.WeakSet()

    @classmethod
    def connect(cls, cluster: str | None = None, *, home: str | None = None) -> "Fluvio":
        """Connect to the local cluster ``cluster`` (default: $RILLET_CLUSTER or "local")."""
        return cls(ClusterPaths.for_cluster(cluster, home))

    @classmethod
    def connect_with_config(cls, config: FluvioConfig) -> "Fluvio":
        """Connect to the cluster ``config`` names (``FluvioConfig.load()``: the default one)."""
        if not isinstance(config, FluvioConfig):
            raise InvalidArgument(f"connect_with_config needs a FluvioConfig, got {type(config).__name__}")
        return cls(config.paths())

    # --- producers ---
    def topic_producer(self, topic: str) -> TopicProducer:
        return TopicProducer(self._meta, topic)

    def topic_producer_with_config(self, topic: str, config: TopicProducerConfig) -> TopicProducer:
        return TopicProducer(self._meta, topic, config)

    # --- consumers ---
    def consumer_with_config(self, config: ConsumerConfigExt) -> ConsumerIterator:
        """A consumer built by ConsumerConfigExtBuilder: one partition, or every partition
        of the topic when none was set; with a name and strategy, it resumes where that
        name left off. The recommended consumer, as in Fluvio."""
        return self._consumer_with_config(config)

    async def async_consumer_with_config(self, config: ConsumerConfigExt) -> ConsumerIterator:
        """``consumer_with_config`` for asyncio: opening runs in a worker thread."""
        return await asyncio.to_thread(self._consumer_with_config, config)

    def _consumer_with_config(self, config: ConsumerConfigExt, *, end_offset: int | None = None) -> ConsumerIterator:
        if not isinstance(config, ConsumerConfigExt):
            raise InvalidArgument(f"consumer_with_config needs a ConsumerConfigExt (from ConsumerConfigExtBuilder.build()), "
                                  f"got {type(config).__name__}")
        consumer = ConsumerIterator(self._meta, self._offsets, config, end_offset=end_offset)
        self._consumers.add(consumer)
        return consumer

    def partition_consumer(self, topic: str, partition: int) -> PartitionConsumer:
        return PartitionConsumer(self._meta, topic, partition)

    def multi_partition_consumer(self, topic: str) -> MultiplePartitionConsumer:
        """Every partition of ``topic``, merged."""
        return MultiplePartitionConsumer(self._meta, PartitionSelectionStrategy.with_all(topic))

    def multi_topic_partition_consumer(self, selections: list[tuple[str, int]]) -> MultiplePartitionConsumer:
        """The given (topic, partition) pairs, merged."""
        return MultiplePartitionConsumer(self._meta, PartitionSelectionStrategy.with_multiple(selections))

    # --- stored consumer offsets ---
    def consumer_offsets(self) -> list[ConsumerOffset]:
        """Every stored offset: objects with ``consumer_id``, ``topic``, ``partition``,
        ``offset`` (the last seen) and ``modified_time`` attributes, as Fluvio returns."""
        return self._offsets.list()

    def delete_consumer_offset(self, consumer: str, topic: str | None = None,
                               partition: int | None = None, *, missing_topic_ok: bool = True) -> list[ConsumerOffset]:
        """Delete a consumer's stored offset on ``topic``/``partition`` (Fluvio's three
        arguments); leave out partition, or topic and partition, to delete more at once.
        Returns what was deleted; nothing stored for an existing topic is ConsumerOffsetNotFound.

        A topic that no longer exists returns [] (deleting a topic deleted its offsets, so
        there is nothing left to delete): Fluvio accepts this call after ``delete_topic``, and
        its own tests' tear-down does exactly that. ``missing_topic_ok=False`` raises
        TopicNotFound instead (the CLI's ``consumer delete`` does).
        """
        validate_name(consumer, "consumer")
        try:
            return self._offsets.delete(consumer, topic, partition)
        except TopicNotFound:
            if not missing_topic_ok:
                raise
            return []

    # --- lifetime ---
    def close(self) -> None:
        """Close open consumers (AUTO ones flush first), the SC connection, the table."""
        try:
            for consumer in list(self._consumers):
                try:
                    consumer.close()
                except Exception as exc:
                    _log.warning("closing consumer %r failed: %s", consumer.config.offset_consumer, exc)
        finally:
            self._offsets.close()
            self._meta.close()

    def __enter__(self) -> "Fluvio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
