"""What the Fluvio Python client's own integration tests rely on (issue 11), each checked here
against a real cluster: tear-downs that delete offsets of deleted topics, existence checks with
list_topics, FluvioConfig, watch_topic, SmartModule configs that cannot run, Fluvio's messages, AUTO offsets
taken at first read, and `consume -B -d` output."""

from __future__ import annotations

import gc
import warnings

import pytest

from rillet import (
    ConsumerConfig, ConsumerConfigExtBuilder, Fluvio, FluvioAdmin, FluvioConfig, InvalidArgument, Offset,
    OffsetManagementStrategy, SmartModuleKind, TopicNotFound, InvalidSmartModule, SmartModuleNotFound,
)
from tests.cli.test_cli import ok, one_line_error
from tests.conftest import run_cli
from tests.integration.test_consumer import produce, stored


def test_delete_consumer_offset_of_a_deleted_topic_is_accepted_by_the_api_not_the_cli(cluster):
    cluster.create_topic("fc-gone")
    fluvio, admin = cluster.fluvio(), cluster.admin()
    produce(fluvio, "fc-gone", range(3))
    b = ConsumerConfigExtBuilder("fc-gone")
    b.offset_consumer("fc-c")
    b.offset_strategy()
    b.disable_continuous()
    with fluvio.consumer_with_config(b.build()) as stream:
        assert len(list(stream)) == 3
    assert stored(fluvio, "fc-c", "fc-gone") == {0: 2}
    admin.delete_topic("fc-gone")
    assert fluvio.delete_consumer_offset("fc-c", "fc-gone", 0) == []        # Fluvio's tearDown does this
    assert fluvio.delete_consumer_offset("never-used", "fc-gone", 0) == []
    err = one_line_error(run_cli(cluster, "consumer", "delete", "fc-c", "-t", "fc-gone", "-p", "0"), 1)
    assert err == "error: Topic not found: fc-gone"


def test_list_topics_leaves_out_names_that_do_not_exist(cluster):
    admin = cluster.admin()
    assert admin.list_topics(["fc-nothing"]) == []
    cluster.create_topic("fc-listed")
    assert [t.name() for t in admin.list_topics(["fc-nothing", "fc-listed"])] == ["fc-listed"]
    assert [t.name() for t in admin.list_topics_with_params(["fc-listed"], True)] == ["fc-listed"]
    admin.delete_topic("fc-listed")
    assert admin.list_topics(["fc-listed"]) == []
    assert "fc-listed" not in [t.name() for t in admin.all_topics()]
    assert one_line_error(run_cli(cluster, "topic", "describe", "fc-listed"), 1) == "error: Topic not found: fc-listed"


def test_missing_topics_are_named_as_fluvio_does(cluster):
    fluvio = cluster.fluvio()
    with pytest.raises(TopicNotFound, match="^Topic not found: not-created-topic$"):
        fluvio.topic_producer("not-created-topic")
    with pytest.raises(TopicNotFound, match="^Topic not found: not-created-topic$"):
        cluster.admin().delete_topic("not-created-topic")


def test_connect_with_config_reaches_the_default_cluster(cluster, monkeypatch):
    monkeypatch.setenv("RILLET_HOME", str(cluster.home))
    monkeypatch.setenv("RILLET_CLUSTER", cluster.name)
    config = FluvioConfig.load()
    cluster.create_topic("fc-config")
    with Fluvio.connect_with_config(config) as fluvio:
        produce(fluvio, "fc-config", ["x"])
    with FluvioAdmin.connect_with_config(config) as admin:
        assert [t.name() for t in admin.list_topics(["fc-config"])] == ["fc-config"]
    with pytest.raises(InvalidArgument, match="FluvioConfig"):
        Fluvio.connect_with_config("local")


def test_watch_topic_gives_every_topic_then_changes(cluster):
    admin = cluster.admin()
    cluster.create_topic("fc-watch-a")
    stream = admin.watch_topic(poll_interval_s=0.02)
    first = next(stream)
    assert "fc-watch-a" in [t.name() for t in first.all()] and first.changes() == [] and first.epoch() == 1
    cluster.create_topic("fc-watch-b")
    update = next(stream)
    while "fc-watch-b" not in [c.metadata_topic_spec().name() for c in update.changes()]:
        update = next(stream)       # a status change of another topic may come first
    assert "fc-watch-b" in [t.name() for t in update.all()] and update.epoch() > 1
    admin.delete_topic("fc-watch-a")
    gone = next(stream)
    assert [(c.metadata_topic_spec().name(), c.is_delete()) for c in gone.changes()] == [("fc-watch-a", True)]
    stream.close()


def test_streams_with_modules_that_cannot_run_fail_when_they_open_on_both_consumers(cluster, tmp_path):
    cluster.create_topic("fc-sm")
    fluvio = cluster.fluvio()
    produce(fluvio, "fc-sm", ["a"])
    wasm = tmp_path / "filter.wasm"
    wasm.write_bytes(b"\0asm\1\0\0\0")                     # valid wasm, but no SmartModule in it
    by_path = ConsumerConfig()
    by_path.smartmodule(path=str(wasm), kind=SmartModuleKind.Filter)
    by_name = ConsumerConfig()
    by_name.smartmodule(name="my-filter", params={"key": "value"})
    for config, error in ((by_path, InvalidSmartModule), (by_name, SmartModuleNotFound)):
        with pytest.raises(error):
            fluvio.partition_consumer("fc-sm", 0).stream_with_config(Offset.beginning(), config)
        with pytest.raises(error):
            fluvio.multi_partition_consumer("fc-sm").stream_with_config(Offset.beginning(), config)
    plain = fluvio.partition_consumer("fc-sm", 0).stream_with_config(Offset.beginning(), ConsumerConfig())
    assert next(plain).value_string() == "a"
    plain.close()


def _auto(topic: str, consumer: str):
    b = ConsumerConfigExtBuilder(topic)
    b.disable_continuous()
    b.offset_consumer(consumer)
    b.offset_start(Offset.beginning())
    b.offset_strategy(OffsetManagementStrategy.AUTO)
    return b.build()


def test_a_named_stream_takes_its_stored_offset_at_first_read(cluster):
    """Fluvio's test_consume_offset_managed_auto_flush: two records handed out, offset_flush(),
    then a new stream of the same name is made *before* the old one is dropped. The old one
    flushes on drop (committing the second record), and the new one starts at the third."""
    cluster.create_topic("fc-auto")
    fluvio = cluster.fluvio()
    produce(fluvio, "fc-auto", "zyxw")
    config = _auto("fc-auto", "fc-resume")
    stream = fluvio.consumer_with_config(config)
    assert [next(stream).value_string() for _ in range(2)] == ["z", "y"]
    stream.offset_flush()
    assert stored(fluvio, "fc-resume", "fc-auto") == {0: 0}     # AUTO: the record before the last handed out
    stream = fluvio.consumer_with_config(config)               # the old stream is dropped here
    gc.collect()
    assert next(stream).value_string() == "x"
    assert stored(fluvio, "fc-resume", "fc-auto") == {0: 1}
    stream.close()
    assert stored(fluvio, "fc-resume", "fc-auto") == {0: 2}


def test_a_named_consumer_without_a_strategy_warns_once(cluster):
    cluster.create_topic("fc-warn")
    fluvio = cluster.fluvio()
    produce(fluvio, "fc-warn", ["a"])
    b = ConsumerConfigExtBuilder("fc-warn")
    b.offset_consumer("fc-forgetful")
    b.disable_continuous()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            with fluvio.consumer_with_config(b.build()) as stream:
                assert [r.value_string() for r in stream] == ["a"]
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == [
        "consumer 'fc-forgetful' has no offset strategy, so its position is not stored (the default is "
        "OffsetManagementStrategy.NONE, as in Fluvio); call offset_strategy() for AUTO, or "
        "offset_strategy(OffsetManagementStrategy.MANUAL)"]
    assert caught[0].filename == __file__                      # points at the caller's line
    assert stored(fluvio, "fc-forgetful", "fc-warn") == {}


def test_consume_from_the_beginning_prints_values_one_per_line(cluster):
    """Fluvio's test_produce_flush compares `fluvio consume TOPIC -B -d` with the values sent
    (with empty keys), each followed by a newline, and nothing else on stdout."""
    cluster.create_topic("fc-flush")
    fluvio = cluster.fluvio()
    producer = fluvio.topic_producer("fc-flush")
    for i in range(10):
        producer.send(b"", f"record-{i}".encode())
    producer.flush()
    assert ok(run_cli(cluster, "consume", "fc-flush", "-B", "-d")) == "".join(f"record-{i}\n" for i in range(10))


def test_consume_says_where_a_named_consumer_resumes(cluster):
    ok(run_cli(cluster, "topic", "create", "fc-resume-cli", "-p", "2"))
    ok(run_cli(cluster, "produce", "fc-resume-cli", "-p", "1", input=b"a\nb\n"))
    first = run_cli(cluster, "consume", "fc-resume-cli", "-A", "-c", "fc-cli", "-Bd")
    assert ok(first) == "a\nb\n"
    assert first.stderr.decode() == "Consuming records from 'fc-resume-cli' starting from the beginning of log\n"
    again = run_cli(cluster, "consume", "fc-resume-cli", "-A", "-c", "fc-cli", "-Bd")
    assert ok(again) == ""
    assert again.stderr.decode() == ("Consuming records from 'fc-resume-cli' as consumer 'fc-cli', resuming after "
                                     "the last record it saw (partition 1: offset 1); other partitions from the "
                                     "beginning of log\n")
    tail = run_cli(cluster, "consume", "fc-resume-cli", "-p", "1", "-c", "fc-cli", "-T", "1", "-d")
    assert ok(tail) == "b\n"
    assert "resuming 1 records before the record after the last record it saw (offset 1)" in tail.stderr.decode()
