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
