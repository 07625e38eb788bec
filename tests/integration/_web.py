"""A real local HTTP server for the connector tests (http.server in a thread).

POST/PUT: records each request (path, headers, body) and answers ``status(body)`` after
``delay_s``. GET /poll: ``tick-N``, N counting up. GET /stream: ``lines`` joined by the
delimiter, sent in small chunks (chunked transfer), then the response ends.
"""

from __future__ import annotations

import http.server
import threading
import time


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass          # a killed connector's connection resets: expected in these tests


class Web:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict, bytes]] = []
        self.lock = threading.Lock()
        self.delay_s = 0.0
        self.status = lambda body: 200
        self.polls = 0
        self.lines: list[bytes] = []
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes | None:
                """The request's body; None when it was cut short (the sender was killed mid-POST:
                a real server answers nothing to a request it did not get whole, so it is not
                counted as received)."""
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length)
                return body if len(body) == length else None

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self._body()
                if body is None:
                    self.close_connection = True
                    return
                if web.delay_s:
                    time.sleep(web.delay_s)
                status = web.status(body)
                if 200 <= status < 300:
                    with web.lock:
                        web.received.append((self.path, dict(self.headers), body))
                self._answer(status)

            do_PUT = do_POST

            def do_GET(self):
                if self.path == "/poll":
                    with web.lock:
                        web.polls += 1
                        n = web.polls
                    self._answer(200, f"tick-{n}".encode())
                elif self.path == "/stream":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    data = b"\n".join(web.lines) + b"\n"
                    for i in range(0, len(data), 3):          # parts split across chunks
                        chunk = data[i:i + 3]
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self._answer(404)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [b for _p, _h, b in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
