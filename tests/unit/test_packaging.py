"""The package list in pyproject.toml must name every Python package folder of the checkout.

An editable install finds modules that a regular install leaves out, so a folder missing
from the list only shows up on a fresh machine; this test catches it everywhere.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = {"client": "rillet", "ipc": "rillet.ipc", "broker": "rillet.broker", "tools": "rillet.tools"}


def test_every_package_folder_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {}
    for folder, name in TOP.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk[".".join([name, *rel.parts])] = str(init.parent.relative_to(ROOT))
    assert set(config["packages"]) == set(on_disk)
    assert config["package-dir"] == on_disk


def test_public_names_are_pinned():
    import rillet
    assert sorted(rillet.__all__) == sorted(set(rillet.__all__))
    for name in rillet.__all__:
        assert hasattr(rillet, name), name
    for name in ["Fluvio", "FluvioAdmin", "TopicSpec", "Offset", "Record", "TopicProducerConfigBuilder",
                 "Compression", "Isolation", "DeliverySemantic", "ProduceOutput", "RecordMetadata",
                 "PartitionConsumer", "ConsumerConfig", "OffsetManagementStrategy", "FluvioError"]:
        assert name in rillet.__all__, name


def test_cli_start_up_imports_little():
    """`import rillet` and the CLI's parser load no producer, consumer or psutil: every command
    pays for what this imports, and `rillet topic list` should start in well under 0.1 s."""
    import subprocess
    import sys
    code = ("import sys, rillet, rillet.tools.cli as c; c.build_parser(); "
            "print(sorted(n for n in ('rillet._producer', 'rillet._consumer', 'rillet._admin', 'psutil', "
            "'asyncio', 'rillet.ipc.shm') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_names_resolve_and_star_import():
    import rillet
    namespace: dict = {}
    exec("from rillet import *", namespace)
    assert set(rillet.__all__) <= set(namespace)
    assert rillet.FluviorError is rillet.RilletError
    assert "Fluvio" in dir(rillet)


def test_spu_command_online_label_matches_table():
    from rillet.ipc.metadata_table import SpuStatus
    from rillet.tools.commands import spu
    assert spu.ONLINE == SpuStatus.ONLINE.label


def test_an_admin_command_does_not_import_asyncio_or_the_data_path(tmp_path):
    """`rillet topic list` runs synchronously: no asyncio, producer, consumer or shared memory."""
    import os
    import subprocess
    import sys
    code = ("import sys, rillet.tools.cli as c; c.main(['topic', 'list']); "
            "print(sorted(n for n in ('asyncio', 'rillet._producer', 'rillet._consumer', 'rillet.ipc.shm') "
            "if n in sys.modules))")
    env = {**os.environ, "RILLET_HOME": str(tmp_path), "RILLET_CLUSTER": "not-running"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "not running" in r.stderr
    assert r.stdout.strip() == "[]"


def test_the_client_never_imports_the_broker():
    """rillet (the client library) and rillet.ipc run in users' processes: they must not
    pull in the broker (rillet.broker) nor the asyncio server module (ipc/transport.py).
    Only rillet.testing, which starts clusters, and rillet.tools, the CLI, may."""
    import subprocess
    import sys
    probe = """
import importlib, pkgutil, sys
import rillet, rillet.ipc
for info in pkgutil.iter_modules(rillet.__path__):
    # an installed (not editable) rillet lists its sibling packages here too: skip those
    if info.name not in ("testing", "broker", "tools", "ipc"):
        importlib.import_module("rillet." + info.name)
for info in pkgutil.iter_modules(rillet.ipc.__path__):
    if info.name != "transport":
        importlib.import_module("rillet.ipc." + info.name)
print(" ".join(sorted(n for n in sys.modules if n.startswith(("rillet.broker", "rillet.ipc.transport")))))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == []
