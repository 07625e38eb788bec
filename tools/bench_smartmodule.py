"""Records/s through a SmartModule against the same consumer without one (W1-sized records).

    python -m rillet.tools.bench_smartmodule [--records 200000] [--rounds 3]
        [--filter FILE.wasm] [--map FILE.wasm]

Starts a one-SPU LocalCluster in a temporary directory, produces ``--records`` records of
100 B (half of them contain an "a", so filter_on_a keeps half), then reads them all
from the beginning with ``stream_with_config`` (disable_continuous) in one process: without a
module, through the filter, through the map, in turn, ``--rounds`` times. Prints one JSON line
per read: mode, source records read, records handed out, seconds, source records/s. The read
is the whole cost a consumer sees (fetch or direct read, decode, module calls).

Without --filter / --map it runs the repository's example modules filter_on_a and map (WAT in
tests/wat, compiled with wasmtime.wat2wasm into the temporary directory), so it runs from a
checkout, not from an installed package.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORD_BYTES = 100


def _values(n: int) -> list[bytes]:
    # 8 digits, then 92 filler bytes; every other record has an "a" in it
    return [f"{i:08d}".encode() + (b"a" if i % 2 else b"b") * (RECORD_BYTES - 8) for i in range(n)]


def _read(fluvio, topic: str, module: str | None) -> tuple[int, float]:
    from rillet import ConsumerConfig, Offset
    config = ConsumerConfig().disable_continuous()
    if module is not None:
        config.smartmodule(path=module)
    started = time.perf_counter()
    with fluvio.partition_consumer(topic, 0).stream_with_config(Offset.beginning(), config) as stream:
        count = 0
        while True:
            batch = stream.next_batch()
            if not batch:
                break
            count += len(batch)
    return count, time.perf_counter() - started


def _example(directory: str, name: str) -> str:
    """The example module ``name`` of the checkout (tests/wat), compiled into ``directory``."""
    import sys
    if not (REPO / "tests" / "wat").is_dir():
        raise SystemExit(f"bench_smartmodule: no tests/wat in {REPO}: pass --filter and --map")
    sys.path.insert(0, str(REPO))
    from tests.smartmodule_wat import example_wasm
    path = Path(directory) / f"{name}.wasm"
    path.write_bytes(example_wasm(name))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_smartmodule", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--filter", help="a filter module (default: the example filter_on_a)")
    p.add_argument("--map", help="a map module (default: the example map)")
    args = p.parse_args(argv)
    from rillet import TopicProducerConfigBuilder
    from rillet.testing import LocalCluster
    with tempfile.TemporaryDirectory(prefix="rillet-smbench-") as home, LocalCluster(spus=1, home=home) as cluster:
        cluster.create_topic("smbench")
        fluvio = cluster.fluvio()
        config = TopicProducerConfigBuilder().batch_size(64 * 1024).linger(5).build()
        values = _values(args.records)
        with fluvio.topic_producer_with_config("smbench", config) as producer:
            for i in range(0, len(values), 1000):
                producer.send_all([(None, v) for v in values[i:i + 1000]])
            producer.flush()
        modes = {"none": None, "filter": args.filter or _example(home, "filter_on_a"),
                 "map": args.map or _example(home, "map")}
        for _ in range(args.rounds):
            for mode, module in modes.items():
                out, seconds = _read(fluvio, "smbench", module)
                print(json.dumps(dict(mode=mode, records=args.records, handed_out=out, seconds=round(seconds, 3),
                                      records_per_s=round(args.records / seconds))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
