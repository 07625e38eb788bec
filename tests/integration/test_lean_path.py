"""The linger-0 produce path's costs that a test can pin, on real processes (the figures
are in README, Benchmarks)."""

from __future__ import annotations

import tracemalloc

from rillet import TopicProducerConfigBuilder


def test_reading_an_answer_allocates_no_large_buffer(cluster):
    # Each answer (~30 bytes) used to be read with recv(256 KiB): an allocation of that size
    # per answer in the link thread, which in W3 cost the producer about one page fault per
    # record (perf stat: 18,117 faults for 20,000 records; 15 after).
    cluster.create_topic("lean-recv")
    fluvio = cluster.fluvio()
    with fluvio.topic_producer_with_config("lean-recv", TopicProducerConfigBuilder().linger(0).build()) as producer:
        producer.send(None, b"w" * 100).wait(timeout=10)      # the link and its buffers exist from here
        tracemalloc.start()
        try:
            for _ in range(200):
                producer.send(None, b"x" * 100).wait(timeout=10)
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 128 * 1024, f"{peak} bytes allocated at the peak of 200 linger-0 sends"
