"""Names and paths derived from a cluster name: the one place that builds them.

Layout (``home`` is ``$RILLET_HOME``, default ``~/.rillet``)::

    <home>/profiles.json                  profiles: name -> cluster, and the current one (ipc/profiles.py)
    <home>/clusters/<cluster>/
        sc/metadata.json                  SC state (topics, placement, epochs), atomic writes
        sc/sc.pid                         pid of the running SC
        data/spu-<id>/<topic>-<p>/        one directory per replica (segments, index, checkpoints)
        logs/sc.log, logs/spu-<id>.log    process logs

    /tmp/rillet-<uid>/<cluster>-<h>/      runtime dir, mode 0700 (sockets must stay < 108 bytes)
        sc.sock, spu-<id>.sock

    /dev/shm/rillet-<uid>-<cluster>-<h>   the metadata table (POSIX shm, mode 0600)
    /dev/shm/rillet-<uid>-<cluster>-<h>-spu-<id>   SPU <id>'s positions table (mode 0600)

``<h>`` is a short hash of the resolved home directory, so two clusters with the
same name under different homes (parallel tests) never share a socket or shm name.
Every name is validated before a path is built from it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidName

# Fluvio's rule: lowercase ASCII letters, digits and '-', not starting or ending with '-'.
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
MAX_NAME_LEN = 63
DEFAULT_CLUSTER = "local"
# Linux sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def validate_name(name: object, what: str = "topic") -> str:
    """Return ``name`` if it is a valid resource name, else raise InvalidName.

    Valid: 1 to 63 characters of lowercase letters, digits and hyphens, not
    starting or ending with a hyphen. Used for topics, consumers and clusters.
    """
    if not isinstance(name, str):
        raise InvalidName(f"{what} name must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME_LEN:
        raise InvalidName(f"invalid {what} name {name[:20]!r}...: {len(name)} characters exceeds {MAX_NAME_LEN}")
    if not _NAME_RE.match(name):
        raise InvalidName(
            f"invalid {what} name {name!r}: use 1 to {MAX_NAME_LEN} lowercase letters, digits "
            "and hyphens, not starting or ending with a hyphen"
        )
    return name


def rillet_home() -> Path:
    return Path(os.environ.get("RILLET_HOME") or (Path.home() / ".rillet")).expanduser().resolve()


def default_cluster_name(home: Path | None = None) -> str:
    """The cluster meant when none is named: ``$RILLET_CLUSTER``, else the current profile
    of ``home`` (ipc/profiles.py; `cluster start` sets it), else ``local``."""
    env = os.environ.get("RILLET_CLUSTER")
    if env:
        return env
    from . import profiles                  # imports this module: not at the top
    return profiles.load(home if home is not None else rillet_home()).current_cluster() or DEFAULT_CLUSTER


@dataclass(frozen=True)
class ClusterPaths:
    """Every path and name of one cluster. Build with :meth:`for_cluster`."""

    cluster: str
    home: Path

    @classmethod
    def for_cluster(cls, cluster: str | None = None, home: str | os.PathLike | None = None) -> "ClusterPaths":
        base = Path(home).expanduser().resolve() if home is not None else rillet_home()
        name = validate_name(cluster if cluster is not None else default_cluster_name(base), "cluster")
        paths = cls(name, base)
        if len(str(paths.spu_socket(99999))) > MAX_SOCKET_PATH:
            raise InvalidName(f"socket path {paths.spu_socket(99999)} is longer than {MAX_SOCKET_PATH} bytes")
        return paths

    @property
    def _tag(self) -> str:
        return hashlib.sha1(str(self.home).encode()).hexdigest()[:8]

    # --- persistent state ---
    @property
    def cluster_dir(self) -> Path:
        return self.home / "clusters" / self.cluster

    @property
    def sc_dir(self) -> Path:
        return self.cluster_dir / "sc"

    @property
    def metadata_file(self) -> Path:
        return self.sc_dir / "metadata.json"

    @property
    def sc_pid_file(self) -> Path:
        return self.sc_dir / "sc.pid"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.sc_dir / "supervisor.pid"

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.cluster_dir / "logs"

    def spu_data_dir(self, spu_id: int) -> Path:
        return self.data_dir / f"spu-{int(spu_id)}"

    def replica_dir(self, spu_id: int, topic: str, partition: int) -> Path:
        validate_name(topic)
        if not isinstance(partition, int) or partition < 0:
            raise InvalidName(f"invalid partition {partition!r}")
        return self.spu_data_dir(spu_id) / f"{topic}-{partition}"

    def spu_log_file(self, spu_id: int) -> Path:
        return self.log_dir / f"spu-{int(spu_id)}.log"

    @property
    def sc_log_file(self) -> Path:
        return self.log_dir / "sc.log"

    # --- runtime (sockets, shared memory) ---
    @property
    def runtime_root(self) -> Path:
        return Path("/tmp") / f"rillet-{os.getuid()}"

    @property
    def runtime_dir(self) -> Path:
        return self.runtime_root / f"{self.cluster}-{self._tag}"

    @property
    def sc_socket(self) -> Path:
        return self.runtime_dir / "sc.sock"

    def spu_socket(self, spu_id: int) -> Path:
        return self.runtime_dir / f"spu-{int(spu_id)}.sock"

    def spu_ring_socket(self, spu_id: int) -> Path:
        """Where the SPU takes producers' produce rings (broker/spu/produce_ring.py): the same
        length as its socket's path, so the same limit holds."""
        return ring_socket_path(self.spu_socket(spu_id))

    @property
    def shm_name(self) -> str:
        return f"/rillet-{os.getuid()}-{self.cluster}-{self._tag}"

    @property
    def positions_shm_prefix(self) -> str:
        return f"{self.shm_name}-spu-"

    def positions_shm_name(self, spu_id: int) -> str:
        """SPU ``spu_id``'s positions table (ipc/positions.py), written by that SPU only."""
        return f"{self.positions_shm_prefix}{int(spu_id)}"


def ring_socket_path(spu_socket: str | os.PathLike) -> Path:
    """``.../spu-5001.sock`` -> ``.../rng-5001.sock`` (clients know the SPU's socket path only)."""
    path = Path(spu_socket)
    return path.with_name("rng-" + path.name[4:])
