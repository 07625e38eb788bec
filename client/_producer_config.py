"""The producer's configuration: TopicProducerConfig (checked when made) and its
fluent builder with Fluvio's method names."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rillet.ipc.errors import InvalidArgument
from rillet.ipc.records import DEFAULT_MAX_BATCH_BYTES, RECORD_OVERHEAD, BatchBuilder

from ._enums import Compression, DeliverySemantic, Isolation
from ._retry import RetryPolicy, RetryStrategy

__all__ = ["TopicProducerConfig", "TopicProducerConfigBuilder"]

EMPTY_BATCH = BatchBuilder().estimated_size   # header plus the records block's array header


@dataclass(frozen=True, kw_only=True)
class TopicProducerConfig:
    batch_size: int = 16_384                 # bytes of records per batch (Fluvio's default)
    linger_ms: int = 100                     # Fluvio's documented default; linger(0) sends at once
    max_request_size: int = 1_048_576        # largest batch, so largest record (Fluvio's default)
    batch_queue_size: int = 100              # unanswered batches per partition before sending waits (Fluvio's);
                                             # at-least-once keeps at most _IDEMPOTENT_MAX_QUEUE (the SPU's memory)
    compression: Compression = Compression.None_   # the topic's compression_type must allow it
    timeout_ms: int = 1_500                  # SPU's wait for the HW (ReadCommitted); base of the request deadline
    isolation: Isolation = Isolation.ReadUncommitted   # Fluvio's default: ack once the leader stored it
    delivery_semantic: DeliverySemantic = DeliverySemantic.AtLeastOnce   # Fluvio's default
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    partition: int | None = None             # set_specific_partitioner: every record to this partition

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_request_size", "batch_queue_size", "timeout_ms"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_request_size > DEFAULT_MAX_BATCH_BYTES:
            raise InvalidArgument(f"max_request_size={self.max_request_size} exceeds the largest batch an SPU "
                                  f"accepts ({DEFAULT_MAX_BATCH_BYTES} bytes)")
        if self.max_request_size <= EMPTY_BATCH + RECORD_OVERHEAD:
            raise InvalidArgument(f"max_request_size={self.max_request_size} leaves no room for a record")
        if self.linger_ms < 0:
            raise InvalidArgument(f"linger must not be negative, got {self.linger_ms}")
        if self.partition is not None and self.partition < 0:
            raise InvalidArgument(f"partition must not be negative, got {self.partition}")
        for name, kind in (("compression", Compression), ("isolation", Isolation),
                           ("delivery_semantic", DeliverySemantic), ("retry_policy", RetryPolicy)):
            if not isinstance(getattr(self, name), kind):
                raise InvalidArgument(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")


class TopicProducerConfigBuilder:
    """Fluent builder with Fluvio's method names; units are Fluvio's (bytes, milliseconds)."""

    def __init__(self) -> None:
        self._fields: dict = {}

    def _set(self, **kw) -> "TopicProducerConfigBuilder":
        self._fields.update(kw)
        return self

    def batch_size(self, size: int): return self._set(batch_size=int(size))
    def max_request_size(self, size: int): return self._set(max_request_size=int(size))
    def batch_queue_size(self, size: int): return self._set(batch_queue_size=int(size))
    def linger(self, ms: int): return self._set(linger_ms=int(ms))
    def timeout(self, ms: int): return self._set(timeout_ms=int(ms))
    def compression(self, c: Compression | str): return self._set(compression=Compression.parse(c))
    def isolation(self, i: Isolation | str): return self._set(isolation=Isolation.parse(i))
    def delivery_semantic(self, d: DeliverySemantic | str): return self._set(delivery_semantic=DeliverySemantic.parse(d))
    def set_specific_partitioner(self, partition: int): return self._set(partition=int(partition))

    def retry_policy(self, policy: RetryPolicy | None = None, *, max_retries: int | None = None,
                     initial_delay_ms: int | None = None, max_delay_ms: int | None = None,
                     timeout_ms: int | None = None,
                     strategy: RetryStrategy | str | None = None) -> "TopicProducerConfigBuilder":
        """Set the at-least-once retry policy: a RetryPolicy, or fields changed on the current one."""
        base = policy or self._fields.get("retry_policy", RetryPolicy())
        changes = {k: v for k, v in dict(max_retries=max_retries, initial_delay_ms=initial_delay_ms,
                                         max_delay_ms=max_delay_ms, timeout_ms=timeout_ms,
                                         strategy=strategy).items() if v is not None}
        return self._set(retry_policy=replace(base, **changes))

    def build(self) -> TopicProducerConfig:
        return TopicProducerConfig(**self._fields)
