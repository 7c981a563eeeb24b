// The live page's script (coordinator/live_page.py puts it inline in the page, after the chart geometry
// and colours of the report: W, H, L, R, T, B, PALETTE, ERRORS). Strings from the run go into the page
// through textContent only.
"use strict";
const NS = "http://www.w3.org/2000/svg";
const KEEP_EVENTS = 500;
let points = [], span = 0, events = [], eventsTotal = 0, last = null, failures = 0;

const $ = (id) => document.getElementById(id);
const put = (id, value) => { $(id).textContent = value; };
const count = (v) => v == null ? "-" : Math.round(v).toLocaleString("en");
const rate = (v) => v == null ? "-" : (Math.round(v * 10) / 10).toLocaleString("en") + "/s";
const ms = (v) => v == null ? "-" : (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : count(v)) + " ms";
function clock(s, hours) {
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, x = String(s % 60).padStart(2, "0");
  return h || hours ? h + ":" + String(m).padStart(2, "0") + ":" + x : m + ":" + x;
}

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent.appendChild(e);
  return e;
}
function label(parent, x, y, words, cls, anchor) {
  const e = el("text", {x: x, y: y, "text-anchor": anchor || "start"}, parent);
  if (cls) e.setAttribute("class", cls);
  e.textContent = words;
  return e;
}
function niceStep(range) {
  const raw = range / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
}
function yAxis(values, log) {
  const lo = H - B, hi = T;
  if (log) {
    const pos = values.filter((v) => v > 0);
    const a = Math.pow(10, Math.floor(Math.log10(Math.min(...pos))));
    let b = Math.pow(10, Math.ceil(Math.log10(Math.max(...pos))));
    if (b <= a) b = a * 10;
    const f = (v) => lo + (hi - lo) * Math.min(1, Math.max(0, Math.log10(Math.max(v, a) / a) / Math.log10(b / a)));
    const ticks = [];
    for (let v = a; v <= b * 1.0001; v *= 10) ticks.push(v);
    return {f: f, ticks: ticks, log: true};
  }
  const top = Math.max(0, ...values);
  const step = top > 0 ? niceStep(top) : 0.2, max = top > 0 ? Math.ceil(top / step - 1e-9) * step : 1;
  const ticks = [];
  for (let i = 0; i * step <= max + 1e-9; i++) ticks.push(i * step);
  return {f: (v) => lo + (hi - lo) * Math.min(1, Math.max(0, v / max)), ticks: ticks, log: false};
}
function frame(svg, hi, y, unit, drainFrom) {
  svg.replaceChildren();
  const x = (t) => L + (W - L - R) * Math.min(1, Math.max(0, t / hi));
  if (drainFrom < hi) {  // after the profile's end: partial seconds, shaded and left out of the lines
    const drain = el("g", {class: "drain"}, svg);
    el("rect", {x: x(drainFrom), y: T, width: x(hi) - x(drainFrom), height: H - T - B, fill: "#000", "fill-opacity": 0.06}, drain);
    label(drain, (x(drainFrom) + x(hi)) / 2, H - B - 6, "drain", "tick", "middle");
  }
  for (const v of y.ticks) {
    const py = y.f(v).toFixed(1);
    el("line", {class: "grid", x1: L, x2: W - R, y1: py, y2: py}, svg);
    const words = v >= 1 || v === 0 ? v.toLocaleString("en") : String(+v.toPrecision(3));
    label(svg, L - 6, +py + 4, words, "tick", "end");
  }
  const mid = (T + H - B) / 2;
  label(svg, 14, mid, unit + (y.log ? " (log)" : ""), "tick", "middle").setAttribute("transform", "rotate(-90 14 " + mid + ")");
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600].find((s) => hi / s <= 12) || 43200;
  for (let t = 0; t <= hi + 1e-9; t += step) {
    const px = x(t).toFixed(1);
    el("line", {class: "grid", x1: px, x2: px, y1: T, y2: H - B}, svg);
    label(svg, px, H - B + 16, hi <= 120 ? String(t) : clock(t, hi >= 3600), "tick", "middle");
  }
  label(svg, W - R, H - 6, "time since start (" + (hi <= 120 ? "s" : hi < 3600 ? "m:ss" : "h:mm:ss") + ")", "tick", "end");
  return x;
}
function legend(svg, series) {
  let px = L;
  for (const s of series) {
    const line = el("line", {x1: px, x2: px + 22, y1: 18, y2: 18, stroke: s.color, "stroke-width": 3}, svg);
    if (s.dashed) line.setAttribute("stroke-dasharray", "6 4");
    label(svg, px + 28, 22, s.label);
    px += 28 + 7.5 * s.label.length + 22;
  }
}
function marks(svg, x) {
  const groups = [];
  for (const e of events) {
    if (e.t == null) continue;
    const px = x(e.t), n = groups.length + 1;
    const width = (k) => 7 * String(k).length + 2;
    if (groups.length && px - groups[groups.length - 1].px < (width(n - 1) + width(n)) / 2 + 4) groups[groups.length - 1].events.push(e);
    else groups.push({px: px, events: [e]});
  }
  groups.forEach((g, i) => {
    const mark = el("g", {class: "event-mark"}, svg);
    el("title", {}, mark).textContent = g.events.map((e) => "t=" + e.t.toFixed(1) + "s " + e.text).join("; ");
    el("line", {x1: g.px, x2: g.px, y1: T, y2: H - B, stroke: "#6a1b9a", "stroke-dasharray": "3 3"}, mark);
    label(mark, g.px, T - 5, String(i + 1), "event", "middle");
  });
  return groups;
}
function lineChart(id, series, hi, drainFrom, log, unit) {
  const svg = document.querySelector("#" + id + " svg");
  const values = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v != null && isFinite(v)));
  const pos = values.filter((v) => v > 0);
  if (log === null) log = pos.length > 0 && Math.max(...pos) / Math.min(...pos) > 30;
  const y = yAxis(values, log && pos.length > 0);
  const x = frame(svg, hi, y, unit, drainFrom);
  if (!values.length) label(svg, (L + W - R) / 2, (T + H - B) / 2, "no figures yet", "empty", "middle");
  for (const s of series) {
    const runs = [[]];
    for (const [t, v] of s.points) {
      if (v == null || !isFinite(v) || (y.log && v <= 0)) { if (runs[runs.length - 1].length) runs.push([]); continue; }
      runs[runs.length - 1].push(x(t).toFixed(1) + "," + y.f(v).toFixed(1));
    }
    const d = runs.filter((r) => r.length > 1).map((r) => "M" + r.join(" L")).join(" ");
    if (d) {
      const path = el("path", {class: "series", d: d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.6, "stroke-linejoin": "round"}, svg);
      if (s.dashed) path.setAttribute("stroke-dasharray", "6 4");
      el("title", {}, path).textContent = s.label;
    }
    for (const r of runs.filter((r) => r.length === 1)) {
      const [cx, cy] = r[0].split(",");
      el("circle", {cx: cx, cy: cy, r: 2.5, fill: s.color}, svg);
    }
  }
  el("rect", {class: "frame", x: L, y: T, width: W - L - R, height: H - T - B}, svg);
  legend(svg, series);
  return marks(svg, x);
}
function errorChart(hi, drainFrom) {
  const svg = document.querySelector("#chart-errors svg");
  const totals = {};
  for (const p of points) for (const [k, n] of Object.entries(p.errors)) totals[k] = (totals[k] || 0) + n;
  const kinds = Object.keys(totals).filter((k) => totals[k] > 0).sort((a, b) => totals[b] - totals[a] || (a < b ? -1 : 1));
  const tops = points.map((p) => kinds.reduce((sum, k) => sum + (p.errors[k] || 0) / p.seconds, 0));
  const y = yAxis(tops, false);
  const x = frame(svg, hi, y, "errors/s", drainFrom);
  if (!kinds.length) label(svg, (L + W - R) / 2, (T + H - B) / 2, "no errors", "empty", "middle");
  const lows = points.map(() => 0);
  const series = kinds.map((k, i) => ({label: k, color: ERRORS[i % ERRORS.length]}));
  series.forEach((s, i) => {
    const highs = points.map((p, j) => lows[j] + (p.errors[kinds[i]] || 0) / p.seconds);
    const top = points.map((p, j) => x(p.t).toFixed(1) + "," + y.f(highs[j]).toFixed(1) + " " + x(p.t + p.seconds).toFixed(1) + "," + y.f(highs[j]).toFixed(1));
    const bottom = points.map((p, j) => x(p.t + p.seconds).toFixed(1) + "," + y.f(lows[j]).toFixed(1) + " " + x(p.t).toFixed(1) + "," + y.f(lows[j]).toFixed(1)).reverse();
    const area = el("polygon", {class: "series", fill: s.color, "fill-opacity": 0.75, stroke: s.color, "stroke-width": 0.5, points: top.concat(bottom).join(" ")}, svg);
    el("title", {}, area).textContent = s.label;
    highs.forEach((h, j) => { lows[j] = h; });
  });
  el("rect", {class: "frame", x: L, y: T, width: W - L - R, height: H - T - B}, svg);
  legend(svg, series);
  marks(svg, x);
}
function rows(id, data) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  for (const cells of data) {
    const tr = document.createElement("tr");
    for (const [words, cls] of cells) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      td.textContent = words;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  $(id).hidden = $("h-" + id).hidden = data.length === 0;
}

function draw(doc) {
  const run = doc.run;
  document.title = run.name + " - loadgen live";
  put("name", run.name);
  const state = doc.finished ? "FINISHED" : doc.closed_seconds ? "RUNNING" : "STARTING";
  put("state", state);
  $("state").className = "badge " + (doc.finished ? "neutral" : "running") + "-badge";
  put("meta", "profile " + (run.profile || "-") + " · run " + run.run_id);
  const total = run.duration_s, done = Math.min(doc.elapsed_s, total);
  const fraction = total > 0 ? Math.min(1, done / total) : 1;
  $("bar").style.width = (100 * fraction).toFixed(1) + "%";
  const st = doc.stage ? " · stage " + doc.stage.index + "/" + doc.stage.count + " " + rate(doc.stage.from) + " → " + rate(doc.stage.to) : "";
  put("clock", clock(done, total >= 3600) + " / " + clock(total, total >= 3600) + " (" + Math.round(100 * fraction) + "%)" + st + " · " + doc.closed_seconds + " s merged from every agent");
  put("v-target", rate(doc.target_rate));
  put("v-achieved", rate(doc.achieved_rate));
  for (const p of ["p50", "p90", "p99"]) {
    put("v-" + p, ms(doc[p]));
    put("l-" + p, p + ", last " + doc.window_s + " s");
  }
  put("v-ok", count(doc.ok));
  put("v-failed", count(doc.failed));
  put("v-dropped", count(doc.dropped));
  put("v-in-flight", count(doc.in_flight));
  put("v-agents", doc.agents.connected + (doc.agents.lost ? " (" + doc.agents.lost + " lost)" : "") + (doc.agents.refused ? " (" + doc.agents.refused + " refused)" : ""));
  put("v-cost", doc.cost == null ? "-" : doc.cost.toFixed(2) + (doc.budget == null ? "" : " of " + doc.budget.toFixed(2)));
  const alerts = [];
  if (doc.saturated) alerts.push("GENERATOR SATURATED in the last closed second (" + doc.saturated + "): the figures may not be the target's");
  if (doc.agents.lost) alerts.push(doc.agents.lost + " agent(s) lost");
  const failing = doc.thresholds.filter((t) => !t.passing).map((t) => t.expr);
  if (failing.length) alerts.push("threshold failing: " + failing.join("; "));
  const sat = doc.saturation;
  put("saturation", sat ? "Generator saturated: " + sat.warnings + " warning" + (sat.warnings > 1 ? "s" : "") +
    ", the last at t=" + sat.second + " s" + (sat.why ? ": " + sat.why : "") +
    ". Figures from those seconds include the generator's own delays (add agents or cores)." : "");
  $("saturation").hidden = !sat;
  const banner = $("banner");
  banner.replaceChildren(...alerts.map((a) => { const p = document.createElement("p"); p.textContent = a; return p; }));
  banner.hidden = alerts.length === 0;

  const hi = Math.max(total, doc.elapsed_s, ...points.map((p) => p.t + p.seconds), 1);
  const at = (p) => p.t + p.seconds / 2;
  const inside = (p, v) => [at(p), p.t + p.seconds <= total + 1e-9 ? v : null];
  const note = span > 1 ? " (every point covers " + span + " s)" : "";
  put("cap-rate", "Request rate, req/s" + note);
  put("cap-latency", "Latency, ms: per-second p50, p90 and p99" + (span > 1 ? " (max of each span)" : ""));
  put("cap-errors", "Errors per second, by category" + note);
  const groups = lineChart("chart-rate", [
    {label: "target", color: "#777", dashed: true, points: points.map((p) => inside(p, p.target))},
    {label: "achieved (ok + failed)", color: PALETTE[0], width: 2, points: points.map((p) => inside(p, p.achieved))},
  ], hi, total, false, "req/s");
  lineChart("chart-latency", ["p50", "p90", "p99"].map((k, i) => ({label: k, color: PALETTE[i], points: points.map((p) => inside(p, p[k]))})), hi, total, null, "ms");
  errorChart(hi, total);
  const list = $("event-list");
  list.replaceChildren();
  groups.forEach((g, i) => {
    const li = document.createElement("li");
    li.value = i + 1;
    const when = document.createElement("span");
    when.className = "tick";
    when.textContent = g.events[0].t.toFixed(1) + " s ";
    li.append(when, g.events.map((e) => e.text).join(", "));
    list.appendChild(li);
  });
  $("events").hidden = groups.length === 0;
  rows("requests", doc.requests.map((r) => [[r.name], [count(r.ok), "r"], [count(r.failed), "r"], [ms(r.p50), "r"], [ms(r.p90), "r"], [ms(r.p99), "r"]]));
  rows("errors", doc.errors.map(([k, n]) => [[k], [count(n), "r"]]));
  rows("thresholds", doc.thresholds.map((t) => [[t.expr], t.passing ? ["pass", "c pass"] : ["FAIL", "c fail"]]));
  document.body.dataset.closedSeconds = doc.closed_seconds;
}

function take(doc) {
  if (doc.reset) points = doc.points;
  else if (doc.points.length) points = points.filter((p) => p.t < doc.points[0].t).concat(doc.points);
  span = doc.span;
  events = events.concat(doc.events).slice(-KEEP_EVENTS);
  eventsTotal = doc.events_total;
  last = doc;
}

async function poll() {
  let doc;
  try {
    const since = points.length ? "&since=" + points[points.length - 1].t : "";
    const answer = await fetch("live.json?span=" + span + "&events=" + eventsTotal + since, {cache: "no-store"});
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    doc = await answer.json();
  } catch (e) {
    failures += 1;
    put("note", failures < 30 ? "No answer from loadgen (" + e.message + "); trying again." :
      "No answer from loadgen for a minute: the run is over or unreachable. Reload to try again.");
    if (failures < 30) setTimeout(poll, 2000);
    return;
  }
  failures = 0;
  take(doc);
  draw(doc);
  if (doc.finished && doc.report) { location.reload(); return; }
  if (doc.finished) { put("note", "The run has ended; these are its final figures (its report could not be made here)."); return; }
  put("note", "");
  setTimeout(poll, 1000);
}
poll();
