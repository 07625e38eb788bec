"""The client handle: connect to a local cluster by name, make producers and consumers."""

from __future__ import annotations

from rillet.ipc.errors import ClusterNotRunning
from rillet.ipc.names import ClusterPaths

from ._consumer import PartitionConsumer
from ._metadata import MetadataView
from ._producer import TopicProducer, TopicProducerConfig


class Fluvio:
    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        try:
            self._meta = MetadataView(paths)
        except ClusterNotRunning as exc:
            raise ClusterNotRunning(f"cluster {paths.cluster!r} is not running ({exc})") from None

    @classmethod
    def connect(cls, cluster: str | None = None, *, home: str | None = None) -> "Fluvio":
        """Connect to the local cluster ``cluster`` (default: $RILLET_CLUSTER or "local")."""
        return cls(ClusterPaths.for_cluster(cluster, home))

    def topic_producer(self, topic: str) -> TopicProducer:
        return TopicProducer(self._meta, topic)

    def topic_producer_with_config(self, topic: str, config: TopicProducerConfig) -> TopicProducer:
        return TopicProducer(self._meta, topic, config)

    def partition_consumer(self, topic: str, partition: int) -> PartitionConsumer:
        return PartitionConsumer(self._meta, topic, partition)

    def close(self) -> None:
        self._meta.close()

    def __enter__(self) -> "Fluvio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
