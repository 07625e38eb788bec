"""tools/bench_plot.py: the SVG of `rillet-bench --plot`, from figures (pure)."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from rillet.tools.bench_plot import histogram, nice_step, rates, render_svg

NS = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("span, ticks, step", [
    (1.5e6, 3, 5e5), (1e4, 3, 5e3), (7, 5, 2), (0.9, 5, 0.2), (100, 5, 20), (0, 5, 1.0),
    (1_500_000.000000002, 3, 5e5),     # float noise does not push it to the next step
])
def test_nice_step(span, ticks, step):
    assert nice_step(span, ticks) == pytest.approx(step)


def test_rates_between_samples():
    assert rates([(0.0, 0), (0.5, 100), (1.0, 100), (1.0, 150), (2.0, 50)]) == [(0.5, 200.0), (1.0, 0.0), (2.0, 0.0)]
    assert rates([]) == [] and rates([(0.0, 5)]) == []


def test_histogram_log_bins():
    bins = histogram([1, 10, 100, 1000, 0, -5], bins=3)
    assert [c for _, _, c in bins] == [1, 1, 2]           # non-positive values are left out
    assert bins[0][0] == pytest.approx(1) and bins[-1][1] == pytest.approx(1000)
    assert histogram([]) == [] and histogram([7, 7]) == [(7, 7, 2)]


def _parse(svg: str):
    root = ET.fromstring(svg.split("\n", 1)[1])            # after the XML declaration
    return root, [t.text for t in root.iter(f"{NS}text")]


def test_render_with_throughput_and_latency():
    rng = random.Random(3)
    svg = render_svg({"W1": [(0.0, 0), (0.05, 50_000), (0.1, 120_000)], "W2": [(0.0, 0), (0.1, 20_000)]},
                     [rng.lognormvariate(5, 1) for _ in range(5000)], title="a <title> & more")
    root, texts = _parse(svg)
    assert root.tag == f"{NS}svg" and "a <title> & more" in texts      # escaped in the file, whole when parsed
    assert "W1: throughput over time (peak 1,400,000 records/s)" in texts
    assert any(t.startswith("W2: throughput") for t in texts)
    assert len(list(root.iter(f"{NS}polyline"))) == 2
    assert sum(1 for r in root.iter(f"{NS}rect")) == 1 + 40               # the background and the bins
    assert [t.split()[0] for t in texts if t.split()[0] in ("p50", "p99", "p999")] == ["p50", "p99", "p999"]


def test_render_without_data_says_so():
    root, texts = _parse(render_svg({}, None))
    assert "no throughput sampled" in texts and "W3 was not run" in texts
    root, texts = _parse(render_svg({"W1": [(0.0, 0)]}, []))               # one sample: no rate to draw
    assert "no throughput sampled" in texts
