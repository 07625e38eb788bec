"""`rillet dashboard [--port N]`: the live view as a local web page.

A sampler thread takes a snapshot of the cluster every SAMPLE_S (tools/view_sampler.py) and
feeds tools/view.py; an HTTP server (the standard library's, one thread per request) bound to
127.0.0.1 serves the page (tools/dashboard_page.py) and the latest state as JSON, which the
page polls. Every request must carry the random token of the URL the command prints
(``?token=...``): without it, 403. Other users of the host could reach a port on 127.0.0.1,
and the token is what keeps them from reading the cluster's state. Ctrl-C or SIGTERM stops it
(exit 0); a port already taken is exit 1 with one line.
"""

from __future__ import annotations

import hmac
import json
import secrets
import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from rillet.tools.args import EXIT_FAILED, EXIT_OK, non_negative, say

SAMPLE_S = 0.25         # a leader change shows on the page within SAMPLE_S + the page's poll (0.3 s)
# Rate charts for the first MAX_CHARTS partitions only: 240 points each (a minute at 4 Hz) for
# a cluster's 4,096 would make every poll megabytes; a drill watches a few topics.
MAX_CHARTS = 64
HOST = "127.0.0.1"      # never another interface: there is no authentication beyond the token


class Dashboard:
    """The sampled state, kept as the JSON bytes the page fetches."""

    def __init__(self, cluster: str, sampler, view) -> None:
        self.cluster = cluster
        self._sampler = sampler
        self._view = view
        self._lock = threading.Lock()
        self._state = b"{}"
        self.stop = threading.Event()

    def sample_once(self) -> None:
        frame = self._view.update(self._sampler.snapshot())
        history = self._view.history()
        charted = [f"{p['topic']}/{p['partition']}" for p in frame.partitions][:MAX_CHARTS]
        state = frame.to_json() | {"cluster": self.cluster, "events": [e.to_json() for e in self._view.events],
                                   "history": {k: history[k] for k in charted if k in history},
                                   "charts_left_out": max(0, len(frame.partitions) - MAX_CHARTS)}
        data = json.dumps(state).encode()
        with self._lock:
            self._state = data

    def sample_forever(self) -> None:
        while not self.stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # noqa: BLE001 - the page shows it; the server keeps serving
                with self._lock:
                    self._state = json.dumps({"cluster": self.cluster, "error": f"{type(exc).__name__}: {exc}",
                                              "wall_ms": 0, "partitions": [], "spus": [], "consumers": [],
                                              "events": [], "history": {}}).encode()
            self.stop.wait(SAMPLE_S)

    def state(self) -> bytes:
        with self._lock:
            return self._state


def make_handler(dashboard: Dashboard, token: str, page: bytes):
    class Handler(BaseHTTPRequestHandler):
        server_version = "rillet-dashboard"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            url = urlsplit(self.path)
            given = parse_qs(url.query).get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return self._send(403, b"forbidden: open the URL rillet dashboard printed (it carries the token)\n",
                                  "text/plain; charset=utf-8")
            if url.path == "/":
                return self._send(200, page, "text/html; charset=utf-8")
            if url.path == "/state.json":
                return self._send(200, dashboard.state(), "application/json")
            return self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")     # the token stays out of other sites' logs
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:  # noqa: A002 - the standard library's signature
            pass        # one line per poll would flood the terminal the URL was printed on

    return Handler


def cmd_dashboard(args) -> int:
    from rillet.ipc.names import ClusterPaths
    from rillet.tools.dashboard_page import PAGE
    from rillet.tools.view import ClusterView
    from rillet.tools.view_sampler import Sampler
    paths = ClusterPaths.for_cluster(args.cluster)
    token = secrets.token_urlsafe(18)
    with Sampler(paths) as sampler:
        dashboard = Dashboard(paths.cluster, sampler, ClusterView())
        dashboard.sample_once()
        try:
            server = ThreadingHTTPServer((HOST, args.port), make_handler(dashboard, token, PAGE.encode()))
        except OSError as exc:
            say(f"error: cannot listen on {HOST}:{args.port}: {exc.strerror or exc}")
            return EXIT_FAILED
        server.daemon_threads = True
        sampler_thread = threading.Thread(target=dashboard.sample_forever, name="rillet-dashboard-sampler", daemon=True)
        sampler_thread.start()
        previous = signal.signal(signal.SIGTERM, _interrupt)
        port = server.server_address[1]
        print(f"dashboard of cluster {paths.cluster!r}: http://{HOST}:{port}/?token={token}", flush=True)
        say("(Ctrl-C to stop)")
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.server_close()
            dashboard.stop.set()
            sampler_thread.join(5)
    return EXIT_OK


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def port(text: str) -> int:
    value = non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0 to 65535, got {value}")
    return value


def register(sub) -> None:
    dash = sub.add_parser("dashboard", help="serve the live view as a web page on 127.0.0.1 (URL with a token)")
    dash.add_argument("--port", type=port, default=0,
                      help="TCP port on 127.0.0.1 (default 0: any free port; the URL says which)")
    dash.set_defaults(func=cmd_dashboard)

