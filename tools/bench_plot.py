"""`rillet-bench --plot FILE.svg`: throughput over time and W3's latency distribution, as SVG.

Written by hand (plain SVG 1.1 text, no plotting library): the picture is two charts of
lines, bars and labels, and a dependency for that would be larger than this module. Pure:
``render_svg`` turns figures into a string; ``write_svg`` saves it.

- Throughput: one chart per workload (each its own scale), records/s between successive
  samples of the records appended (tools/bench_watch.py), against seconds since the release.
- Latency: W3's one-way latencies as a histogram over log-spaced bins (latencies span
  decades), with p50, p99 and p999 marked.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

WIDTH, CHART_H, THROUGHPUT_H, MARGIN = 820, 220, 140, 70
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
BINS = 40


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))    # 500000.0000001 is 5e5


def rates(series: list[tuple[float, int]]) -> list[tuple[float, float]]:
    """(seconds, records/s) between successive samples, at the later sample's time."""
    out = []
    for (t0, n0), (t1, n1) in zip(series, series[1:]):
        if t1 > t0:
            out.append((t1, max(0.0, (n1 - n0) / (t1 - t0))))
    return out


def histogram(values: list[float], bins: int = BINS) -> list[tuple[float, float, int]]:
    """(low, high, count) over ``bins`` log-spaced bins from the smallest to the largest value."""
    values = [v for v in values if v > 0]
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [(lo, hi, len(values))]
    a, b = math.log10(lo), math.log10(hi)
    width = (b - a) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((math.log10(v) - a) / width))] += 1
    return [(10 ** (a + i * width), 10 ** (a + (i + 1) * width), c) for i, c in enumerate(counts)]


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _text(x, y, s, size=11, anchor="start", fill="#333") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}">{escape(str(s))}</text>'


def _axes(top: float, height: float, x_label: str, y_label: str, title: str) -> list[str]:
    left, right, bottom = MARGIN, WIDTH - 20, top + height
    return [_text(WIDTH / 2, top - 12, title, 13, "middle", "#000"),
            f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#000"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#000"/>',
            _text((left + right) / 2, bottom + 30, x_label, 11, "middle"),
            f'<text x="12" y="{top + height / 2:.1f}" font-size="11" text-anchor="middle" fill="#333" '
            f'transform="rotate(-90 12 {top + height / 2:.1f})">{escape(y_label)}</text>']


def _throughput_chart(workload: str, curve: list[tuple[float, float]], top: float, colour: str) -> list[str]:
    """One workload's records/s over time: each workload has its own scale (W1 and W3 differ 100x)."""
    peak = max(r for _, r in curve)
    out = _axes(top, THROUGHPUT_H, "seconds since the producers' release", "records/s",
                f"{workload}: throughput over time (peak {peak:,.0f} records/s)")
    t_max = max(t for t, _ in curve) or 1.0
    r_max = peak or 1.0
    left, right, bottom = MARGIN, WIDTH - 20, top + THROUGHPUT_H
    sx = lambda t: left + t / t_max * (right - left)          # noqa: E731 - local scales read best inline
    sy = lambda r: bottom - r / r_max * (THROUGHPUT_H - 8)    # noqa: E731
    step = nice_step(r_max, 3)
    for k in range(int(r_max / step) + 1):
        y = sy(k * step)
        out += [f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>',
                _text(left - 4, y + 4, f"{k * step:,.0f}", 10, "end")]
    step_t = nice_step(t_max)
    for k in range(int(t_max / step_t) + 1):
        out.append(_text(sx(k * step_t), bottom + 14, f"{k * step_t:g}", 10, "middle"))
    points = " ".join(f"{sx(t):.1f},{sy(r):.1f}" for t, r in [(0.0, curve[0][1])] + curve)
    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
    return out


def _latency_chart(latencies_us: list[float] | None, top: float) -> list[str]:
    out = _axes(top, CHART_H, "one-way latency, µs (log scale)", "records", "W3: one-way latency distribution")
    bins = histogram(latencies_us or [])
    if not bins:
        return out + [_text(WIDTH / 2, top + CHART_H / 2, "W3 was not run", 12, "middle")]
    left, right, bottom = MARGIN, WIDTH - 20, top + CHART_H
    lo, hi = math.log10(bins[0][0]), math.log10(bins[-1][1])
    span = (hi - lo) or 1.0
    sx = lambda v: left + (math.log10(v) - lo) / span * (right - left)      # noqa: E731
    c_max = max(c for _, _, c in bins)
    for low, high, count in bins:
        h = count / c_max * (CHART_H - 10)
        out.append(f'<rect x="{sx(low):.1f}" y="{bottom - h:.1f}" width="{max(0.5, sx(high) - sx(low) - 0.5):.1f}" '
                   f'height="{h:.1f}" fill="#1f77b4"/>')
    for exp in range(math.floor(lo), math.ceil(hi) + 1):
        if lo <= exp <= hi:
            out.append(_text(sx(10 ** exp), bottom + 16, f"{10 ** exp:,.0f}", 10, "middle"))
    ordered = sorted(latencies_us)
    for i, (name, q) in enumerate((("p50", 0.5), ("p99", 0.99), ("p999", 0.999))):
        v = _quantile(ordered, q)
        x = sx(max(v, bins[0][0]))
        near_right = x > right - 120           # label on the line's left, inside the chart
        out += [f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#d62728" stroke-dasharray="4 3"/>',
                _text(x - 3 if near_right else x + 3, top + 12 + 13 * i, f"{name} {v:,.0f} µs", 10,
                      "end" if near_right else "start", "#d62728")]
    out.append(_text(left - 4, top + 10, f"{c_max:,}", 10, "end"))
    return out


def render_svg(series_by_workload: dict[str, list[tuple[float, int]]], latencies_us: list[float] | None,
               title: str = "rillet-bench") -> str:
    """The whole picture: a title, a throughput chart per workload sampled, the latency chart."""
    curves = {w: rates(s) for w, s in series_by_workload.items()}
    curves = {w: c for w, c in sorted(curves.items()) if c}
    body, top = [_text(WIDTH / 2, 22, title, 15, "middle", "#000")], 40 + 30
    if not curves:
        body.append(_text(WIDTH / 2, top, "no throughput sampled", 12, "middle"))
        top += 30
    for i, (workload, curve) in enumerate(curves.items()):
        body += _throughput_chart(workload, curve, top, COLOURS[i % len(COLOURS)])
        top += THROUGHPUT_H + 70
    body += _latency_chart(latencies_us, top)
    height = int(top + CHART_H + 50)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
            f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">\n'
            f'<rect width="100%" height="100%" fill="#fff"/>\n' + "\n".join(body) + "\n</svg>\n")


def write_svg(path: str, series_by_workload: dict, latencies_us: list[float] | None, title: str = "rillet-bench") -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_svg(series_by_workload, latencies_us, title))
