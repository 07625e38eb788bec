"""The built-in http-sink and http-source, written on the public connector API.

HTTP is httpx's (README, Connectors: why): one pooled ``AsyncClient`` per connector,
timeouts split into connect and whole-request as Fluvio names them.

http-sink: each record's value is the body of one request. Only a 2xx counts as
delivered. Connection errors, timeouts, 5xx and 429 are retried with a doubling delay
(``retry-initial-delay`` to ``retry-max-delay``) until they succeed, so an outage of
the endpoint holds the stream, it never skips. Any other answer (4xx, an unfollowed 3xx)
will not change by sending again: ``on-client-error: skip`` logs it and goes on,
``stop`` stops the connector for good (the record is not committed).

http-source: polls ``endpoint`` every ``interval`` and yields each response body as a
record; with ``stream: true`` it reads one long response and yields a record for every
``delimiter``-separated part, reconnecting after ``interval`` when the response ends.
"""

from __future__ import annotations

import asyncio

from ._http_config import sink_settings, source_settings
from ._registry import sink, source
from ._runtime import Context, StopConnector


def _httpx():
    try:
        import httpx
    except ImportError:
        raise StopConnector("the HTTP connectors need httpx: pip install 'rillet[connectors]'") from None
    return httpx


def _client(settings):
    httpx = _httpx()
    headers = {"User-Agent": settings.user_agent}
    headers.update(dict(settings.headers))
    return httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        follow_redirects=False,
    )


@sink("http-sink", section="http")
class HttpSink:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = sink_settings(ctx.config)
        self.client = _client(self.settings)
        self._failing = False
        self.skipped = 0

    async def __call__(self, record) -> None:
        s, log = self.settings, self.ctx.log
        delay = s.retry_initial_delay_s
        httpx = _httpx()
        while True:
            try:
                response = await self.client.request(s.method, s.endpoint, content=record.value())
                status = response.status_code
                why = f"HTTP {status}"
            except httpx.TransportError as exc:        # connect refused, timeouts, broken connections
                status, why = None, f"{type(exc).__name__}: {exc or 'no detail'}"
            if status is not None and 200 <= status < 300:
                if self._failing:
                    log.info("endpoint delivers again (offset %d of partition %d)", record.offset(), record.partition())
                    self._failing = False
                return
            if status is None or status >= 500 or status == 429:
                if not self._failing:
                    log.warning("offset %d of partition %d not delivered (%s); retrying every %g s at most",
                                record.offset(), record.partition(), why, s.retry_max_delay_s)
                    self._failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, s.retry_max_delay_s)
                continue
            if s.on_client_error == "stop":
                log.error("offset %d of partition %d refused (%s); stopping (on-client-error: stop)",
                          record.offset(), record.partition(), why)
                raise StopConnector(f"offset {record.offset()} of partition {record.partition()} refused: {why}")
            self.skipped += 1
            log.warning("offset %d of partition %d refused (%s); skipped (on-client-error: skip)",
                        record.offset(), record.partition(), why)
            return

    async def close(self) -> None:
        await self.client.aclose()


@source("http-source", section="http")
async def http_source(ctx: Context):
    s = source_settings(ctx.config)
    httpx = _httpx()
    async with _client(s) as client:
        while True:
            try:
                if s.stream:
                    async for part in _stream(client, s):
                        yield part
                else:
                    response = await client.request(s.method, s.endpoint, content=s.body)
                    if 200 <= response.status_code < 300:
                        yield response.content
                    else:
                        ctx.log.warning("poll answered HTTP %d; nothing produced", response.status_code)
            except httpx.TransportError as exc:
                ctx.log.warning("poll failed (%s: %s); trying again in %g s", type(exc).__name__, exc, s.interval_s)
            await asyncio.sleep(s.interval_s)


async def _stream(client, s):
    """Parts of one long response split on ``s.delimiter`` (the last part once it ends)."""
    buffer = b""
    async with client.stream(s.method, s.endpoint, content=s.body) as response:
        if not 200 <= response.status_code < 300:
            raise _httpx().TransportError(f"stream answered HTTP {response.status_code}")
        async for chunk in response.aiter_bytes():
            buffer += chunk
            *parts, buffer = buffer.split(s.delimiter)
            for part in parts:
                if part:
                    yield part
    if buffer:
        yield buffer
