"""Live traffic for tests that change a cluster under it: a producer and a consumer thread."""

from __future__ import annotations

import threading
import time

from rillet import Compression, ConsumerConfig, Isolation, Offset, TopicProducerConfigBuilder

END = "end-of-test"


class Traffic:
    """A producer thread sending keyed records, and a consumer thread reading the partitions
    the topic had when it started, until an END record came from each of them."""

    def __init__(self, fluvio, topic: str, partitions: int, compression=Compression.None_,
                 isolation=Isolation.ReadUncommitted) -> None:
        self.fluvio, self.topic, self.partitions = fluvio, topic, partitions
        self.sent: list[tuple[int, str]] = []            # (partition, value), as acknowledged
        self.got: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.config = (TopicProducerConfigBuilder().linger(0).batch_size(2048).compression(compression)
                       .isolation(isolation).build())
        read = ConsumerConfig()
        read.isolation(isolation)
        self.stream = fluvio.multi_partition_consumer(topic).stream_with_config(Offset.beginning(), read)
        self.threads = [threading.Thread(target=self._guard(self._produce), daemon=True),
                        threading.Thread(target=self._guard(self._consume), daemon=True)]
        for t in self.threads:
            t.start()

    def _guard(self, fn):
        def run():
            try:
                fn()
            except BaseException as exc:          # reported by finish()
                import traceback
                traceback.print_exc()
                self.error = exc
        return run

    def _produce(self) -> None:
        with self.fluvio.topic_producer_with_config(self.topic, self.config) as producer:
            i = 0
            while not self.stop.is_set():
                outs = [(f"v{n}", producer.send(f"k{n % 37}", f"v{n}" + "." * 200)) for n in range(i, i + 20)]
                producer.flush()
                self.sent += [(o.wait().partition_id(), v) for v, o in outs]
                i += 20
                time.sleep(0.005)
            for p in range(self.partitions):
                producer.send_to_partition(p, None, END)
            producer.flush()

    def _consume(self) -> None:
        ends = 0
        for record in self.stream:
            value = record.value_string()
            if value == END:
                ends += 1
                if ends == self.partitions:
                    return
            else:
                self.got.append((record.partition(), value.rstrip(".")))

    def wait_sent(self, n: int, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.sent) < n and self.error is None:
            assert time.monotonic() < deadline, f"only {len(self.sent)} records sent"
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert self.error is None, repr(self.error)
        assert not any(t.is_alive() for t in self.threads)
        assert len(self.got) == len(self.sent)                            # nothing lost, nothing twice
        for p in range(self.partitions):                                  # in order, per partition
            assert [v for q, v in self.got if q == p] == [v for q, v in self.sent if q == p]


def exactly_once_config():
    """An idempotent ReadCommitted producer that retries through leader kills (linger 2 ms)."""
    return (TopicProducerConfigBuilder().linger(2).isolation("read_committed").timeout(2_000)
            .retry_policy(max_retries=1_000, initial_delay_ms=20, strategy="fixed", timeout_ms=30_000).build())


class KeyedSender:
    """A thread sending records of 20 keys, one every 0.5 ms, until ``stop`` (at least
    ``at_least``); ``sent`` holds ``(key, value, output)`` in send order."""

    def __init__(self, producer, at_least: int = 2_000) -> None:
        self.producer, self.at_least = producer, at_least
        self.sent: list[tuple[str, str, object]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.done.is_set() or i < self.at_least:
            self.sent.append((f"k{i % 20}", f"v{i}", self.producer.send(f"k{i % 20}", f"v{i}")))
            i += 1
            time.sleep(0.0005)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(60)


def assert_stored_once_in_key_order(fluvio, topic: str, partitions: int, sent: list) -> None:
    """Every value of ``sent`` stored exactly once (ReadCommitted), each key's in send order."""
    config = ConsumerConfig()
    config.disable_continuous()
    config.isolation("read_committed")
    stored = [r.value_string() for p in range(partitions)
              for r in fluvio.partition_consumer(topic, p).stream_with_config(Offset.beginning(), config)]
    assert len(stored) == len(set(stored)), "a record was stored twice"
    assert set(stored) == {v for _k, v, _o in sent}
    position = {v: i for i, v in enumerate(stored)}
    for key in {k for k, _v, _o in sent}:
        mine = [v for k, v, _o in sent if k == key]
        assert sorted(mine, key=position.get) == mine, f"{key} reordered"
