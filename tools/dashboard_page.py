"""The page `rillet dashboard` serves: one HTML document, its script and styles inline.

No CDN and no library (the machines it runs on may have no network): the script polls
``state.json`` every POLL_MS and redraws the tables, the leader-change timeline and one
SVG rate chart per partition. Data goes into the page with ``textContent`` only, never as
HTML. Element ids the browser test reads: ``leader-<topic>-<partition>`` (the leader SPU's
id), ``p-<topic>-<partition>`` (the row), ``status`` (the line at the top).
"""

POLL_MS = 300

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>rillet dashboard</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em 2em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; background: #fff; }
th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #eee; font-weight: 600; }
.off { color: #b00; font-weight: 600; } .on { color: #080; }
.changed { background: #fff3b0; transition: background 1s; }
#error { color: #b00; font-weight: 600; }
#timeline { background: #fff; border: 1px solid #ddd; }
#events { list-style: none; padding: 0; margin: .4em 0; max-height: 14em; overflow-y: auto; font-family: monospace; }
#events li.leader, #events li.isr { color: #a60; } #events li.spu { color: #06a; } #events li.sc { color: #b00; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
.chart { background: #fff; border: 1px solid #ddd; padding: .3em; }
.chart div { font-size: .9em; }
</style></head>
<body>
<h1>rillet: cluster <span id="cluster">?</span></h1>
<div id="status">loading...</div><div id="error"></div>
<h2>SPUs</h2>
<table><thead><tr><th>SPU</th><th>status</th><th>pid</th><th>leaders</th><th>replicas</th></tr></thead>
<tbody id="spus"></tbody></table>
<h2>Partitions</h2>
<table><thead><tr><th>topic</th><th>partition</th><th>leader</th><th>epoch</th><th>in-sync</th><th>status</th>
<th>HW</th><th>LEO</th><th>records/s</th><th>lag</th></tr></thead><tbody id="partitions"></tbody></table>
<h2>Consumers</h2>
<table><thead><tr><th>consumer</th><th>topic</th><th>partition</th><th>offset</th><th>lag</th></tr></thead>
<tbody id="consumers"></tbody></table>
<h2>Leader changes and SPU events (last 60 s; upper row partitions, lower row SPUs and the SC)</h2>
<svg id="timeline" width="900" height="60" viewBox="0 0 900 60"></svg>
<ul id="events"></ul>
<h2>Records/s per partition (last 60 s)</h2>
<div class="charts" id="charts"></div>
<script>
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const POLL_MS = __POLL_MS__, SPAN_MS = 60000, SVGNS = "http://www.w3.org/2000/svg";
const shown = {};     // row id -> leader shown, to flash a change
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls; return e; }
function svg(tag, attrs) { const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); return e; }
function cell(v) { return v === null || v === undefined ? "-" : Array.isArray(v) ? "[" + v.join(", ") + "]" : String(v); }
function clock(ms) { const d = new Date(ms); return d.toLocaleTimeString([], {hour12: false}) + "." +
  String(ms % 1000).padStart(3, "0"); }
function fill(id, rows, make) { const body = document.getElementById(id); body.replaceChildren(...rows.map(make)); }

function draw(s) {
  document.getElementById("cluster").textContent = s.cluster;
  document.getElementById("error").textContent = s.error ? "the SC cannot be asked: " + s.error : "";
  const online = s.spus.filter(x => x.online).length;
  const pOnline = s.partitions.filter(p => p.status === "Online").length;
  document.getElementById("status").textContent = "updated " + clock(s.wall_ms) + ": " + online + "/" +
    s.spus.length + " SPUs online, " + pOnline + "/" + s.partitions.length + " partitions online";
  fill("spus", s.spus, x => { const tr = el("tr"); tr.id = "spu-" + x.id;
    tr.append(el("td", x.id), el("td", x.status, x.online ? "on" : "off"), el("td", cell(x.pid)),
              el("td", x.leaders), el("td", x.replicas)); return tr; });
  fill("partitions", s.partitions, p => { const tr = el("tr"); const key = p.topic + "-" + p.partition;
    tr.id = "p-" + key;
    const leader = el("td", p.leader >= 0 ? String(p.leader) : "none"); leader.id = "leader-" + key;
    if (shown[key] !== undefined && shown[key] !== p.leader) leader.className = "changed";
    shown[key] = p.leader;
    tr.append(el("td", p.topic), el("td", p.partition), leader, el("td", p.leader_epoch), el("td", cell(p.in_sync)),
              el("td", p.status, p.status === "Online" ? "on" : "off"), el("td", p.hw), el("td", p.leo),
              el("td", cell(p.rate)), el("td", cell(p.lag))); return tr; });
  fill("consumers", s.consumers, c => { const tr = el("tr");
    tr.append(el("td", c.consumer), el("td", c.topic), el("td", c.partition), el("td", c.offset), el("td", cell(c.lag)));
    return tr; });
  drawTimeline(s); drawEvents(s); drawCharts(s);
}

function drawTimeline(s) {
  const box = document.getElementById("timeline"), w = 900, h = 60, t0 = s.wall_ms - SPAN_MS;
  const parts = [svg("line", {x1: 0, y1: 30, x2: w, y2: 30, stroke: "#999"})];
  for (let k = 0; k <= 6; k++) { const x = k * w / 6;
    const t = svg("text", {x: Math.min(x + 2, w - 30), y: 56, "font-size": 10, fill: "#666"});
    t.textContent = (k === 6 ? "now" : "-" + (60 - k * 10) + "s"); parts.push(t); }
  for (const e of s.events) {
    if (e.wall_ms < t0) continue;
    const partition = e.kind === "leader" || e.kind === "isr" || e.kind === "status";
    const colour = partition ? "#d80" : e.kind === "spu" ? "#06a" : "#b00";
    const x = (e.wall_ms - t0) / SPAN_MS * w;
    const mark = svg("circle", {cx: x, cy: partition ? 20 : 38, r: e.kind === "leader" ? 6 : 4, fill: colour});
    const title = svg("title", {}); title.textContent = clock(e.wall_ms) + " " + e.text; mark.append(title);
    parts.push(mark);
  }
  box.replaceChildren(...parts);
}

function drawEvents(s) {
  const list = s.events.slice().reverse().map(e => el("li", clock(e.wall_ms) + "  " + e.text, e.kind));
  document.getElementById("events").replaceChildren(...list);
}

function drawCharts(s) {
  const w = 260, h = 80, t0 = s.wall_ms - SPAN_MS, charts = [];
  for (const p of s.partitions.slice(0, s.partitions.length - (s.charts_left_out || 0))) {
    const key = p.topic + "/" + p.partition, points = (s.history[key] || []).filter(q => q[0] >= t0);
    const top = Math.max(1, ...points.map(q => q[1]));
    const box = el("div", undefined, "chart"); box.id = "chart-" + p.topic + "-" + p.partition;
    box.append(el("div", key + ": " + cell(p.rate) + " records/s (max " + Math.round(top).toLocaleString() + ")"));
    const chart = svg("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h});
    chart.append(svg("rect", {x: 0, y: 0, width: w, height: h, fill: "#f6f6f6"}));
    if (points.length > 1) chart.append(svg("polyline", {fill: "none", stroke: "#06a", "stroke-width": 1.5,
      points: points.map(q => ((q[0] - t0) / SPAN_MS * w).toFixed(1) + "," + (h - 2 - q[1] / top * (h - 4)).toFixed(1)).join(" ")}));
    for (const e of s.events) if (e.kind === "leader" && e.topic === p.topic && e.partition === p.partition && e.wall_ms >= t0) {
      const x = (e.wall_ms - t0) / SPAN_MS * w; chart.append(svg("line", {x1: x, y1: 0, x2: x, y2: h, stroke: "#d80"})); }
    box.append(chart); charts.push(box);
  }
  if (s.charts_left_out) charts.push(el("div", "(" + s.charts_left_out + " more partitions not charted)"));
  document.getElementById("charts").replaceChildren(...charts);
}

async function poll() {
  try {
    const r = await fetch("state.json?token=" + encodeURIComponent(TOKEN), {cache: "no-store"});
    if (r.ok) draw(await r.json());
    else document.getElementById("error").textContent = "the dashboard answered " + r.status;
  } catch (err) {
    document.getElementById("error").textContent = "the dashboard is not reachable (stopped?)";
  }
  setTimeout(poll, POLL_MS);
}
poll();
</script>
</body></html>
""".replace("__POLL_MS__", str(POLL_MS))
