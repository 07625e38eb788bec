"""rillet: a streaming broker for one host, with the Fluvio Python client's API.

``from rillet import Fluvio`` is meant to stand where ``from fluvio import Fluvio``
stood: the same classes, methods and enums, with a few documented fixes (keyless
records have key None; errors are typed).
"""

from rillet.ipc.errors import (
    BrokenConnection, Closed, ClusterNotRunning, ConsumerOffsetNotFound, InvalidArgument, InvalidName, NotLeader,
    OffsetOutOfRange, PartitionNotFound, PartitionOffline, RilletError, Timeout, TopicAlreadyExists, TopicNotFound,
    CompressionError, MessageTooLarge, RequestTimedOut, ScUnavailable,
)
from rillet.ipc.errors import OutOfOrderSequence, RecordsLost

from ._admin import (
    FluvioAdmin, MessageMetadataTopicSpec, MetadataPartitionSpec, MetadataTopicSpec, MetaUpdateTopicSpec, TopicSpec,
)
from ._config import FluvioConfig
from ._consumer import (
    ConsumerConfig, MultiPartitionStream, MultiplePartitionConsumer, PartitionConsumer, PartitionSelectionStrategy,
    PartitionStream,
)
from ._consumer_iterator import ConsumerIterator
from ._enums import Compression, CompressionType, DeliverySemantic, Isolation, OffsetManagementStrategy
from ._fluvio import Fluvio
from ._offsets import ConsumerConfigExt, ConsumerConfigExtBuilder, ConsumerOffset
from ._producer import ProduceOutput, RecordMetadata, TopicProducer, TopicProducerConfig, TopicProducerConfigBuilder
from ._producer import ProducerStatistics
from ._record import Offset, Record
from ._retry import RetryPolicy, RetryStrategy
from ._smartmodule import SmartModuleKind

# Fluvio's exception is spelled FluviorError in its Python package; both names work here.
FluvioError = RilletError
FluviorError = RilletError

__all__ = [
    "Fluvio", "FluvioConfig", "FluvioAdmin", "TopicSpec", "SmartModuleKind", "MetaUpdateTopicSpec",
    "MessageMetadataTopicSpec", "CompressionType", "Compression", "Isolation", "DeliverySemantic",
    "OffsetManagementStrategy", "Offset", "Record", "RecordMetadata", "ProduceOutput", "TopicProducer",
    "TopicProducerConfig", "TopicProducerConfigBuilder", "ConsumerConfig", "PartitionConsumer",
    "MultiplePartitionConsumer", "PartitionSelectionStrategy", "ConsumerConfigExt", "ConsumerConfigExtBuilder",
    "ConsumerIterator", "ConsumerOffset", "PartitionStream", "MultiPartitionStream",
    "MetadataTopicSpec", "MetadataPartitionSpec", "RetryPolicy", "RetryStrategy",
    "FluvioError", "FluviorError", "RilletError", "ClusterNotRunning", "TopicNotFound", "TopicAlreadyExists",
    "PartitionNotFound", "PartitionOffline", "NotLeader", "OffsetOutOfRange", "InvalidArgument", "Timeout",
    "Closed", "BrokenConnection", "ConsumerOffsetNotFound", "InvalidName",
    "CompressionError", "MessageTooLarge", "RequestTimedOut", "ProducerStatistics", "ScUnavailable",
    "OutOfOrderSequence", "RecordsLost",
]
