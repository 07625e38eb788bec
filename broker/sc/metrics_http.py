"""The metrics endpoint: ``GET /metrics`` on 127.0.0.1, served by the SC's event loop.

Opt-in per cluster: ``rillet cluster start --metrics-port N`` writes the cluster's
metrics config (``sc/metrics.json``: ``{"port": N}``; 0 = any free port) and every SC
of that cluster serves it, the ones its supervisor restarts included, so the URL
survives an SC restart. With port 0 the port first bound is kept in the same file
(``picked``) and later SCs try it first, so the URL stays the same while it is free.

A small HTTP/1.0 responder on asyncio rather than prometheus_client's threaded server:
a scrape then reads the SC's state in the SC's loop thread, between two events, never while
a handler changes it; that read is a copy of the numbers, and the text is built from the
copy in one worker thread (``render``'s contract, broker/sc/metrics.py), so a large scrape
holds the loop for the copy only (the worker still takes the GIL, in slices of
sys.getswitchinterval()). It answers one request per connection and closes;
request heads are capped (8 KiB, 5 s) and so are connections (32 at once), so a
misbehaving client costs the SC nothing but that connection. A port the SC cannot bind
(taken meanwhile) is logged and tried again every few seconds; the SC runs on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
from pathlib import Path

import msgspec

from rillet.ipc.errors import InvalidArgument, RilletError, StorageError

CONFIG_FILE = "metrics.json"
HOST = "127.0.0.1"                 # never another interface: there is no authentication
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32
RETRY_BIND_S = 5.0


class MetricsConfig(msgspec.Struct, kw_only=True):
    port: int                      # as asked; 0: any free port
    picked: int | None = None      # with port 0: the port an SC got, tried first by the next


def check_port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgument(f"metrics port must be 0 to 65535, got {port}")
    return port


def load_config(sc_dir: Path) -> MetricsConfig | None:
    """The cluster's metrics config; None when metrics are off. StorageError when it cannot be read."""
    path = sc_dir / CONFIG_FILE
    try:
        config = msgspec.json.decode(path.read_bytes(), type=MetricsConfig)
        check_port(config.port)
        return config
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, InvalidArgument) as exc:
        raise StorageError(f"cannot read the metrics config {path}: {exc} (cluster start --metrics-port "
                           f"N or off writes it afresh)") from None


def save_config(sc_dir: Path, config: MetricsConfig | None) -> None:
    from rillet.broker.storage.files import write_atomic
    path = sc_dir / CONFIG_FILE
    if config is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, msgspec.json.encode(config))


def probe_port(port: int) -> None:
    """Fail now, with the reason, when 127.0.0.1:port cannot be bound (in use, privileged)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as asyncio's server will
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise RilletError(f"cannot serve metrics on {HOST}:{port}: {exc.strerror or exc}") from None


def url_for(port: int) -> str:
    return f"http://{HOST}:{port}/metrics"


class MetricsEndpoint:
    """Serves metrics at /metrics while the SC runs: ``render()``, called on the loop, takes
    a snapshot and returns a function that the worker thread calls for (content type,
    exposition bytes). ``make_render()`` builds ``render``, only when the cluster's config
    turns metrics on."""

    def __init__(self, sc_dir: Path, make_render, log: logging.Logger) -> None:
        self.sc_dir = sc_dir
        self.make_render = make_render
        self.render = None
        self.log = log
        self.config: MetricsConfig | None = None
        self.port: int | None = None
        self.error = ""
        self._server: asyncio.AbstractServer | None = None
        self._retry: asyncio.Task | None = None
        self._open = 0
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None   # one: renders take turns

    @property
    def url(self) -> str:
        return url_for(self.port) if self.port is not None else ""

    async def start(self) -> None:
        try:
            self.config = load_config(self.sc_dir)
        except RilletError as exc:
            self.error = str(exc)
            self.log.error("metrics not served: %s", self.error)
            return
        if self.config is None:
            return
        try:
            self.render = self.make_render()
        except ImportError as exc:
            self.error = str(exc)
            self.log.error("metrics not served: %s", exc)
            return
        if not await self._bind():
            self._retry = asyncio.ensure_future(self._keep_trying())

    async def _bind(self) -> bool:
        config = self.config
        tries = [config.port] if config.port else ([config.picked] if config.picked else []) + [0]
        for port in tries:
            try:
                self._server = await asyncio.start_server(self._serve, HOST, port, limit=MAX_HEAD_BYTES)
            except OSError as exc:
                self.error = f"cannot bind {HOST}:{port}: {exc.strerror or exc}"
                continue
            self.port = self._server.sockets[0].getsockname()[1]
            self.error = ""
            if config.port == 0 and config.picked != self.port:
                config.picked = self.port
                try:
                    save_config(self.sc_dir, config)
                except RilletError as exc:
                    self.log.warning("cannot keep the picked metrics port: %s", exc)
            self.log.info("metrics served at %s", self.url)
            return True
        self.log.error("metrics not served: %s; trying again every %.0f s", self.error, RETRY_BIND_S)
        return False

    async def _keep_trying(self) -> None:
        while True:
            await asyncio.sleep(RETRY_BIND_S)
            if await self._bind():
                return

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            status, ctype, body = await self._answer(head)
            writer.write(b"HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % (status.encode(), ctype.encode(), len(body)))
            if not head.startswith(b"HEAD "):
                writer.write(body)
            await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self._open -= 1
            writer.close()

    async def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        text = "text/plain; charset=utf-8"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", text, b"bad request\n"
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", text, b"only GET\n"
        if path == b"/":
            return "200 OK", text, b"rillet metrics: /metrics\n"
        if path != b"/metrics":
            return "404 Not Found", text, b"not found: try /metrics\n"
        try:
            finish = self.render()                       # on the loop: the numbers, copied
            if self._worker is None:
                self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metrics-render")
            ctype, body = await asyncio.get_running_loop().run_in_executor(self._worker, finish)
        except Exception as exc:          # a bug in a scrape must never take the SC down
            self.log.exception("metrics scrape failed")
            return "500 Internal Server Error", text, f"scrape failed: {type(exc).__name__}\n".encode()
        return "200 OK", ctype, body
