// A grouped bar chart in plain SVG, built with DOM calls (no library, no HTML strings):
// one group of bars per category (a day), one bar per series. It is drawn at the width of
// its container (and its CSS height) and drawn again when the width changes, so its text
// stays legible on a phone.
// The SVG is an image with a text summary; the page shows the same numbers in a table.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// A step of 1, 2 or 5 × 10^k giving about `ticks` gridlines up to `max` (counts: at least 1).
export function niceStep(max, ticks = 4) {
  const raw = Math.max(max / ticks, 1);
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

const observed = new WeakMap();

// Draws `chart` = {categories: [label], series: [{key, label, values: [number]}], summary}
// into `container` (its children replaced), and again whenever the container is resized.
export function renderBarChart(container, chart) {
  let old = observed.get(container);
  if (!old) {
    old = { chart, width: 0, observer: new ResizeObserver(() => draw(container)) };
    observed.set(container, old);
    old.observer.observe(container);
  }
  old.chart = chart;
  old.width = 0;
  draw(container);
}

function draw(container) {
  const state = observed.get(container);
  const width = Math.max(Math.floor(container.clientWidth), 240);
  if (width === state.width) return;
  state.width = width;
  const { categories, series, summary } = state.chart;
  // the container's CSS gives the height: drawing never resizes what is observed
  const height = Math.max(Math.floor(container.clientHeight), 160);
  const pad = { left: 40, right: 8, top: 12, bottom: 30 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const max = Math.max(0, ...series.flatMap((s) => s.values));
  const step = niceStep(max);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "bar-chart" },
    svg("title", {}, summary));
  const grid = svg("g", { class: "grid" });
  for (let v = 0; v <= top; v += step) {
    grid.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }),
      svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, v));
  }
  root.append(grid);

  const n = Math.max(categories.length, 1);
  const groupW = plotW / n;
  const barW = Math.max(1, Math.min(18, (groupW * 0.8) / series.length));
  const labelEvery = Math.ceil(46 / groupW);  // labels at least ~46 px apart
  const bars = svg("g", { class: "bars" });
  const labels = svg("g", { class: "labels" });
  categories.forEach((category, i) => {
    const x0 = pad.left + i * groupW + (groupW - barW * series.length) / 2;
    series.forEach((s, j) => {
      const v = s.values[i];
      const h = Math.max(y(0) - y(v), v > 0 ? 1 : 0);
      bars.append(svg("rect", { x: x0 + j * barW, y: y(0) - h, width: Math.max(barW - 1, 1), height: h,
        class: `s-${s.key}` }, svg("title", {}, `${category}: ${v} ${s.label.toLowerCase()}`)));
    });
    if (i % labelEvery === 0) {
      labels.append(svg("text", { x: pad.left + (i + 0.5) * groupW, y: height - pad.bottom + 16,
        "text-anchor": "middle" }, category));
    }
  });
  root.append(bars, labels,
    svg("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0) }));
  container.replaceChildren(root);
}
