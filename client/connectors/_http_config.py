"""The ``http:`` section of Fluvio's http-sink and http-source, checked and typed (pure).

Names as Fluvio's connectors spell them (infinyon/http-sink-connector and
http-source-connector): ``endpoint``, ``method``, ``headers`` (a list of ``"Key: Value"``),
``user-agent``, ``http-timeout`` and ``http-connect-timeout`` (sink), ``interval``, ``body``,
``stream``, ``delimiter`` (source). Fluvio's serde also takes the snake_case spelling, so
both are read. rillet adds, for the sink: ``on-client-error`` (what a 4xx does: ``skip``
logs and goes on, ``stop`` stops the connector) and the backoff of its retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from rillet.ipc.errors import ConnectorConfigError, InvalidArgument
from rillet.ipc.units import parse_duration

SINK_KEYS = {"endpoint", "method", "headers", "user-agent", "http-timeout", "http-connect-timeout",
             "on-client-error", "retry-initial-delay", "retry-max-delay"}
SOURCE_KEYS = {"endpoint", "method", "headers", "user-agent", "body", "interval", "stream", "delimiter",
               "output-type", "output-parts", "http-timeout", "http-connect-timeout"}
SINK_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SOURCE_METHODS = ("GET", "POST", "PUT", "HEAD")


@dataclass(frozen=True, kw_only=True)
class HttpSinkSettings:
    endpoint: str
    method: str = "POST"                       # Fluvio's default
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "text/html"),)   # Fluvio's default header
    user_agent: str = "rillet/http-sink"
    timeout_s: float = 15.0                    # Fluvio's http-timeout default
    connect_timeout_s: float = 1.0             # Fluvio's http-connect-timeout default
    on_client_error: str = "skip"              # a 4xx will not get better by sending it again
    retry_initial_delay_s: float = 0.1
    retry_max_delay_s: float = 5.0             # a server back from a restart is reached within 5 s


@dataclass(frozen=True, kw_only=True)
class HttpSourceSettings:
    endpoint: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str = "rillet/http-source"
    body: str | None = None
    interval_s: float = 10.0                   # Fluvio's default
    stream: bool = False
    delimiter: bytes = b"\n"
    timeout_s: float = 15.0
    connect_timeout_s: float = 1.0


def _fail(key: str, why: str) -> ConnectorConfigError:
    return ConnectorConfigError(f"http.{key}: {why}")


def _normalized(section: dict, keys: set[str]) -> dict:
    out = {}
    for key, value in section.items():
        k = str(key).replace("_", "-")
        if k not in keys:
            raise _fail(str(key), f"unknown field (expected {', '.join(sorted(keys))})")
        out[k] = value
    return out


def _endpoint(section: dict) -> str:
    endpoint = section.get("endpoint")
    if isinstance(endpoint, dict) and isinstance(endpoint.get("secret"), dict):
        name = endpoint["secret"].get("name")          # Fluvio's {secret: {name: X}} form
        endpoint = f"${{{{ secrets.{name} }}}}"
    if endpoint is None:
        raise _fail("endpoint", "missing (the URL to send to / poll)")
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise _fail("endpoint", f"expected a URL, got {endpoint!r}")
    if "${{" not in endpoint and not endpoint.startswith(("http://", "https://")):
        raise _fail("endpoint", f"expected an http:// or https:// URL, got {endpoint!r}")
    return endpoint


def _method(section: dict, allowed: tuple[str, ...], default: str) -> str:
    method = str(section.get("method", default)).upper()
    if method not in allowed:
        raise _fail("method", f"unsupported method {section['method']!r} (expected {', '.join(allowed)})")
    return method


def _headers(section: dict, default) -> tuple[tuple[str, str], ...]:
    value = section.get("headers")
    if value is None:
        return default
    if not isinstance(value, list):
        raise _fail("headers", "expected a list of \"Key: Value\" strings")
    out = []
    for i, item in enumerate(value):
        key, sep, val = str(item).partition(":")
        if not sep or not key.strip():
            # never echo the value: a header is where tokens live
            raise _fail(f"headers[{i}]", "expected \"Key: Value\"")
        out.append((key.strip(), val.strip()))
    return tuple(out)


def _seconds(section: dict, key: str, default: float) -> float:
    if key not in section:
        return default
    try:
        seconds = parse_duration(section[key])
    except InvalidArgument as exc:
        raise _fail(key, str(exc)) from None
    if seconds <= 0:
        raise _fail(key, "must be longer than 0")
    return seconds


def sink_settings(section: dict) -> HttpSinkSettings:
    s = _normalized(section, SINK_KEYS)
    on_error = str(s.get("on-client-error", "skip")).lower()
    if on_error not in ("skip", "stop"):
        raise _fail("on-client-error", f"expected skip or stop, got {s['on-client-error']!r}")
    return HttpSinkSettings(
        endpoint=_endpoint(s), method=_method(s, SINK_METHODS, "POST"),
        headers=_headers(s, HttpSinkSettings.headers), user_agent=str(s.get("user-agent", HttpSinkSettings.user_agent)),
        timeout_s=_seconds(s, "http-timeout", 15.0), connect_timeout_s=_seconds(s, "http-connect-timeout", 1.0),
        on_client_error=on_error, retry_initial_delay_s=_seconds(s, "retry-initial-delay", 0.1),
        retry_max_delay_s=_seconds(s, "retry-max-delay", 5.0),
    )


def source_settings(section: dict) -> HttpSourceSettings:
    s = _normalized(section, SOURCE_KEYS)
    for key, only in (("output-type", "text"), ("output-parts", "body")):
        if key in s and str(s[key]).lower() != only:
            raise _fail(key, f"only {only!r} is supported by rillet")
    stream = s.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("stream", f"expected true or false, got {stream!r}")
    delimiter = s.get("delimiter", "\n")
    if not isinstance(delimiter, str) or not delimiter:
        raise _fail("delimiter", "expected a non-empty string")
    body = s.get("body")
    return HttpSourceSettings(
        endpoint=_endpoint(s), method=_method(s, SOURCE_METHODS, "GET"), headers=_headers(s, ()),
        user_agent=str(s.get("user-agent", HttpSourceSettings.user_agent)),
        body=None if body is None else str(body), interval_s=_seconds(s, "interval", 10.0), stream=stream,
        delimiter=delimiter.encode(), timeout_s=_seconds(s, "http-timeout", 15.0),
        connect_timeout_s=_seconds(s, "http-connect-timeout", 1.0),
    )


def check(ctype: str, section: dict) -> None:
    """Refuse a bad ``http:`` section at create (secrets are still references here)."""
    (sink_settings if ctype == "http-sink" else source_settings)(section)
