"""A real local cluster for tests: SC and SPU processes in a temporary directory.

    from rillet.testing import LocalCluster

    with LocalCluster(spus=1) as cluster:
        cluster.create_topic("events", partitions=3)
        fluvio = cluster.fluvio()

Or as a pytest fixture: add ``pytest_plugins = ["rillet.testing"]`` to a
conftest.py and ask for ``rillet_cluster``. Teardown stops the cluster and checks
that no process, socket or shared-memory object of it is left; it runs on test
failure and on Ctrl-C too.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

from rillet.broker import launcher
from rillet.ipc.names import ClusterPaths


# Every cluster made in this process, so a test session can check that none left anything behind.
CREATED: list["LocalCluster"] = []


class LocalCluster:
    def __init__(self, spus: int = 1, *, home: str | os.PathLike | None = None, name: str | None = None,
                 metrics_port: int | None = None) -> None:
        self._own_home = home is None
        self.home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="rillet-test-"))
        self.name = name or f"t{uuid.uuid4().hex[:10]}"
        self.spus = spus
        self.metrics_port = metrics_port       # 0: serve metrics on a free port (see metrics_url)
        self.paths = ClusterPaths.for_cluster(self.name, self.home)
        self._clients: list = []
        self._killed: dict[int, int] = {}      # SPU id -> the pid kill_spu signalled (start_spu waits it out)
        CREATED.append(self)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess (the CLI, a producer script) to reach this cluster."""
        return {**os.environ, "RILLET_HOME": str(self.home), "RILLET_CLUSTER": self.name}

    def start(self, timeout_s: float = 30.0) -> "LocalCluster":
        launcher.start_cluster(self.paths, self.spus, timeout_s=timeout_s, metrics_port=self.metrics_port)
        return self

    @property
    def metrics_url(self) -> str:
        """``http://127.0.0.1:PORT/metrics`` while the cluster serves metrics, else ""."""
        return launcher.cluster_status(self.paths).metrics_url

    def stop(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:
                pass
        self._clients.clear()
        launcher.stop_cluster(self.paths)

    def restart(self) -> None:
        self.stop()
        self.start()

    def fluvio(self):
        from rillet import Fluvio
        client = Fluvio.connect(self.name, home=str(self.home))
        self._clients.append(client)
        return client

    def admin(self):
        from rillet import FluvioAdmin
        client = FluvioAdmin.connect(self.name, home=str(self.home))
        self._clients.append(client)
        return client

    def create_topic(self, name: str, partitions: int = 1, replication: int = 1, **spec) -> None:
        from rillet import TopicSpec
        topic = TopicSpec.create().with_partitions(partitions).with_replications(replication)
        for key, value in spec.items():
            topic = getattr(topic, f"with_{key}")(value)
        with self.admin() as admin:
            admin.create_topic(name, topic)

    def spu_pid(self, spu_id: int) -> int:
        with self.admin() as admin:
            for spu in admin.list_spus():
                if spu.id == spu_id:
                    return spu.pid
        raise KeyError(spu_id)

    def kill_spu(self, spu_id: int, sig: int = signal.SIGKILL) -> int:
        pid = self.spu_pid(spu_id)
        if pid <= 0:
            # The SC lists no process for an SPU it counts offline: os.kill(0, ...) would
            # signal the caller's own process group (a test run killed itself so).
            raise RuntimeError(f"SPU {spu_id} has no process to signal (the SC lists it offline)")
        os.kill(pid, sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP):
            self._killed[spu_id] = pid
        return pid

    def start_spu(self, spu_id: int, timeout_s: float = 30.0) -> int:
        """Start a killed SPU and return its new pid once the SC lists it Online under it
        (the SC's answer alone may come while it still counts the dead process online).
        An SPU alive and Online is left alone (its pid). Timeout after ``timeout_s``."""
        from rillet.broker.spu_start import start_spu
        # The pid kill_spu signalled may not have died yet (a loaded machine): wait it out, or
        # the SPU would look alive and Online and nothing would be started.
        info, _already = start_spu(self.paths, spu_id, timeout_s, old_pid=self._killed.pop(spu_id, None))
        return info.pid

    def leftovers(self) -> list[str]:
        """What of this cluster still exists: processes, sockets, shm (empty when clean)."""
        found = [f"process {p.pid}" for p in launcher.cluster_processes(self.paths)]
        if Path("/dev/shm" + self.paths.shm_name).exists():
            found.append(f"shm {self.paths.shm_name}")
        from rillet.ipc.positions_shm import positions_objects
        found += [f"shm {name}" for name in positions_objects(self.paths.positions_shm_prefix)]
        if self.paths.runtime_dir.exists():
            found += [f"socket {p}" for p in self.paths.runtime_dir.iterdir()]
        return found

    def __enter__(self) -> "LocalCluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._own_home:
                shutil.rmtree(self.home, ignore_errors=True)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is a test extra
    pytest = None

if pytest is not None:
    @pytest.fixture
    def rillet_cluster(tmp_path):
        """A started one-SPU cluster in ``tmp_path``; stopped and checked for leftovers after the test."""
        cluster = LocalCluster(spus=1, home=tmp_path / "rillet")
        with cluster:
            yield cluster
        left = cluster.leftovers()
        assert not left, f"cluster left behind: {left}"
