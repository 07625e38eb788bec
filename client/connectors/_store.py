"""Where a connector lives on disk, shared by the SC (writes) and the connector process (reads).

``$RILLET_HOME/clusters/<cluster>/sc/connectors/<name>.json`` (mode 0600, in the SC's 0700
directory), rewritten atomically: ``{"config": <the YAML as loaded>, "secrets": {NAME: value},
"base_dir": <the YAML's directory>, "created_ms": ...}``. The secret values are kept here
only, so the SC can start the connector again after any restart; they are never logged nor
listed. Its log is ``logs/connector-<name>.log``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rillet.ipc.names import ClusterPaths

MODULE = "rillet.connectors"           # the command line's module (python -m ...): how processes are found


def connectors_dir(paths: ClusterPaths) -> Path:
    return paths.sc_dir / "connectors"


def record_file(paths: ClusterPaths, name: str) -> Path:
    return connectors_dir(paths) / f"{name}.json"


def log_file(paths: ClusterPaths, name: str) -> Path:
    return paths.log_dir / f"connector-{name}.log"


def save(paths: ClusterPaths, name: str, record: dict) -> None:
    directory = connectors_dir(paths)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{name}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, record_file(paths, name))


def load(paths: ClusterPaths, name: str) -> dict:
    return json.loads(record_file(paths, name).read_text())


def load_all(paths: ClusterPaths) -> dict[str, dict]:
    out = {}
    directory = connectors_dir(paths)
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue          # a torn write cannot happen (atomic rename); an edited file is skipped
    return out


def remove(paths: ClusterPaths, name: str) -> None:
    record_file(paths, name).unlink(missing_ok=True)


def command(paths: ClusterPaths, name: str, python: str) -> list[str]:
    return [python, "-m", MODULE, "--cluster", paths.cluster, "--home", str(paths.home), "--name", name]
