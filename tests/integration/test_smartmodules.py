"""SmartModules on a real cluster: Fluvio's six example modules stored by name and applied to
streams (legacy and consumer_with_config, by socket and by direct reads), offsets that stay the
source offsets, the SC's store (checked, durable, listed, watched), and the bounds: a module that
never returns or allocates without end ends its own stream with a clear error while another
stream keeps flowing."""

from __future__ import annotations

import threading
import time

import pytest

from rillet import (
    ConsumerConfig, ConsumerConfigExtBuilder, InvalidSmartModule, Offset, OffsetManagementStrategy,
    SmartModuleAlreadyExists, SmartModuleError, SmartModuleKind, SmartModuleNotFound,
)
from tests.integration.test_consumer import produce, stored
from tests.smartmodule_wat import (
    AGGREGATE, ARRAY_MAP, FILTER_MAP, FILTER_ON_A, FILTER_PARAM, MAP, example, example_wasm, write_module,
)


def values_of(fluvio, topic, config, partition=0):
    config.disable_continuous()
    stream = fluvio.partition_consumer(topic, partition).stream_with_config(Offset.beginning(), config)
    with stream:
        return [(r.offset(), r.value_string()) for r in stream]


def with_module(**kw):
    config = ConsumerConfig()
    config.smartmodule(**kw)
    return config


SIX = [   # module, values produced, smartmodule() arguments besides the name, (offset, value) handed out
    (FILTER_ON_A, ["record-z", "record-a", "bob", "cat"], {}, [(1, "record-a"), (3, "cat")]),
    (FILTER_PARAM, ["foo", "bar", "fooquux", "baz"], {"params": {"key": "o"}}, [(0, "foo"), (2, "fooquux")]),
    (FILTER_PARAM, ["foo", "bar", "fooquux", "baz"], {}, [(1, "bar"), (3, "baz")]),
    (MAP, ["foo", "bar"], {}, [(0, "FOO"), (1, "BAR")]),
    (FILTER_MAP, ["1", "2", "3", "4", "6"], {}, [(1, "1"), (3, "2"), (4, "3")]),
    (ARRAY_MAP, ['["Apple", "Banana"]', "[]", '["Cranberry"]'], {}, [(0, '"Apple"'), (0, '"Banana"'), (2, '"Cranberry"')]),
    (AGGREGATE, ["a", "b", "c"], {"aggregate": b"1", "kind": SmartModuleKind.Aggregate}, [(0, "1a"), (1, "1ab"), (2, "1abc")]),
    (AGGREGATE, ["a", "b", "c"], {}, [(0, "a"), (1, "ab"), (2, "abc")]),
]


@pytest.mark.parametrize("i", range(len(SIX)))
def test_the_six_examples_by_name_give_fluvios_results_at_source_offsets(cluster, i):
    module, values, options, expected = SIX[i]
    admin, fluvio = cluster.admin(), cluster.fluvio()
    name = module.replace("_", "-")
    if not admin.list_smartmodules([name]):
        admin.create_smartmodule(name, example(module), False)
    topic = f"sm-six-{i}"
    cluster.create_topic(topic)
    produce(fluvio, topic, values)
    assert values_of(fluvio, topic, with_module(name=name, **options)) == expected


def test_a_missing_module_is_fluvios_message_and_a_bad_file_is_refused(cluster, tmp_path):
    fluvio, admin = cluster.fluvio(), cluster.admin()
    cluster.create_topic("sm-errors")
    with pytest.raises(SmartModuleNotFound) as info:
        fluvio.partition_consumer("sm-errors", 0).stream_with_config(Offset.beginning(), with_module(name="does_not_exist"))
    assert info.value.args == ("SmartModule does_not_exist was not found",)
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"not wasm at all")
    with pytest.raises(InvalidSmartModule, match="not a WebAssembly module"):
        admin.create_smartmodule("sm-junk", str(junk), False)
    with pytest.raises(InvalidSmartModule, match="exports none of filter, map"):
        admin.create_smartmodule("sm-odd", write_module(tmp_path, "drop_all", export="other"), False)
    with pytest.raises(InvalidSmartModule, match="not a valid WebAssembly module"):
        fluvio.partition_consumer("sm-errors", 0).stream_with_config(Offset.beginning(), with_module(path=str(junk)))
    assert admin.list_smartmodules(["sm-junk", "sm-odd"]) == []


def test_the_store_checks_lists_watches_deletes_and_survives_a_restart(cluster):
    admin = cluster.admin()
    watch = admin.watch_smartmodule(poll_interval_s=0.05)
    first = next(watch)
    admin.create_smartmodule("sm-dry", example(MAP), True)          # dry run: checked, not stored
    assert admin.list_smartmodules(["sm-dry"]) == []
    admin.create_smartmodule("sm-kept", example(MAP), False)
    with pytest.raises(SmartModuleAlreadyExists):
        admin.create_smartmodule("sm-kept", example(MAP), False)
    update = next(watch)
    assert update.epoch() == first.epoch() + 1
    assert [(c.is_update(), c.metadata_smart_module_spec().name()) for c in update.changes()] == [(True, "sm-kept")]
    listed = admin.list_smartmodules(["sm-kept", "nope"])
    assert [(s.name(), s.size, s.transform) for s in listed] == [("sm-kept", len(example_wasm(MAP)), "map")]
    cluster.restart()
    admin = cluster.admin()
    assert [s.name() for s in admin.list_smartmodules(["sm-kept"])] == ["sm-kept"]
    admin.delete_smartmodule("sm-kept")
    with pytest.raises(SmartModuleNotFound, match="^SmartModule sm-kept was not found$"):
        admin.delete_smartmodule("sm-kept")


def test_consumer_with_config_by_path_keeps_source_offsets_for_a_named_consumer(cluster):
    fluvio = cluster.fluvio()
    cluster.create_topic("sm-named")
    produce(fluvio, "sm-named", ["apple", "kiwi", "banana", "plum", "fig"])

    def read():
        b = ConsumerConfigExtBuilder("sm-named")
        b.partition(0)
        b.offset_consumer("sm-reader")
        b.offset_strategy(OffsetManagementStrategy.AUTO)
        b.disable_continuous()
        b.smartmodule(path=example(FILTER_ON_A), kind=SmartModuleKind.Filter)
        b.smartmodule(path=example(MAP))                      # a chain: filter, then map
        with fluvio.consumer_with_config(b.build()) as stream:
            return [(r.offset(), r.value_string()) for r in stream]

    assert read() == [(0, "APPLE"), (2, "BANANA")]
    # plum and fig (3, 4) were read and dropped: the stored position is the last source record consumed
    assert stored(fluvio, "sm-reader", "sm-named") == {0: 4}
    produce(fluvio, "sm-named", ["papaya", "lime"])
    assert read() == [(5, "PAPAYA")]
    assert stored(fluvio, "sm-reader", "sm-named") == {0: 6}


def test_each_partition_of_a_merged_stream_has_its_own_aggregate(cluster):
    fluvio = cluster.fluvio()
    cluster.create_topic("sm-parts", partitions=2)
    with fluvio.topic_producer("sm-parts") as producer:
        for p, value in ((0, "a"), (1, "x"), (0, "b"), (1, "y"), (0, "c")):
            producer.send_to_partition(p, None, value)
        producer.flush()
    config = with_module(path=example(AGGREGATE), aggregate=b"=")
    config.disable_continuous()
    with fluvio.multi_partition_consumer("sm-parts").stream_with_config(Offset.beginning(), config) as stream:
        got = sorted((r.partition(), r.offset(), r.value_string()) for r in stream)
    assert got == [(0, 0, "=a"), (0, 1, "=ab"), (0, 2, "=abc"), (1, 0, "=x"), (1, 1, "=xy")]


def test_direct_reads_keep_working_with_a_module(cluster):
    fluvio = cluster.fluvio()
    cluster.create_topic("sm-direct")
    produce(fluvio, "sm-direct", [f"v{i}" for i in range(50)])
    config = with_module(path=example(MAP))
    config.disable_continuous()
    stream = fluvio.partition_consumer("sm-direct", 0).stream_with_config(Offset.beginning(), config)
    with stream:
        first = next(stream)
        assert stream.statistics()["direct"]
        got = [(first.offset(), first.value_string())] + [(r.offset(), r.value_string()) for r in stream]
        assert stream.statistics()["direct_reads"] > 0
    assert got == [(i, f"V{i}") for i in range(50)]


def test_a_modules_error_ends_the_stream_after_the_records_before_it(cluster):
    fluvio = cluster.fluvio()
    cluster.create_topic("sm-bad-record")
    with fluvio.topic_producer("sm-bad-record") as producer:
        for value in (b"apple", b"kiwi", b"\xff\xfe", b"banana"):
            producer.send(None, value)
        producer.flush()
    stream = fluvio.partition_consumer("sm-bad-record", 0).stream_with_config(
        Offset.beginning(), with_module(path=example(FILTER_ON_A)))
    assert next(stream).value() == b"apple"
    with pytest.raises(SmartModuleError, match=r"^SmartModule file '.*filter_on_a.wasm' failed at offset 2: "):
        next(stream)
    with pytest.raises(SmartModuleError):                       # it stays ended with that error
        next(stream)


@pytest.mark.parametrize("body, env, message", [
    ("never_returns", {"RILLET_SMARTMODULE_FUEL": "20000000"}, r"used up its fuel \(20,000,000 units"),
    ("allocates_forever", {"RILLET_SMARTMODULE_MEMORY": str(8 << 20)}, r"ran out of memory \(the limit is 8,388,608 bytes"),
])
def test_a_runaway_module_ends_its_stream_while_another_keeps_flowing(cluster, tmp_path, monkeypatch, body, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fluvio = cluster.fluvio()
    topic = f"sm-{body.replace('_', '-')}"
    cluster.create_topic(topic)
    produce(fluvio, topic, ["first", "second"])
    seen, done = [], threading.Event()

    def follow():                       # another stream on the same SPU, following new records
        stream = fluvio.partition_consumer(topic, 0).stream_with_config(Offset.beginning(), with_module(path=example(MAP)))
        with stream:
            for record in stream:
                seen.append(record.value_string())
                if len(seen) == 4:
                    break
        done.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    bad = fluvio.partition_consumer(topic, 0).stream_with_config(Offset.beginning(),
                                                                 with_module(path=write_module(tmp_path, body)))
    started = time.monotonic()
    with pytest.raises(SmartModuleError, match=rf"^SmartModule file '.*' failed at offset 0: it {message}"):
        next(bad)
    assert time.monotonic() - started < 20
    produce(fluvio, topic, ["third", "fourth"])
    assert done.wait(20), f"the other stream stopped flowing: {seen}"
    assert seen == ["FIRST", "SECOND", "THIRD", "FOURTH"]


def test_async_streams_apply_modules_too(cluster):
    import asyncio
    fluvio = cluster.fluvio()
    cluster.create_topic("sm-async")
    produce(fluvio, "sm-async", ["apple", "kiwi", "banana"])

    async def read():
        stream = await fluvio.partition_consumer("sm-async", 0).async_stream_with_config(
            Offset.beginning(), with_module(path=example(FILTER_ON_A)))
        out = []
        async with stream:
            async for record in stream:
                out.append((record.offset(), record.value_string()))
                if len(out) == 2:
                    break
        return out

    assert asyncio.run(read()) == [(0, "apple"), (2, "banana")]


def test_wasmtime_is_core_but_loaded_only_where_a_module_runs(cluster):
    """wasmtime is a core dependency and still imported lazily: after a module was stored (the
    SC checks it) and applied, no broker process has wasmtime's library mapped, and a consumer
    process that applies no module never imports it."""
    import subprocess
    import sys
    from rillet.ipc.admin_link import cluster_processes
    admin, fluvio = cluster.admin(), cluster.fluvio()
    if not admin.list_smartmodules(["sm-lazy"]):
        admin.create_smartmodule("sm-lazy", example(MAP), False)
    cluster.create_topic("sm-lazy")
    produce(fluvio, "sm-lazy", ["x"])
    assert values_of(fluvio, "sm-lazy", with_module(name="sm-lazy")) == [(0, "X")]
    assert "wasmtime" in sys.modules                      # here, where the module ran
    processes = cluster_processes(cluster.paths)
    assert len(processes) >= 3                            # supervisor, SC, SPU
    for process in processes:
        maps = open(f"/proc/{process.pid}/maps").read()
        assert "wasmtime" not in maps, f"broker process {process.pid} ({process.name()}) loaded wasmtime"
    probe = ("import sys; from rillet import Fluvio, Offset, ConsumerConfig; "
             "c = ConsumerConfig().disable_continuous(); "
             "s = Fluvio.connect().partition_consumer('sm-lazy', 0).stream_with_config(Offset.beginning(), c); "
             "print([r.value_string() for r in s], sorted(n for n in ('wasmtime', 'rillet._smartmodule_engine') "
             "if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cluster.env, timeout=60)
    assert out.stdout.strip() == "['x'] []", out.stderr
