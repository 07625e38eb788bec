"""Fluvio's connector configuration (``apiVersion: 0.2.0``), read unchanged, and its secrets.

Pure: a dict (the YAML already loaded) in, a frozen :class:`ConnectorConfig` out, or one
:class:`~rillet.ipc.errors.ConnectorConfigError` whose message starts with the field at
fault (``meta.consumer.offset.flush-period: ...``), so ``connector create`` can print one
line. The layout follows Fluvio's ``fluvio-connector-common`` config::

    apiVersion: 0.2.0
    meta:
      version: 0.2.7
      name: my-http-sink
      type: http-sink
      topic: http-sink-topic            # or {meta: {name: http-sink-topic}}
      consumer: {id, partition, max-bytes, offset: {strategy, start, flush-period: {secs, nanos}}}
      producer: {linger, batch-size, compression}
      secrets: [{name: TOKEN}]
    http:                               # the type's own section ("http" for both HTTP types)
      endpoint: ...

Secrets are ``${{ secrets.NAME }}`` anywhere in a string; :func:`resolve_secrets`
substitutes them in the connector process only, and :func:`redact` takes their values
out of any text it logs. The stored and listed config keeps the references, never values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rillet.ipc.errors import ConnectorConfigError, InvalidArgument
from rillet.ipc.names import validate_name
from rillet.ipc.units import parse_duration, parse_size

API_VERSIONS = ("0.1.0", "0.2.0")
# type -> (direction, the name of its section). Built-in types; your own name theirs (python.module).
BUILTIN_TYPES = {"http-sink": ("sink", "http"), "http-source": ("source", "http")}
STRATEGIES = ("none", "manual", "auto")
STARTS = ("beginning", "end")
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
DEFAULT_FLUSH_PERIOD_S = 2.0        # the seeds' example, and Fluvio's connector default
_META_KEYS = {"version", "name", "type", "topic", "consumer", "producer", "secrets", "create-topic"}
_SECRET = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True, kw_only=True)
class ConsumerSection:
    id: str | None = None
    partition: int | None = None            # None: every partition of the topic
    max_bytes: int | None = None
    strategy: str = "none"                  # Fluvio's default: nothing stored unless asked for
    start: str | int | tuple = "end"        # Fluvio's default; "beginning", N (absolute), ("from-end", N), ...
    flush_period_s: float = DEFAULT_FLUSH_PERIOD_S


@dataclass(frozen=True, kw_only=True)
class ProducerSection:
    linger_ms: int | None = None
    batch_size: int | None = None
    compression: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConnectorConfig:
    name: str
    type: str
    version: str
    topic: str
    direction: str | None                   # "sink" / "source" for built-ins; user types say it at load
    section_name: str                       # the top-level key holding the type's own settings
    section: dict = field(default_factory=dict)
    consumer: ConsumerSection = ConsumerSection()
    producer: ProducerSection = ProducerSection()
    secrets: tuple[str, ...] = ()           # names declared in meta.secrets
    create_topic: bool = False
    module: str | None = None               # python.module: the file or module registering the type
    raw: dict = field(default_factory=dict)  # the config as given (secret references, not values)

    def secret_names(self) -> set[str]:
        """Every secret the config uses: declared ones and ``${{ secrets.X }}`` references."""
        return set(self.secrets) | referenced_secrets(self.raw)


def _fail(where: str, why: str) -> ConnectorConfigError:
    return ConnectorConfigError(f"{where}: {why}")


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping, got {type(value).__name__}")
    return value


def _string(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, "expected a non-empty string" if value is None or isinstance(value, str)
                    else f"expected a string, got {type(value).__name__}")
    return value


def _duration(value, where: str, *, default_unit: str = "s") -> float:
    """Fluvio writes durations as humantime strings ("10ms", "1s"); also a number of seconds."""
    try:
        return parse_duration(value, default_unit=default_unit)
    except InvalidArgument as exc:
        raise _fail(where, str(exc)) from None


def _flush_period(value, where: str) -> float:
    """``{secs, nanos}`` (serde's Duration, as in the seeds) or a humantime string."""
    if isinstance(value, dict):
        unknown = set(value) - {"secs", "nanos"}
        if unknown:
            raise _fail(where, f"unknown field {sorted(unknown)[0]!r} (expected secs, nanos)")
        secs, nanos = value.get("secs", 0), value.get("nanos", 0)
        for key, v in (("secs", secs), ("nanos", nanos)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _fail(f"{where}.{key}", f"expected a non-negative integer, got {v!r}")
        seconds = secs + nanos / 1e9
    else:
        seconds = _duration(value, where)
    if seconds <= 0:
        raise _fail(where, "must be longer than 0")
    return seconds


def _topic(value) -> str:
    if isinstance(value, dict):
        name = _mapping(value.get("meta"), "meta.topic.meta").get("name")
        return _name(name, "meta.topic.meta.name", "topic")
    return _name(value, "meta.topic", "topic")


def _name(value, where: str, kind: str) -> str:
    try:
        return validate_name(_string(value, where), kind)
    except InvalidArgument as exc:
        if isinstance(exc, ConnectorConfigError):
            raise
        raise _fail(where, str(exc)) from None


def _consumer(value, *, require_id: bool = True) -> ConsumerSection:
    where = "meta.consumer"
    section = _mapping(value, where)
    unknown = set(section) - {"id", "partition", "max-bytes", "offset"}
    if unknown:
        raise _fail(f"{where}.{sorted(unknown)[0]}", "unknown field (expected id, partition, max-bytes, offset)")
    kw: dict = {}
    if "id" in section:
        kw["id"] = _name(section["id"], f"{where}.id", "consumer")
    p = section.get("partition")
    if isinstance(p, list) and len(p) == 1:
        p = p[0]
    if p is not None and p != "all":           # Fluvio: a partition, a list of them, or all
        if not isinstance(p, int) or isinstance(p, bool) or p < 0:
            raise _fail(f"{where}.partition", f"expected a partition number or all, got {p!r}")
        kw["partition"] = p
    if section.get("max-bytes") is not None:
        try:
            kw["max_bytes"] = parse_size(section["max-bytes"])
        except InvalidArgument as exc:
            raise _fail(f"{where}.max-bytes", str(exc)) from None
    offset = _mapping(section.get("offset"), f"{where}.offset")
    unknown = set(offset) - {"strategy", "start", "flush-period"}
    if unknown:
        raise _fail(f"{where}.offset.{sorted(unknown)[0]}", "unknown field (expected strategy, start, flush-period)")
    if "strategy" in offset:
        strategy = str(offset["strategy"]).lower()
        if strategy not in STRATEGIES:
            raise _fail(f"{where}.offset.strategy", f"unknown strategy {offset['strategy']!r} (expected none, manual, auto)")
        kw["strategy"] = strategy
    if "start" in offset:
        kw["start"] = _start(offset["start"], f"{where}.offset.start")
    if "flush-period" in offset:
        kw["flush_period_s"] = _flush_period(offset["flush-period"], f"{where}.offset.flush-period")
    if require_id and kw.get("strategy", "none") != "none" and "id" not in kw:
        raise _fail(f"{where}.id", "required when offset.strategy is not none (offsets are stored under it)")
    return ConsumerSection(**kw)


def _start(value, where: str) -> str | int | tuple:
    """Fluvio's OffsetConfig: beginning, end, {absolute: N}, {from-beginning: N}, {from-end: N}."""
    if isinstance(value, dict) and len(value) == 1:
        (kind, n), = value.items()
        kind = str(kind).replace("_", "-")
        if kind in ("absolute", "from-beginning", "from-end") and isinstance(n, int) and not isinstance(n, bool) and n >= 0:
            return n if kind == "absolute" else (kind, n)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.lower() in STARTS:
        return value.lower()
    raise _fail(where, f"expected beginning, end, {{absolute: N}}, {{from-beginning: N}} or {{from-end: N}}, "
                       f"got {value!r}")


def _producer(value) -> ProducerSection:
    where = "meta.producer"
    section = _mapping(value, where)
    unknown = set(section) - {"linger", "batch-size", "compression"}
    if unknown:
        raise _fail(f"{where}.{sorted(unknown)[0]}", "unknown field (expected linger, batch-size, compression)")
    kw: dict = {}
    if section.get("linger") is not None:
        kw["linger_ms"] = int(_duration(section["linger"], f"{where}.linger", default_unit="ms") * 1000)
    if section.get("batch-size") is not None:
        try:
            kw["batch_size"] = parse_size(section["batch-size"])
        except InvalidArgument as exc:
            raise _fail(f"{where}.batch-size", str(exc)) from None
        if kw["batch_size"] <= 0:
            raise _fail(f"{where}.batch-size", "must be positive")
    if section.get("compression") is not None:
        codec = str(section["compression"]).lower()
        if codec not in CODECS:
            raise _fail(f"{where}.compression", f"unknown codec {section['compression']!r} (expected {', '.join(CODECS)})")
        kw["compression"] = codec
    return ProducerSection(**kw)


def _secrets(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail("meta.secrets", "expected a list of {name: NAME}")
    names = []
    for i, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise _fail(f"meta.secrets[{i}].name", f"expected a secret name (letters, digits, _), got {name!r}")
        names.append(name)
    return tuple(names)


def parse_config(doc, *, known_types: dict[str, tuple[str, str]] | None = None) -> ConnectorConfig:
    """Check a loaded connector YAML; the first problem raises ConnectorConfigError naming its field.

    ``known_types`` adds types beyond the built-in ones (``type -> (direction, section)``);
    a type neither built in nor known needs ``python.module`` (checked where it is imported).
    """
    if not isinstance(doc, dict):
        raise _fail("config", f"expected a YAML mapping at the top, got {type(doc).__name__}")
    api = doc.get("apiVersion")
    if api is None:
        raise _fail("apiVersion", "missing (this format is apiVersion 0.2.0)")
    if str(api) not in API_VERSIONS:
        raise _fail("apiVersion", f"unsupported version {api!r} (expected {' or '.join(API_VERSIONS)})")
    if "transforms" in doc:
        raise _fail("transforms", "SmartModule transforms are not supported by rillet")
    meta = doc.get("meta")
    if meta is None:
        raise _fail("meta", "missing")
    meta = _mapping(meta, "meta")
    unknown = set(meta) - _META_KEYS
    if unknown:
        raise _fail(f"meta.{sorted(unknown)[0]}", f"unknown field (expected {', '.join(sorted(_META_KEYS))})")
    name = _name(meta.get("name"), "meta.name", "connector")
    version = str(meta.get("version") or "")
    if not version:
        raise _fail("meta.version", "missing")
    ctype = _string(meta.get("type"), "meta.type")
    python = _mapping(doc.get("python"), "python")
    module = python.get("module")
    if module is not None:
        module = _string(module, "python.module")
    types = {**BUILTIN_TYPES, **(known_types or {})}
    if ctype in types:
        direction, section_name = types[ctype]
    elif module is not None:
        direction, section_name = None, ctype
    else:
        raise _fail("meta.type", f"unknown connector type {ctype!r} (built in: {', '.join(BUILTIN_TYPES)}; "
                                 "your own type needs python.module naming the file that registers it)")
    if "topic" not in meta:
        raise _fail("meta.topic", "missing")
    section = _mapping(doc.get(section_name), section_name)
    config = ConnectorConfig(
        name=name, type=ctype, version=version, topic=_topic(meta["topic"]), direction=direction,
        section_name=section_name, section=section,
        # a user type's direction is known once its module is imported (with_direction checks the id then)
        consumer=(ConsumerSection(strategy="none") if direction == "source"
                  else _consumer(meta.get("consumer"), require_id=direction == "sink")),
        producer=_producer(meta.get("producer")), secrets=_secrets(meta.get("secrets")),
        create_topic=bool(meta.get("create-topic", False)), module=module, raw=doc,
    )
    if ctype in BUILTIN_TYPES:
        from . import _http_config
        _http_config.check(ctype, section)
    return config


def with_direction(config: ConnectorConfig, direction: str) -> ConnectorConfig:
    """``config`` once a user type's direction is known (its module registered it)."""
    from dataclasses import replace
    if direction == "source":
        return replace(config, direction=direction, consumer=ConsumerSection(strategy="none"))
    if direction == "sink" and config.consumer.strategy != "none" and config.consumer.id is None:
        raise _fail("meta.consumer.id", "required when offset.strategy is not none (offsets are stored under it)")
    return replace(config, direction=direction)


# --- secrets --------------------------------------------------------------------------------

def _secret_ref(value) -> str | None:
    """NAME for Fluvio's other spelling of a whole value, ``{secret: {name: NAME}}``."""
    if isinstance(value, dict) and set(value) == {"secret"} and isinstance(value["secret"], dict):
        name = value["secret"].get("name")
        return name if isinstance(name, str) else None
    return None


def referenced_secrets(value) -> set[str]:
    """Names of every ``${{ secrets.NAME }}`` in the strings of ``value`` (nested), and of
    every ``{secret: {name: NAME}}`` value."""
    if isinstance(value, str):
        return set(_SECRET.findall(value))
    if _secret_ref(value) is not None:
        return {_secret_ref(value)}
    if isinstance(value, dict):
        return set().union(*(referenced_secrets(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_secrets(v) for v in value)) if value else set()
    return set()


def resolve_secrets(value, secrets: dict[str, str]):
    """``value`` with each ``${{ secrets.NAME }}`` replaced by its value; a name without a
    value is a ConnectorConfigError naming it (never its neighbours' values)."""
    if isinstance(value, str):
        def sub(match):
            name = match.group(1)
            if name not in secrets:
                raise _fail(f"secrets.{name}", "no value (give it in the --secrets file or the environment)")
            return secrets[name]
        return _SECRET.sub(sub, value)
    name = _secret_ref(value)
    if name is not None:
        if name not in secrets:
            raise _fail(f"secrets.{name}", "no value (give it in the --secrets file or the environment)")
        return secrets[name]
    if isinstance(value, dict):
        return {k: resolve_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, secrets) for v in value]
    return value


def parse_secrets_file(text: str, where: str = "secrets file") -> dict[str, str]:
    """``KEY=VALUE`` lines (Fluvio's secrets file); blank lines and ``#`` comments skipped."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, val = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConnectorConfigError(f"{where} line {number}: expected KEY=VALUE")
        out[key] = val.strip()
    return out


def gather_secrets(names, file_values: dict[str, str], environ) -> dict[str, str]:
    """The value of each needed secret: the secrets file first, then the environment."""
    out = {}
    for name in sorted(names):
        if name in file_values:
            out[name] = file_values[name]
        elif name in environ:
            out[name] = environ[name]
        else:
            raise _fail(f"secrets.{name}", "no value: not in the --secrets file nor in the environment")
    return out


def redact(text: str, secrets: dict[str, str]) -> str:
    """``text`` with every secret value replaced by ``***`` (longest first, empty ones skipped)."""
    for value in sorted((v for v in secrets.values() if v), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


__all__ = [
    "ConnectorConfig", "ConsumerSection", "ProducerSection", "parse_config", "with_direction", "referenced_secrets",
    "resolve_secrets", "parse_secrets_file", "gather_secrets", "redact", "BUILTIN_TYPES",
]
