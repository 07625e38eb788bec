"""Profiles: named pointers to clusters, one of them current (Fluvio's ``fluvio profile``).

A Fluvio profile names a cluster's address; a rillet cluster is local and named, so a
profile names a cluster under the same ``$RILLET_HOME``. The file is
``<home>/profiles.json``::

    {"version": 1, "current": "local", "profiles": {"local": {"cluster": "local"}}}

``rillet cluster start`` adds a profile named after the cluster and makes it current;
every command and ``Fluvio.connect()`` without a cluster then goes there. The order,
first wins: ``--cluster`` (or an explicit name in the API), ``$RILLET_CLUSTER``, the
current profile, ``local``.

The document is parsed and changed by pure functions (``Profiles``); ``load`` and
``save`` are the only I/O. Writes are atomic (temp file, rename), so a reader sees
the old or the new file, never a torn one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .errors import InvalidArgument, StorageError
from .names import validate_name

PROFILES_VERSION = 1
PROFILES_FILE = "profiles.json"


class _Profile(msgspec.Struct, kw_only=True):
    cluster: str


class _Document(msgspec.Struct, kw_only=True):
    version: int = PROFILES_VERSION
    current: str | None = None
    profiles: dict[str, _Profile] = {}


@dataclass(frozen=True)
class Profiles:
    """The profiles of one home: name -> cluster, and which one is current (or None)."""

    current: str | None = None
    clusters: dict[str, str] = field(default_factory=dict)

    def current_cluster(self) -> str | None:
        return self.clusters.get(self.current) if self.current is not None else None

    def with_cluster_started(self, cluster: str) -> "Profiles":
        """After `cluster start`: a profile named after the cluster, made current (Fluvio's way)."""
        validate_name(cluster, "cluster")
        return Profiles(cluster, {**self.clusters, cluster: cluster})

    def switched_to(self, name: str) -> "Profiles":
        self._require(name)
        return Profiles(name, dict(self.clusters))

    def without(self, name: str) -> "Profiles":
        """Delete ``name``; deleting the current profile leaves none current."""
        self._require(name)
        rest = {k: v for k, v in self.clusters.items() if k != name}
        return Profiles(None if self.current == name else self.current, rest)

    def without_cluster(self, cluster: str) -> "Profiles":
        """After `cluster delete`: the profiles naming that cluster go too."""
        rest = {k: v for k, v in self.clusters.items() if v != cluster}
        return Profiles(self.current if self.current in rest else None, rest)

    def _require(self, name: str) -> None:
        if name not in self.clusters:
            known = ", ".join(sorted(self.clusters)) or "none; `rillet cluster start` makes one"
            raise InvalidArgument(f"profile {name!r} not found (profiles: {known})")

    # --- the file format ---
    def encode(self) -> bytes:
        doc = _Document(current=self.current, profiles={k: _Profile(cluster=v) for k, v in sorted(self.clusters.items())})
        return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"

    @classmethod
    def decode(cls, data: bytes, where: str = PROFILES_FILE) -> "Profiles":
        try:
            doc = msgspec.json.decode(data, type=_Document)
        except msgspec.DecodeError as exc:
            raise StorageError(f"cannot read profiles {where}: {exc} (fix or delete the file)") from exc
        if doc.version != PROFILES_VERSION:
            raise StorageError(f"profiles {where} have version {doc.version}, this rillet reads {PROFILES_VERSION}")
        try:
            for name, profile in doc.profiles.items():
                validate_name(name, "profile")
                validate_name(profile.cluster, "cluster")
        except InvalidArgument as exc:
            raise StorageError(f"cannot read profiles {where}: {exc} (fix or delete the file)") from exc
        current = doc.current if doc.current in doc.profiles else None
        return cls(current, {k: v.cluster for k, v in doc.profiles.items()})


def profiles_path(home: Path) -> Path:
    return Path(home) / PROFILES_FILE


def load(home: Path) -> Profiles:
    """The profiles under ``home``; none yet is an empty set, not an error."""
    path = profiles_path(home)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Profiles()
    except OSError as exc:
        raise StorageError(f"cannot read profiles {path}: {exc.strerror or exc}") from exc
    return Profiles.decode(data, str(path))


def save(home: Path, profiles: Profiles) -> None:
    path = profiles_path(home)
    tmp = path.with_name(f".{PROFILES_FILE}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(profiles.encode())
        os.replace(tmp, path)               # atomic: readers see the old file or the new one
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write profiles {path}: {exc.strerror or exc}") from exc


__all__ = ["Profiles", "load", "save", "profiles_path"]
