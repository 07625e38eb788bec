"""``FluvioConfig``: which cluster a client connects to.

Fluvio's FluvioConfig names an SC address taken from the current profile of
``~/.fluvio/config``. A rillet cluster is local and named, so the config names a
cluster (and the ``$RILLET_HOME`` it lives under). ``load()`` picks the cluster the
CLI would pick: ``$RILLET_CLUSTER``, else the current profile (ipc/profiles.py),
else ``local``; ``load("name")`` the cluster of profile ``name``.
"""

from __future__ import annotations

import os
from pathlib import Path

from rillet.ipc import profiles
from rillet.ipc.names import ClusterPaths, rillet_home


class FluvioConfig:
    """Connection settings: a cluster name and its home directory."""

    def __init__(self, cluster: str | None = None, home: str | os.PathLike | None = None) -> None:
        paths = ClusterPaths.for_cluster(cluster, home)      # validates the name now, not at connect
        self.cluster = paths.cluster
        self.home = paths.home

    @classmethod
    def load(cls, profile: str | None = None, *, home: str | os.PathLike | None = None) -> "FluvioConfig":
        """The default cluster (``$RILLET_CLUSTER``, else the current profile, else ``local``),
        or with ``profile`` that profile's cluster (InvalidArgument if there is none)."""
        if profile is None:
            return cls(None, home)
        base = Path(home).expanduser().resolve() if home is not None else rillet_home()
        known = profiles.load(base)
        return cls(known.switched_to(profile).current_cluster(), base)

    def paths(self) -> ClusterPaths:
        return ClusterPaths.for_cluster(self.cluster, self.home)

    def __repr__(self) -> str:
        return f"FluvioConfig(cluster={self.cluster!r}, home={str(self.home)!r})"


__all__ = ["FluvioConfig"]
