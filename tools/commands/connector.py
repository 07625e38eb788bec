"""`rillet connector create | list | logs | delete`: connectors the cluster runs (Fluvio's CLI shape).

``create --config FILE.yaml [--secrets FILE]`` reads Fluvio's connector YAML, checks it
(one line naming the field at fault), gathers the values of the secrets it uses (the
secrets file first, then the environment) and hands both to the SC, which keeps them and
runs the connector as a supervised process (broker/sc/connectors.py). A type of your own
is imported here first (``python.module``), so a typo is refused at create, not in a log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rillet.ipc.errors import ConnectorConfigError, ConnectorNotFound, RilletError
from rillet.tools.args import EXIT_OK, Parser, name, say
from rillet.tools.output import FORMATS, render

COLUMNS = [("NAME", "name"), ("TYPE", "type"), ("STATUS", "status"), ("PID", "pid_text"), ("RESTARTS", "restarts"),
           ("OFFSET", "offset_text"), ("LAG", "lag_text")]


def _paths(args):
    from rillet.ipc.names import ClusterPaths
    return ClusterPaths.for_cluster(args.cluster)


def _yaml():
    try:
        import yaml
    except ImportError:
        raise RilletError("reading connector YAML needs pyyaml: pip install 'rillet[connectors]'") from None
    return yaml


def read_config(path: Path):
    """(the YAML as loaded, its ConnectorConfig) or one error line naming the file or field."""
    from rillet.connectors._config import parse_config, with_direction
    from rillet.connectors._registry import known_types, load_builtins, load_module, registered
    yaml = _yaml()
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RilletError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConnectorConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    load_builtins()
    module = (doc.get("python") or {}).get("module") if isinstance(doc, dict) and isinstance(doc.get("python"), dict) else None
    if isinstance(module, str):
        load_module(module, path.parent)
    config = parse_config(doc, known_types=known_types())
    kind = registered(config.type)
    if kind is None:
        raise ConnectorConfigError(f"meta.type: python.module {module!r} does not register {config.type!r} "
                                   "(@sink(...) or @source(...) with that name)")
    return doc, with_direction(config, kind.direction)


def cmd_connector_create(args) -> int:
    from rillet.connectors._config import gather_secrets, parse_secrets_file
    from rillet.ipc import messages as m
    from rillet.ipc.admin_link import admin_connection
    path = Path(args.config)
    doc, config = read_config(path)
    file_values = {}
    if args.secrets:
        try:
            file_values = parse_secrets_file(Path(args.secrets).read_text(), args.secrets)
        except OSError as exc:
            raise RilletError(f"cannot read {args.secrets}: {exc.strerror or exc}") from None
    secrets = gather_secrets(config.secret_names(), file_values, os.environ)
    with admin_connection(_paths(args)) as conn:
        if config.create_topic:
            _create_topic_if_missing(conn, config.topic)
        reply = conn.call(m.CreateConnector(conn.next_cid(), config.name, json.dumps(doc), secrets,
                                            str(path.resolve().parent)))
    info = reply.connectors[0]
    pid = f", pid {info.pid}" if info.pid else f", {info.status}"
    print(f"connector {info.name!r} created ({info.type} on topic {info.topic!r}{pid})")
    return EXIT_OK


def _create_topic_if_missing(conn, topic: str) -> None:
    from rillet.ipc import messages as m
    from rillet.ipc.errors import TopicAlreadyExists
    try:
        conn.call(m.CreateTopic(conn.next_cid(), topic, m.TopicConfig()), timeout_s=35)
    except TopicAlreadyExists:
        pass


def list_connectors(paths) -> list:
    from rillet.ipc import messages as m
    from rillet.ipc.admin_link import admin_connection
    with admin_connection(paths) as conn:
        return conn.call(m.ListConnectors(conn.next_cid())).connectors


def rows_of(infos) -> list[dict]:
    return [dict(name=i.name, type=i.type, topic=i.topic, direction=i.direction, status=i.status, pid=i.pid,
                 restarts=i.restarts, offset=i.offset, lag=i.lag, last_exit=i.last_exit,
                 config=json.loads(i.config_json) if i.config_json else None) for i in infos]


def cmd_connector_list(args) -> int:
    rows = rows_of(list_connectors(_paths(args)))
    if args.output != "table":
        print(render(rows, [], args.output))
        return EXIT_OK
    if not rows:
        say("no connectors")
        return EXIT_OK
    for row in rows:
        row["pid_text"] = row["pid"] or "-"
        row["offset_text"] = "-" if row["offset"] < 0 else row["offset"]
        row["lag_text"] = "-" if row["lag"] < 0 else row["lag"]
    print(render(rows, COLUMNS, "table"))
    return EXIT_OK


def cmd_connector_logs(args) -> int:
    import sys
    from rillet.connectors import _store
    paths = _paths(args)
    if args.name not in {i.name for i in list_connectors(paths)}:
        raise ConnectorNotFound(f"connector {args.name!r} not found")
    try:
        data = _store.log_file(paths, args.name).read_bytes()
    except FileNotFoundError:
        data = b""
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return EXIT_OK


def cmd_connector_delete(args) -> int:
    from rillet.ipc import messages as m
    from rillet.ipc.admin_link import admin_connection
    with admin_connection(_paths(args)) as conn:
        conn.call(m.DeleteConnector(conn.next_cid(), args.name), timeout_s=15)
    print(f"connector {args.name!r} deleted")
    return EXIT_OK


def register(sub) -> None:
    connector = sub.add_parser("connector", help="connectors the cluster runs: create, list, logs, delete")
    csub = connector.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    csub.required = True
    create = csub.add_parser("create", help="create a connector from Fluvio's connector YAML and start it")
    create.add_argument("--config", required=True, help="the connector YAML (apiVersion 0.2.0)")
    create.add_argument("--secrets", default=None, help="a file of KEY=VALUE lines for ${{ secrets.KEY }}")
    create.set_defaults(func=cmd_connector_create)
    lst = csub.add_parser("list", help="list connectors: status, pid, restarts, offset, lag")
    lst.add_argument("-O", "--output", choices=FORMATS, default="table")
    lst.set_defaults(func=cmd_connector_list)
    logs = csub.add_parser("logs", help="print a connector's log")
    logs.add_argument("name", type=name)
    logs.set_defaults(func=cmd_connector_logs)
    delete = csub.add_parser("delete", help="stop a connector and forget it (its stored offsets stay)")
    delete.add_argument("name", type=name)
    delete.set_defaults(func=cmd_connector_delete)
