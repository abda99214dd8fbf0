// SurgUn web extension.
//
// * A live chart on each SurgUn node, drawn from the `surgun.chart` events the server sends while
//   the node runs (surgun_comfy/events.py): SurgUn Train's total loss and its three terms per step, with
//   the steps where the ascent guard holds shaded; Block Localizer's erase/retain bars per probed
//   block; Erase/Retain Compare's erase and retain scores. The points are kept in the node's
//   properties (`surgun_chart`), so they arrive while the node is collapsed, are drawn when it is
//   expanded, and come back with the workflow after a reload of the page.
// * The node's text result (training summary, distractor preview, chosen blocks) in a read-only box.
//
// Widgets added here are display only: `options.serialize === false` keeps them out of the prompt
// (and so out of ComfyUI's cache key) and out of the workflow's widget values.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const EXTENSION = "SurgUn.Charts";
const EVENT = "surgun.chart";
const CHART_WIDGET = "surgun_chart";
const TEXT_WIDGET = "surgun_result";
const PROPERTY = "surgun_chart";
const MAX_POINTS = 2000;
const CHART_HEIGHT = 190;
const TEXT_HEIGHT = 80;

const CHARTED = { SurgUnTrain: "train", SurgUnBlockLocalizer: "localize", SurgUnEraseRetainCompare: "compare" };
const SHOWS_TEXT = new Set(["SurgUnTrain", "SurgUnDistractorBuilder", "SurgUnBlockLocalizer", "SurgUnEraseRetainCompare",
                            "SurgUnRecoveryCheck"]);

const COLORS = { loss: "#e8e8e8", target: "#e05a5a", distractor: "#e0a040", retain: "#5a8ee0", guard: "rgba(160,160,160,0.22)" };

function displayOnly(widget) {
  widget.serialize = false;
  widget.options = widget.options ?? {};
  widget.options.serialize = false;
  return widget;
}

// ---------------------------------------------------------------- data kept in node.properties

function emptyChart(kind, promptId) {
  return { kind, prompt_id: promptId ?? null, total: null, points: [], done: null, updated: Date.now() };
}

function addPoint(node, kind, promptId, point, reset) {
  node.properties = node.properties ?? {};
  let chart = node.properties[PROPERTY];
  if (reset || !chart || chart.kind !== kind || (promptId && chart.prompt_id && chart.prompt_id !== promptId)) {
    chart = emptyChart(kind, promptId);
  }
  if (point) {
    chart.points.push(point);
    if (chart.points.length > MAX_POINTS) chart.points.splice(0, chart.points.length - MAX_POINTS);
  }
  chart.updated = Date.now();
  node.properties[PROPERTY] = chart;
  return chart;
}

function onChartEvent(detail) {
  if (!detail || detail.node == null) return;
  // the server names the node by its id in the prompt: a node of the root graph (nodes inside subgraphs are not charted)
  const graph = app.rootGraph ?? app.graph;
  const node = graph?.getNodeById?.(detail.node) ?? graph?.getNodeById?.(Number(detail.node));
  if (!node) return;
  const { kind, point, prompt_id: promptId } = detail;
  let chart;
  switch (kind) {
    case "train_start":
      chart = addPoint(node, "train", promptId, null, true);
      chart.total = point?.total ?? null;
      break;
    case "train_step":
      chart = addPoint(node, "train", promptId, point, false);
      break;
    case "localize_start":
      chart = addPoint(node, "localize", promptId, null, true);
      chart.total = point?.total ?? null;
      break;
    case "localize_block": {
      // a block comes twice when it is eligible: with its erase, then with its retain too
      chart = addPoint(node, "localize", promptId, null, false);
      const at = chart.points.findIndex((p) => p.block === point?.block);
      if (at >= 0) chart.points[at] = point;
      else chart.points.push(point);
      chart.total = point?.n ?? chart.total;
      break;
    }
    case "localize_done":
      chart = addPoint(node, "localize", promptId, null, false);
      chart.done = point;
      break;
    case "compare":
      chart = addPoint(node, "compare", promptId, null, true);
      chart.done = point;
      break;
    default:
      return;
  }
  ensureChartWidget(node);
  scheduleDraw(node);
}

// ---------------------------------------------------------------- the chart widget

function ensureChartWidget(node) {
  let widget = node.widgets?.find((w) => w.name === CHART_WIDGET);
  if (widget) return widget;
  if (typeof node.addDOMWidget !== "function") return null;
  const canvas = document.createElement("canvas");
  canvas.className = "surgun-chart";
  canvas.style.width = "100%";
  canvas.style.height = `${CHART_HEIGHT}px`;
  canvas.style.display = "block";
  widget = node.addDOMWidget(CHART_WIDGET, "surgun_chart", canvas, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => CHART_HEIGHT,
    getMaxHeight: () => CHART_HEIGHT,
    getValue: () => undefined,
    setValue: () => {},
  });
  displayOnly(widget);
  widget.surgunCanvas = canvas;
  const size = node.computeSize?.();
  if (size && node.size && node.size[1] < size[1]) node.setSize?.([Math.max(node.size[0], size[0]), size[1]]);
  node.setDirtyCanvas?.(true, true);
  return widget;
}

const pending = new Set();
function scheduleDraw(node) {
  pending.add(node);
  requestAnimationFrame(() => {
    for (const n of pending) drawChart(n);
    pending.clear();
    // the points live in node properties: tell the workflow's change tracker, so they are persisted
    app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
  });
}

function drawChart(node) {
  const widget = node.widgets?.find((w) => w.name === CHART_WIDGET);
  const canvas = widget?.surgunCanvas;
  const chart = node.properties?.[PROPERTY] ?? emptyChart(CHARTED[node.comfyClass ?? node.type] ?? "train", null);
  if (!canvas) return;
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(200, canvas.clientWidth || (node.size?.[0] ?? 300) - 20);
  const h = CHART_HEIGHT;
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, w, h);
  ctx.font = "11px sans-serif";
  canvas.dataset.kind = chart.kind;
  canvas.dataset.points = String(chart.points.length);
  if (!chart.points.length && !chart.done) {
    ctx.fillStyle = "#888";
    ctx.fillText("SurgUn: the chart fills in while this node runs", 8, 18);
  } else if (chart.kind === "train") drawTrain(ctx, w, h, chart);
  else if (chart.kind === "localize") drawLocalize(ctx, w, h, chart);
  else if (chart.kind === "compare") drawCompare(ctx, w, h, chart);
}

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function drawTrain(ctx, w, h, chart) {
  const pts = chart.points;
  const keys = ["loss", "target", "distractor", "retain"].filter((k) => pts.some((p) => finite(p[k])));
  const left = 40, right = 8, top = 26, bottom = 18;
  const pw = w - left - right, ph = h - top - bottom;
  const total = Math.max(chart.total ?? 0, pts.length ? pts[pts.length - 1].step : 1, 1);
  let lo = Infinity, hi = -Infinity;
  for (const p of pts) for (const k of keys) if (finite(p[k])) { lo = Math.min(lo, p[k]); hi = Math.max(hi, p[k]); }
  if (!finite(lo)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const x = (step) => left + (pw * (step - 1)) / Math.max(1, total - 1);
  const y = (v) => top + ph - (ph * (v - lo)) / (hi - lo);
  // steps where the ascent guard holds (target loss at its cap: no ascent)
  ctx.fillStyle = COLORS.guard;
  const bw = Math.max(1, pw / Math.max(1, total));
  let guarded = 0;
  for (const p of pts) if (p.ascent_active === 0) { guarded++; ctx.fillRect(x(p.step) - bw / 2, top, bw, ph); }
  ctx.strokeStyle = "#555";
  ctx.strokeRect(left, top, pw, ph);
  ctx.fillStyle = "#aaa";
  ctx.fillText(hi.toPrecision(3), 2, top + 8);
  ctx.fillText(lo.toPrecision(3), 2, top + ph);
  ctx.fillText(`step ${pts.length ? pts[pts.length - 1].step : 0}/${chart.total ?? "?"}`, left, h - 4);
  if (guarded) ctx.fillText(`guard held ${guarded} step${guarded > 1 ? "s" : ""} (grey)`, left + pw / 2, h - 4);
  for (const k of keys) {
    ctx.strokeStyle = COLORS[k];
    ctx.lineWidth = k === "loss" ? 2 : 1.2;
    ctx.beginPath();
    let started = false;
    for (const p of pts) {
      if (!finite(p[k])) continue;
      if (!started) { ctx.moveTo(x(p.step), y(p[k])); started = true; } else ctx.lineTo(x(p.step), y(p[k]));
    }
    if (pts.length === 1 && started) ctx.arc(x(pts[0].step), y(pts[0][k]), 2, 0, 2 * Math.PI);
    ctx.stroke();
  }
  let lx = left;
  const last = pts[pts.length - 1] ?? {};
  for (const k of keys) {
    ctx.fillStyle = COLORS[k];
    const label = `${k} ${finite(last[k]) ? last[k].toFixed(4) : "-"}`;
    ctx.fillText(label, lx, 14);
    lx += ctx.measureText(label).width + 12;
  }
}

function drawLocalize(ctx, w, h, chart) {
  const rows = chart.points;
  const done = chart.done ?? {};
  const chosen = new Set(done.chosen ?? []);
  const top = 22, rowH = Math.max(6, Math.min(16, (h - top - 6) / Math.max(1, rows.length)));
  const half = (w - 16) / 2;
  const eMax = Math.max(1e-6, ...rows.map((r) => Math.abs(r.erase ?? 0)), Math.abs(done.erase_threshold ?? 0));
  ctx.fillStyle = COLORS.target;
  ctx.fillText(`erase (${rows.length}/${chart.total ?? "?"} blocks)`, 4, 14);
  ctx.fillStyle = COLORS.retain;
  ctx.fillText("retain", 8 + half, 14);
  rows.forEach((r, i) => {
    const y0 = top + i * rowH;
    const on = chosen.has(r.block);
    ctx.fillStyle = on ? COLORS.target : "rgba(224,90,90,0.45)";
    ctx.fillRect(4, y0, (half - 8) * Math.max(0, r.erase ?? 0) / eMax, rowH - 2);
    ctx.fillStyle = on ? COLORS.retain : "rgba(90,142,224,0.45)";
    ctx.fillRect(8 + half, y0, (half - 8) * Math.min(1, Math.max(0, r.retain ?? 0)), rowH - 2);
  });
  if (finite(done.erase_threshold)) {
    const tx = 4 + (half - 8) * Math.max(0, done.erase_threshold) / eMax;
    ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.moveTo(tx, top - 2); ctx.lineTo(tx, h - 4); ctx.stroke();
  }
  if (chosen.size) {
    ctx.fillStyle = "#ccc";
    const label = `kept ${chosen.size} (bright)`;
    ctx.fillText(label, w - 6 - ctx.measureText(label).width, 14);
  }
}

function drawCompare(ctx, w, h, chart) {
  const s = chart.done ?? {};
  ctx.font = "14px sans-serif";
  ctx.fillStyle = COLORS.target;
  ctx.fillText(`erase ${finite(s.erase) ? s.erase.toFixed(3) : "-"}  (away ${finite(s.away) ? s.away.toFixed(3) : "-"}, toward ${finite(s.toward) ? s.toward.toFixed(3) : "-"})`, 6, 20);
  ctx.fillStyle = COLORS.retain;
  ctx.fillText(`retain ${finite(s.retain) ? s.retain.toFixed(3) : "-"}`, 6, 40);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#999";
  ctx.fillText("erase (UA-like): the target's images moved away, 0 = unchanged", 6, 58);
  ctx.fillText("retain (IRA-like): the other prompts' images kept, 1 = unchanged", 6, 72);
  const per = Object.entries(s.retain_prompts ?? {});
  const rowH = Math.max(8, Math.min(18, (h - 82) / Math.max(1, per.length)));
  per.forEach(([prompt, v], i) => {
    const y0 = 80 + i * rowH;
    const barX = Math.round(w * 0.55);
    ctx.fillStyle = "rgba(90,142,224,0.8)";
    ctx.fillRect(barX, y0, (w - barX - 50) * Math.min(1, Math.max(0, v ?? 0)), rowH - 3);
    ctx.fillStyle = "#ddd";
    const room = Math.max(8, Math.floor((barX - 12) / 6));
    ctx.fillText(prompt.length > room ? prompt.slice(0, room - 1) + "…" : prompt, 6, y0 + rowH - 5);
    ctx.fillText(finite(v) ? v.toFixed(3) : "-", w - 44, y0 + rowH - 5);
  });
}

// ---------------------------------------------------------------- the text result box

function ensureTextWidget(node) {
  let widget = node.widgets?.find((w) => w.name === TEXT_WIDGET);
  if (!widget) {
    const el = document.createElement("textarea");
    el.readOnly = true;
    el.className = "comfy-multiline-input surgun-result";
    el.style.opacity = "0.8";
    el.style.fontSize = "11px";
    widget = node.addDOMWidget?.(TEXT_WIDGET, "surgun_text", el, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => TEXT_HEIGHT,
      getMaxHeight: () => TEXT_HEIGHT,
      getValue: () => el.value,
      setValue: (v) => { el.value = v ?? ""; },
    });
    if (!widget) return null;
    displayOnly(widget);
    widget.surgunText = el;
  }
  return widget;
}

function showText(node, lines) {
  const widget = ensureTextWidget(node);
  if (!widget) return;
  widget.surgunText.value = Array.isArray(lines) ? lines.join("\n") : String(lines ?? "");
  node.setDirtyCanvas?.(true, true);
}

// ---------------------------------------------------------------- registration

app.registerExtension({
  name: EXTENSION,
  async setup() {
    api.addEventListener(EVENT, ({ detail }) => onChartEvent(detail));
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (SHOWS_TEXT.has(nodeData.name) || CHARTED[nodeData.name]) {
      // the display widgets exist from the start, so the node's size (and a saved layout) already has room for them
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        if (CHARTED[nodeData.name]) {
          ensureChartWidget(this);
          scheduleDraw(this);
        }
        if (SHOWS_TEXT.has(nodeData.name)) ensureTextWidget(this);
        return r;
      };
    }
    if (SHOWS_TEXT.has(nodeData.name)) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        if (message?.text) showText(this, message.text);
      };
    }
    if (CHARTED[nodeData.name]) {
      // a node loaded with a workflow (or restored after a reload) brings its last chart back
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const r = onConfigure?.apply(this, arguments);
        if (this.properties?.[PROPERTY]?.points) {
          ensureChartWidget(this);
          scheduleDraw(this);
        }
        return r;
      };
      const onResize = nodeType.prototype.onResize;
      nodeType.prototype.onResize = function () {
        const r = onResize?.apply(this, arguments);
        if (this.properties?.[PROPERTY]) scheduleDraw(this);
        return r;
      };
      const collapse = nodeType.prototype.collapse;
      nodeType.prototype.collapse = function () {
        const r = collapse?.apply(this, arguments);
        if (!this.flags?.collapsed && this.properties?.[PROPERTY]) scheduleDraw(this);
        return r;
      };
    }
  },
});
