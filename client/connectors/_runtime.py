"""Running one connector: a sink fed from a named consumer, or a source feeding a producer.

Offsets are the runtime's job, not the connector's: a sink reads with the MANUAL
strategy under ``meta.consumer.id`` and commits a record only after the sink's call for
it returned (so a crash resends, never skips: at least once), flushes what is committed
every ``flush-period`` (default 2 s, as Fluvio's AUTO does) and once more on a clean
stop. It reads ReadCommitted: a record a failover could still take back is never handed
to a sink, so a stored offset never runs ahead of what the new leader holds.

Everything runs on one asyncio loop; a plain (blocking) function is called on it
directly, a sync source generator is stepped in a worker thread so a stop is heard.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass, field

from rillet.ipc.errors import RilletError

from ._config import ConnectorConfig
from ._registry import ConnectorType

PROGRESS_EVERY_S = 10.0          # a progress line in the log at most this often


class StopConnector(Exception):
    """Raised by a connector to stop for good (not restarted): ``connector list`` shows it
    ``failed`` with this message. The record being handled is not committed."""


@dataclass
class Context:
    """What a connector is given: its name, topic, its own YAML section (secrets
    substituted), a logger whose lines go to ``rillet connector logs NAME``, and the whole
    parsed config."""
    name: str
    topic: str
    config: dict
    log: logging.Logger
    connector: ConnectorConfig
    stats: dict = field(default_factory=lambda: {"records": 0})


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


def _callable_for(kind: ConnectorType, ctx: Context):
    """(call(item), close()) for a sink type: a class is made once, a function gets ctx."""
    if kind.is_class:
        instance = kind.target(ctx)
        return instance, getattr(instance, "close", None)
    return (lambda item: kind.target(item, ctx)), None


STOPPED = object()        # what _race returns when the stop came first


async def _race(awaitable, stopped: asyncio.Future):
    """The awaitable's result, or STOPPED once ``stopped`` is done (the awaitable is then
    cancelled). ``stopped`` is one long-lived future per run: no task per call for it."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, StopAsyncIteration, Exception):
        pass
    return STOPPED


async def _call(call, item, stopped: asyncio.Future):
    """Run the sink's call for ``item``; STOPPED if a stop cut a coroutine short (an endpoint
    being retried must not hold up `cluster stop`: the item is then not committed)."""
    result = call(item)
    if inspect.isawaitable(result):
        return await _race(result, stopped)
    return result


def consumer_config(cfg: ConnectorConfig, *, stored: bool = False):
    """The sink's consumer. ``stored``: its id has offsets stored, so it resumes after them
    (``beginning()`` counts from the stored offset); an absolute start only applies to a
    consumer with none, as Fluvio's ``offset.start`` does."""
    from rillet import ConsumerConfigExtBuilder, Isolation, Offset, OffsetManagementStrategy
    c = cfg.consumer
    builder = ConsumerConfigExtBuilder(cfg.topic).isolation(Isolation.ReadCommitted)
    if c.partition is not None:
        builder.partition(c.partition)
    if c.start == "beginning" or (stored and isinstance(c.start, int)):
        builder.offset_start(Offset.beginning())
    elif c.start == "end":
        builder.offset_start(Offset.end())
    elif isinstance(c.start, tuple):            # relative starts count from the stored offset, if any
        kind, n = c.start
        builder.offset_start(Offset.from_beginning(n) if kind == "from-beginning" else Offset.from_end(n))
    else:
        builder.offset_start(Offset.absolute(int(c.start)))
    if c.max_bytes:
        builder.max_bytes(c.max_bytes)
    if c.strategy != "none":
        # MANUAL underneath: the runtime commits after the sink's call, not when the next record is read
        builder.offset_consumer(c.id).offset_strategy(OffsetManagementStrategy.MANUAL)
    return builder.build()


async def run_sink(kind: ConnectorType, ctx: Context, fluvio, stop: asyncio.Event) -> None:
    cfg, log = ctx.connector, ctx.log
    keeps_offsets = cfg.consumer.strategy != "none"
    stored = keeps_offsets and any(o.consumer_id == cfg.consumer.id and o.topic == cfg.topic
                                   for o in await asyncio.to_thread(fluvio.consumer_offsets))
    consumer = fluvio.consumer_with_config(consumer_config(cfg, stored=stored))
    call, close = _callable_for(kind, ctx)

    def flush(why: str) -> None:
        if not keeps_offsets:
            return
        try:
            consumer.offset_flush()
        except RilletError as exc:      # the SC may be restarting: the next period tries again
            log.warning("offset flush (%s) failed: %s", why, exc)

    async def flush_periodically() -> None:
        while True:
            await asyncio.sleep(cfg.consumer.flush_period_s)
            flush("periodic")

    flusher = asyncio.ensure_future(flush_periodically())
    stopped = asyncio.ensure_future(stop.wait())
    records = 0
    last_progress = time.monotonic()
    try:
        it = consumer.__aiter__()
        if keeps_offsets:
            def opened():
                consumer._open()            # reads the stored offsets, as the first read would
                return consumer.stored_offsets
            stored = await asyncio.to_thread(opened)
            log.info("consumer %r: %s", cfg.consumer.id,
                     f"resuming after stored offsets {stored}" if stored else f"no stored offset; starting at {cfg.consumer.start}")
        while not stop.is_set():
            # consumer._ready: records already buffered, handed out without waiting (no race needed)
            record = await it.__anext__() if consumer._ready else await _race(it.__anext__(), stopped)
            if record is STOPPED:
                break
            item = [record] if kind.batch else record
            while kind.batch and consumer._ready:
                item.append(await it.__anext__())
            if await _call(call, item, stopped) is STOPPED:
                break
            if keeps_offsets:
                consumer.offset_commit()      # only now: the call for it has returned
            records += len(item) if kind.batch else 1
            ctx.stats["records"] = records
            now = time.monotonic()
            if now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                log.info("delivered %d records (last offset %d of partition %d)", records, record.offset(),
                         record.partition())
    finally:
        flusher.cancel()
        stopped.cancel()
        flush("stop")
        log.info("sink stopped after %d records", records)
        try:
            consumer.close()
        finally:
            if close is not None:
                await _maybe_await(close())


def _producer(fluvio, cfg: ConnectorConfig):
    from rillet import TopicProducerConfigBuilder
    p = cfg.producer
    builder = TopicProducerConfigBuilder()
    if p.linger_ms is not None:
        builder.linger(p.linger_ms)
    if p.batch_size is not None:
        builder.batch_size(p.batch_size)
    if p.compression is not None:
        builder.compression(p.compression)
    return fluvio.topic_producer_with_config(cfg.topic, builder.build())


def _items(kind: ConnectorType, ctx: Context):
    """(next_item coroutine factory, close) over what the source yields."""
    made = kind.target(ctx)
    if hasattr(made, "__anext__") or hasattr(made, "__aiter__"):
        agen = made.__aiter__() if hasattr(made, "__aiter__") else made
        return agen.__anext__, getattr(agen, "aclose", None) or getattr(made, "close", None)
    gen = iter(made)
    done = object()

    async def next_item():
        item = await asyncio.to_thread(next, gen, done)
        if item is done:
            raise StopAsyncIteration
        return item
    return next_item, getattr(gen, "close", None) or getattr(made, "close", None)


async def run_source(kind: ConnectorType, ctx: Context, fluvio, stop: asyncio.Event) -> bool:
    """Produce what the source yields until it ends (True) or a stop (False)."""
    cfg, log = ctx.connector, ctx.log
    producer = _producer(fluvio, cfg)
    next_item, close = _items(kind, ctx)
    stopped = asyncio.ensure_future(stop.wait())
    records, ended = 0, False
    try:
        while not stop.is_set():
            try:
                item = await _race(next_item(), stopped)
            except StopAsyncIteration:
                ended = True
                break
            if item is STOPPED:
                break
            if item is None:                  # a source may yield None for "nothing this time"
                continue
            key, value = item if isinstance(item, tuple) else (None, item)
            producer.send(key, value)
            records += 1
            ctx.stats["records"] = records
    finally:
        stopped.cancel()
        try:
            await asyncio.to_thread(producer.flush)
        finally:
            producer.close()
            if close is not None:
                try:
                    await _maybe_await(close())
                except Exception as exc:
                    log.warning("closing the source failed: %s", exc)
        log.info("source %s after %d records", "ended" if ended else "stopped", records)
    return ended
