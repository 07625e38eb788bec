"""broker/sc/metrics_http.py without a socket: the config file, port checks, the HTTP answers."""

import asyncio
import logging
import socket

import pytest

from rillet.broker.sc import metrics_http as mh
from rillet.ipc.errors import InvalidArgument, RilletError, StorageError


def test_config_round_trip_and_off(tmp_path):
    assert mh.load_config(tmp_path) is None
    mh.save_config(tmp_path, mh.MetricsConfig(port=0, picked=41234))
    assert mh.load_config(tmp_path) == mh.MetricsConfig(port=0, picked=41234)
    mh.save_config(tmp_path, None)
    assert mh.load_config(tmp_path) is None


@pytest.mark.parametrize("text", [b"{", b'{"port": "x"}', b'{"port": 70000}'])
def test_a_damaged_config_is_one_clear_error(tmp_path, text):
    (tmp_path / mh.CONFIG_FILE).write_bytes(text)
    with pytest.raises(StorageError, match="cannot read the metrics config .*--metrics-port N or off"):
        mh.load_config(tmp_path)


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_ports_out_of_range(port):
    with pytest.raises(InvalidArgument, match="metrics port must be 0 to 65535"):
        mh.check_port(port)


def test_probe_names_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RilletError, match=f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"):
            mh.probe_port(port)
    mh.probe_port(0)       # any port: nothing to check


def endpoint(render=lambda: lambda: ("text/plain; version=0.0.4", b"rillet_x 1\n")):
    e = mh.MetricsEndpoint(None, None, logging.getLogger("test"))
    e.render = render
    return e


def answer(e, head: bytes):
    async def go():
        try:
            return await e._answer(head)
        finally:
            e.close()
    return asyncio.run(go())


@pytest.mark.parametrize("head, status", [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK"),
    (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", "200 OK"),
    (b"HEAD /metrics HTTP/1.1\r\n\r\n", "200 OK"),
    (b"GET / HTTP/1.1\r\n\r\n", "200 OK"),
    (b"GET /other HTTP/1.1\r\n\r\n", "404 Not Found"),
    (b"POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
    (b"GET /metrics\r\n\r\n", "400 Bad Request"),
    (b"\x00\xff\r\n\r\n", "400 Bad Request"),
])
def test_answers(head, status):
    assert answer(endpoint(), head)[0] == status


def test_a_failing_scrape_is_a_500_not_a_crash():
    def broken():
        raise KeyError("bug")
    status, _ctype, body = answer(endpoint(broken), b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == "500 Internal Server Error" and b"KeyError" in body
    status, _ctype, body = answer(endpoint(lambda: broken), b"GET /metrics HTTP/1.1\r\n\r\n")   # in the worker
    assert status == "500 Internal Server Error" and b"KeyError" in body


def test_the_text_is_built_off_the_loop():
    """The snapshot is taken in the loop's thread, the text built in another, and the loop
    runs other callbacks meanwhile."""
    import threading
    import time
    threads, ticks = {}, []

    def render():
        threads["snapshot"] = threading.get_ident()

        def finish():
            threads["text"] = threading.get_ident()
            time.sleep(0.3)                  # a slow render: the loop must tick meanwhile
            return "text/plain", b"rillet_x 1\n"
        return finish

    async def go():
        e = endpoint(render)

        async def tick():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)
        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0.02)
        try:
            result = await e._answer(b"GET /metrics HTTP/1.1\r\n\r\n")
        finally:
            ticker.cancel()
            e.close()
        return result, threading.get_ident()

    (status, _ctype, body), loop_thread = asyncio.run(go())
    assert status == "200 OK" and body == b"rillet_x 1\n"
    assert threads["snapshot"] == loop_thread != threads["text"]
    assert len(ticks) >= 10, ticks          # ~30 ticks of 10 ms while the render slept 300 ms
