"""``FluvioConfig``: which cluster a client connects to.

Fluvio's FluvioConfig names an SC address taken from the current profile of
``~/.fluvio/config``. A rillet cluster is local and named, so the config names a
cluster (and the ``$RILLET_HOME`` it lives under). ``load()`` picks the cluster the
CLI would pick: ``$RILLET_CLUSTER``, else ``local``.
"""

from __future__ import annotations

import os

from rillet.ipc.names import ClusterPaths


class FluvioConfig:
    """Connection settings: a cluster name and its home directory."""

    def __init__(self, cluster: str | None = None, home: str | os.PathLike | None = None) -> None:
        paths = ClusterPaths.for_cluster(cluster, home)      # validates the name now, not at connect
        self.cluster = paths.cluster
        self.home = paths.home

    @classmethod
    def load(cls) -> "FluvioConfig":
        """The default cluster: ``$RILLET_CLUSTER``, else ``local``, under ``$RILLET_HOME``."""
        return cls()

    def paths(self) -> ClusterPaths:
        return ClusterPaths.for_cluster(self.cluster, self.home)

    def __repr__(self) -> str:
        return f"FluvioConfig(cluster={self.cluster!r}, home={str(self.home)!r})"


__all__ = ["FluvioConfig"]
