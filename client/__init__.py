"""rillet: a streaming broker for one host, with the Fluvio Python client's API.

``from rillet import Fluvio`` is meant to stand where ``from fluvio import Fluvio``
stood: the same classes, methods and enums, with a few documented fixes (keyless
records have key None; errors are typed).

Names are imported on first use (PEP 562 ``__getattr__``): every ``rillet`` command
imports this package first, and most need only a small part of it (``rillet topic
list`` never loads the producer or the consumer), so start-up stays short.
"""

from __future__ import annotations

import importlib

# public name -> module that defines it (relative to this package, or absolute)
_ERRORS = "rillet.ipc.errors"
_HOME: dict[str, str] = {
    **dict.fromkeys([
        "BrokenConnection", "Closed", "ClusterNotRunning", "ConsumerOffsetNotFound", "InvalidArgument", "InvalidName",
        "NotLeader", "OffsetOutOfRange", "PartitionNotFound", "PartitionOffline", "RilletError", "Timeout",
        "TopicAlreadyExists", "TopicNotFound", "CompressionError", "MessageTooLarge", "RequestTimedOut",
        "ScUnavailable", "OutOfOrderSequence", "RecordsLost", "SmartModuleNotFound", "SmartModuleAlreadyExists",
        "InvalidSmartModule", "SmartModuleError"], _ERRORS),
    **dict.fromkeys(["FluvioAdmin", "MessageMetadataTopicSpec", "MetadataPartitionSpec", "MetadataTopicSpec",
                     "MetaUpdateTopicSpec", "TopicSpec"], "._admin"),
    "FluvioConfig": "._config",
    **dict.fromkeys(["ConsumerConfig", "MultiPartitionStream", "MultiplePartitionConsumer", "PartitionConsumer",
                     "PartitionSelectionStrategy", "PartitionStream"], "._consumer"),
    "ConsumerIterator": "._consumer_iterator",
    **dict.fromkeys(["Compression", "CompressionType", "DeliverySemantic", "Isolation", "OffsetManagementStrategy"],
                    "._enums"),
    "Fluvio": "._fluvio",
    **dict.fromkeys(["ConsumerConfigExt", "ConsumerConfigExtBuilder", "ConsumerOffset"], "._offsets"),
    **dict.fromkeys(["ProduceOutput", "RecordMetadata", "TopicProducer", "TopicProducerConfig",
                     "TopicProducerConfigBuilder", "ProducerStatistics"], "._producer"),
    **dict.fromkeys(["Offset", "Record"], "._record"),
    **dict.fromkeys(["RetryPolicy", "RetryStrategy"], "._retry"),
    "SmartModuleKind": "._smartmodule",
    **dict.fromkeys(["SmartModuleSpec", "MetadataSmartModuleSpec", "MetaUpdateSmartModuleSpec",
                     "MessageMetadataSmartModuleSpec"], "._smartmodule_admin"),
}
# Fluvio's exception is spelled FluviorError in its Python package; both names work here.
_ALIASES = {"FluvioError": "RilletError", "FluviorError": "RilletError"}


def __getattr__(name: str):
    home = _HOME.get(_ALIASES.get(name, name))
    if home is None:
        raise AttributeError(f"module 'rillet' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), _ALIASES.get(name, name))
    globals()[name] = value              # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "OutOfOrderSequence", "RecordsLost", "SmartModuleSpec", "MetadataSmartModuleSpec", "MetaUpdateSmartModuleSpec",
    "MessageMetadataSmartModuleSpec", "SmartModuleNotFound", "SmartModuleAlreadyExists", "InvalidSmartModule",
    "SmartModuleError",
]
