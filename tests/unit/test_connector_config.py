"""Connector YAML (Fluvio's apiVersion 0.2.0) and the SC's restart decisions: pure, tables of cases."""

from __future__ import annotations

import copy

import pytest

from rillet.broker.sc.connectors import after_exit, restart_delay_s
from rillet.connectors._config import (
    gather_secrets, parse_config, parse_secrets_file, redact, referenced_secrets, resolve_secrets,
)
from rillet.connectors._http_config import sink_settings, source_settings
from rillet.ipc.errors import ConnectorConfigError

# The seeds' example ("Using with connectors"), as written there.
SEED = {
    "apiVersion": "0.2.0",
    "meta": {
        "version": "0.2.7", "name": "my-http-sink", "type": "http-sink",
        "topic": {"meta": {"name": "http-sink-topic"}},
        "consumer": {"id": "my-http-sink", "offset": {"strategy": "auto", "start": "beginning",
                                                      "flush-period": {"secs": 2, "nanos": 0}}},
    },
    "http": {"endpoint": "http://127.0.0.1/post"},
}


def changed(path: str, value):
    """SEED with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    doc = copy.deepcopy(SEED)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


def test_the_seeds_example_parses_as_written():
    c = parse_config(SEED)
    assert (c.name, c.type, c.topic, c.direction, c.version) == ("my-http-sink", "http-sink", "http-sink-topic", "sink", "0.2.7")
    assert (c.consumer.id, c.consumer.strategy, c.consumer.start, c.consumer.flush_period_s) == (
        "my-http-sink", "auto", "beginning", 2.0)
    assert c.section == {"endpoint": "http://127.0.0.1/post"}
    s = sink_settings(c.section)
    assert (s.method, s.timeout_s, s.connect_timeout_s, s.on_client_error) == ("POST", 15.0, 1.0, "skip")


@pytest.mark.parametrize("path, value, field", [
    ("meta.type", "ftp-sink", "meta.type"),                              # unknown type
    ("http.endpoint", ..., "http.endpoint"),                             # missing endpoint
    ("http.endpoint", "ftp://x", "http.endpoint"),
    ("meta.consumer.offset.flush-period", "2 fortnights", "meta.consumer.offset.flush-period"),   # bad duration
    ("meta.consumer.offset.flush-period", {"secs": -1}, "meta.consumer.offset.flush-period.secs"),
    ("meta.consumer.offset.flush-period", {"secs": 0, "nanos": 0}, "meta.consumer.offset.flush-period"),
    ("meta.consumer.offset.strategy", "sometimes", "meta.consumer.offset.strategy"),
    ("meta.consumer.offset.start", "middle", "meta.consumer.offset.start"),
    ("meta.consumer.id", ..., "meta.consumer.id"),
    ("meta.consumer.partition", [0, 1], "meta.consumer.partition"),
    ("meta.consumer.id", "Bad Name", "meta.consumer.id"),
    ("meta.topic", ..., "meta.topic"),
    ("meta.topic", {"meta": {"name": "UPPER"}}, "meta.topic.meta.name"),
    ("meta.name", ..., "meta.name"),
    ("meta.version", ..., "meta.version"),
    ("meta.colour", "red", "meta.colour"),
    ("apiVersion", "9.9.9", "apiVersion"),
    ("apiVersion", ..., "apiVersion"),
    ("http.method", "BREW", "http.method"),
    ("http.http-timeout", "soon", "http.http-timeout"),
    ("http.headers", ["no colon here"], "http.headers[0]"),
    ("http.on-client-error", "panic", "http.on-client-error"),
    ("http.speed", 3, "http.speed"),
    ("meta.producer", {"linger": "forever"}, "meta.producer.linger"),
    ("meta.producer", {"compression": "rar"}, "meta.producer.compression"),
    ("meta.producer", {"batch-size": "lots"}, "meta.producer.batch-size"),
    ("transforms", [{"uses": "infinyon/jolt@0.1.0"}], "transforms"),
])
def test_a_bad_config_names_its_field(path, value, field):
    with pytest.raises(ConnectorConfigError) as err:
        parse_config(changed(path, value))
    message = str(err.value)
    assert message.startswith(f"{field}: "), message
    assert "\n" not in message


def test_durations_sizes_and_spellings_fluvio_uses():
    doc = changed("http.http-timeout", "500ms")
    doc["http"]["http_connect_timeout"] = "250ms"              # serde's snake_case spelling
    doc["meta"]["consumer"]["offset"]["flush-period"] = {"secs": 0, "nanos": 500_000_000}
    doc["meta"]["producer"] = {"linger": "10ms", "batch-size": "64KiB", "compression": "lz4"}
    c = parse_config(doc)
    s = sink_settings(c.section)
    assert (s.timeout_s, s.connect_timeout_s, c.consumer.flush_period_s) == (0.5, 0.25, 0.5)
    assert (c.producer.linger_ms, c.producer.batch_size, c.producer.compression) == (10, 65536, "lz4")
    assert parse_config(changed("meta.topic", "plain-topic")).topic == "plain-topic"
    assert parse_config(changed("meta.consumer.offset.start", {"absolute": 7})).consumer.start == 7
    assert parse_config(changed("meta.consumer.offset.start", {"from-end": 3})).consumer.start == ("from-end", 3)
    assert parse_config(changed("meta.consumer.offset.start", {"from_beginning": 2})).consumer.start == ("from-beginning", 2)
    bare = parse_config(changed("meta.consumer", None)).consumer          # Fluvio's defaults
    assert (bare.id, bare.strategy, bare.start) == (None, "none", "end")
    assert parse_config(changed("meta.consumer", {"id": "x"})).consumer.strategy == "none"
    assert parse_config(changed("meta.consumer.partition", "all")).consumer.partition is None
    assert parse_config(changed("meta.consumer.partition", [2])).consumer.partition == 2


def test_http_source_settings():
    doc = {"apiVersion": "0.1.0", "meta": {"version": "0.1.0", "name": "cat-facts", "type": "http-source",
                                           "topic": "cat-facts", "producer": {"linger": "5ms"}},
           "http": {"endpoint": "http://127.0.0.1:1/fact", "interval": "100ms", "stream": True, "delimiter": "\n\n",
                    "method": "POST", "body": "{}"}}
    c = parse_config(doc)
    assert c.direction == "source" and c.consumer.strategy == "none"
    s = source_settings(c.section)
    assert (s.interval_s, s.stream, s.delimiter, s.method, s.body) == (0.1, True, b"\n\n", "POST", "{}")
    doc["http"]["stream"] = "yes"
    with pytest.raises(ConnectorConfigError, match=r"^http.stream: "):
        parse_config(doc)


def test_user_types_need_a_module_and_take_their_own_section():
    doc = changed("meta.type", "upper-sink")
    doc["python"] = {"module": "./mine.py"}
    doc["upper-sink"] = {"prefix": ">"}
    c = parse_config(doc)
    assert (c.direction, c.section_name, c.section, c.module) == (None, "upper-sink", {"prefix": ">"}, "./mine.py")
    c = parse_config(changed("meta.type", "mine"), known_types={"mine": ("sink", "mine")})
    assert c.direction == "sink"


def test_secrets_are_substituted_only_when_resolved_and_redacted_from_text():
    doc = changed("http.headers", ["Authorization: token ${{ secrets.TOKEN }}", "X-Other: ${{secrets.OTHER}}"])
    doc["meta"]["secrets"] = [{"name": "TOKEN"}]
    c = parse_config(doc)
    assert c.secret_names() == {"TOKEN", "OTHER"} == referenced_secrets(doc) | {"TOKEN"}
    assert "${{ secrets.TOKEN }}" in str(c.section)            # parsing keeps the reference
    secrets = gather_secrets(c.secret_names(), {"TOKEN": "s3cr3t"}, {"OTHER": "from-env", "TOKEN": "not-this"})
    assert secrets == {"TOKEN": "s3cr3t", "OTHER": "from-env"}  # the file wins over the environment
    resolved = resolve_secrets(c.section, secrets)
    assert resolved["headers"] == ["Authorization: token s3cr3t", "X-Other: from-env"]
    assert redact("sent Authorization: token s3cr3t", secrets) == "sent Authorization: token ***"
    with pytest.raises(ConnectorConfigError, match=r"^secrets.MISSING: "):
        gather_secrets({"MISSING"}, {}, {})
    with pytest.raises(ConnectorConfigError, match=r"^secrets.OTHER: "):
        resolve_secrets(c.section, {"TOKEN": "x"})


def test_a_whole_value_as_a_secret_fluvios_other_spelling():
    c = parse_config(changed("http.endpoint", {"secret": {"name": "MY_URL"}}))
    assert c.secret_names() == {"MY_URL"}
    resolved = resolve_secrets(c.section, {"MY_URL": "http://127.0.0.1:9/in"})
    assert sink_settings(resolved).endpoint == "http://127.0.0.1:9/in"


def test_secrets_file():
    assert parse_secrets_file("# comment\n\nTOKEN=abc=def\n OTHER = x \n") == {"TOKEN": "abc=def", "OTHER": "x"}
    with pytest.raises(ConnectorConfigError, match="line 2"):
        parse_secrets_file("A=1\nnot a pair\n", "s.env")


@pytest.mark.parametrize("code, lived, failures, expected", [
    (0, 1.0, 3, ("finished", 0, None)),                   # a source that ended
    (3, 1.0, 2, ("failed", 2, None)),                     # refused config / StopConnector
    (-9, 1.0, 0, ("restarting", 1, 0.0)),                 # SIGKILL: back at once
    (1, 1.0, 1, ("restarting", 2, 0.2)),                  # dying young again: backing off
    (1, 1.0, 2, ("restarting", 3, 0.4)),                  # doubling
    (1, 1.0, 9, ("restarting", 10, 10.0)),                # capped
    (None, 60.0, 7, ("restarting", 1, 0.0)),              # ran a while (adopted: code unknown): reset
    (143, 30.0, 0, ("restarting", 1, 0.0)),               # SIGTERM from outside: restarted
])
def test_after_exit(code, lived, failures, expected):
    assert after_exit(code, lived, failures) == expected


def test_restart_delay_grows_and_is_capped():
    assert [restart_delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.0, 0.2, 0.4, 0.8, 1.6]
    assert restart_delay_s(50) == 10.0


def test_the_connector_api_is_pinned():
    import rillet.connectors as api
    assert sorted(api.__all__) == sorted([
        "sink", "source", "Context", "StopConnector", "ConnectorConfig", "parse_config", "parse_secrets_file",
        "resolve_secrets", "redact"])
    for name in api.__all__:
        assert hasattr(api, name), name


def test_a_sink_reads_committed_and_resumes_after_stored_offsets():
    from rillet import Isolation, OffsetManagementStrategy
    from rillet.connectors._runtime import consumer_config
    cfg = parse_config(changed("meta.consumer.offset.start", {"absolute": 7}))
    fresh, resumed = consumer_config(cfg), consumer_config(cfg, stored=True)
    assert (fresh.offset_start.kind, fresh.offset_start.value) == ("absolute", 7)       # nothing stored: start there
    assert (resumed.offset_start.kind, resumed.offset_start.value) == ("from_beginning", 0)   # after the stored one
    assert fresh.isolation == Isolation.ReadCommitted
    assert fresh.offset_strategy == OffsetManagementStrategy.MANUAL and fresh.offset_consumer == "my-http-sink"
    none = consumer_config(parse_config(changed("meta.consumer", {"offset": {"strategy": "none"}})))
    assert none.offset_consumer is None and none.offset_strategy == OffsetManagementStrategy.NONE
    assert (none.offset_start.kind, none.offset_start.value) == ("from_end", 0)          # Fluvio's default: the end
    rel = consumer_config(parse_config(changed("meta.consumer.offset.start", {"from-end": 3})), stored=True)
    assert (rel.offset_start.kind, rel.offset_start.value) == ("from_end", 3)
