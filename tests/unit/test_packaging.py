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
    if info.name != "testing":
        importlib.import_module("rillet." + info.name)
for info in pkgutil.iter_modules(rillet.ipc.__path__):
    if info.name != "transport":
        importlib.import_module("rillet.ipc." + info.name)
print(" ".join(sorted(n for n in sys.modules if n.startswith(("rillet.broker", "rillet.ipc.transport")))))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == []
