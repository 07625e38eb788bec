"""The metrics extra is optional: without prometheus_client the SC says which extra to install."""

import sys

import pytest

from rillet.broker.sc import metrics


def test_missing_prometheus_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)      # as if not installed
    with pytest.raises(ImportError) as missing:
        metrics.require_prometheus()
    assert str(missing.value) == "metrics need the prometheus_client package: pip install 'rillet[metrics]'"


def test_the_core_does_not_import_prometheus_client():
    import subprocess
    code = ("import sys, rillet, rillet.broker.sc.process, rillet.broker.spu.service, rillet.tools.cli; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
