"""Connector figures: ``python -m rillet.tools.bench_connector [--records N]``.

On a fresh one-SPU LocalCluster in a temporary directory (removed after), with a local
HTTP server in this process (tests/integration/_web.py's kind, http.server threads):

* ``sink_records_per_s``: N records produced first, then an http-sink created
  (flush-period 2 s); records delivered (2xx) per second, from the first to the last POST.
* ``restart_ms``: the sink SIGKILLed; time until the SC lists a new pid, and until the new
  process delivers again (``redeliver_ms``: it resends what it had not flushed, then more).

One JSON line. The machine's load changes these a lot: say so with any figure.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    times: list[float] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        self.times.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass          # the killed sink's connection resets: expected here, not worth a traceback


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "rillet.tools.cli", *args], env=env, capture_output=True, check=True)


def _pid(paths) -> int:
    """The sink's pid as the SC lists it (in-process: a CLI run would cost more than the restart)."""
    from rillet.ipc import messages as m
    from rillet.ipc.admin_link import admin_connection
    with admin_connection(paths) as conn:
        return conn.call(m.ListConnectors(conn.next_cid())).connectors[0].pid


def _wait(predicate, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise TimeoutError("timed out")


def run(records: int) -> dict:
    from rillet import TopicProducerConfigBuilder
    from rillet.testing import LocalCluster
    server = _Server(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with LocalCluster(spus=1) as cluster:            # its own temporary home, removed after
            home = cluster.home
            cluster.create_topic("bench")
            with cluster.fluvio().topic_producer_with_config("bench", TopicProducerConfigBuilder().build()) as p:
                for i in range(records):
                    p.send(None, f"record-{i:08d}")
                p.flush()
            config = home / "sink.yaml"
            config.write_text(f"""apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: bench-sink
  type: http-sink
  topic: bench
  consumer:
    id: bench-sink
    offset: {{strategy: auto, start: beginning, flush-period: {{secs: 2, nanos: 0}}}}
http:
  endpoint: "http://127.0.0.1:{server.server_address[1]}/in"
""")
            _cli(cluster.env, "connector", "create", "--config", str(config))
            _wait(lambda: len(_Sink.times) >= records, 600)
            first, last = _Sink.times[0], _Sink.times[records - 1]
            pid = _pid(cluster.paths)
            seen = len(_Sink.times)
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            _wait(lambda: _pid(cluster.paths) not in (0, pid))
            listed = time.monotonic()
            with cluster.fluvio().topic_producer("bench") as p:
                p.send(None, "after-kill")
                p.flush()
            _wait(lambda: len(_Sink.times) > seen)
            figures = {"records": records, "sink_records_per_s": round((records - 1) / (last - first)),
                   "restart_ms": round((listed - killed) * 1000),
                   "redeliver_ms": round((_Sink.times[seen] - killed) * 1000),
                   "load_avg_1m": os.getloadavg()[0]}
        left = cluster.leftovers()
        if left:
            raise RuntimeError(f"the cluster left {left}")
        return figures
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_connector", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
