// niah HTML report: renders the JSON in #niah-data. Every piece of data becomes a text node or
// an attribute value (never markup), so an answer or excerpt holding <script> stays text.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("niah-data").textContent);
  const SVG_NS = "http://www.w3.org/2000/svg";
  // viridis: sequential, ordered in lightness, readable with the common colour-vision deficiencies
  const RAMP = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779",
                "#6ece58", "#b5de2b", "#fde725"];
  const cellButtons = new Map();  // "run|group|context|depth" -> button

  // ---- DOM helpers (text only) -----------------------------------------------------------
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "onclick") e.addEventListener("click", v);
      else e.setAttribute(k, String(v));
    }
  }
  function append(e, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      e.appendChild(typeof k === "object" ? k : document.createTextNode(String(k)));
    }
    return e;
  }
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    return append(e, kids);
  }
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    return append(e, kids);
  }

  // ---- formatting ------------------------------------------------------------------------
  function fmtCtx(n) {
    if (n % 1048576 === 0) return n / 1048576 + "M";
    if (n % 1024 === 0) return n / 1024 + "K";
    return String(n);
  }
  const depthLabel = (d) => Number((d * 100).toPrecision(4)) + "%";
  const pct = (x) => (x * 100).toFixed(0) + "%";
  const num = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(2));
  function fmtS(x) {
    if (x >= 100) return x.toFixed(0) + " s";
    if (x >= 10) return x.toFixed(1) + " s";
    return x.toFixed(2) + " s";
  }
  function fmtRate(x) { return x >= 100 ? Math.round(x).toLocaleString("en") : x.toFixed(1); }
  function fmtBytes(b) {
    return b >= 2 ** 30 ? (b / 2 ** 30).toFixed(2) + " GiB" : (b / 2 ** 20).toFixed(0) + " MiB";
  }
  function colour(t) {
    const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(x));
    const a = hex(RAMP[i]), b = hex(RAMP[i + 1]), f = x - i;
    return "rgb(" + a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",") + ")";
  }
  const hex = (c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
  const isNum = (x) => typeof x === "number" && isFinite(x);

  // ---- page ------------------------------------------------------------------------------
  function render() {
    const app = document.getElementById("app");
    app.append(h("h1", {}, DATA.title));
    if (DATA.compare) {
      app.append(h("p", { class: "muted" }, "Comparing " + DATA.runs.length + " runs; the " +
        "first (" + DATA.runs[0].name + ") is the baseline. Cells whose verdicts changed " +
        "against it are outlined and listed below."));
    }
    app.append(legend());
    if (DATA.compare) app.append(changesSection());
    DATA.runs.forEach((run, i) => app.append(runSection(run, i)));
  }

  function legend() {
    const ramp = h("span", { class: "ramp", role: "img",
      "aria-label": "colour ramp from dark purple (0% retrieved) to yellow (100%)" });
    ramp.style.background = "linear-gradient(to right, " + RAMP.join(", ") + ")";
    const item = (cls, label) => h("span", {}, h("span", { class: "sw " + cls, "aria-hidden": "true" }), label);
    return h("div", { class: "legend", "aria-label": "legend" },
      h("span", {}, "0% ", ramp, " 100% of needles retrieved"),
      item("skip-sw", "SKIP: not run (e.g. too little memory)"),
      item("error-sw", "ERROR: the trial failed to run"),
      h("span", {}, "NULL: empty answer (white dotted border)"),
      item("beyond", "dashed line: past the model's trained length"),
      DATA.compare ? item("changed", "changed against the baseline") : null,
      h("span", { class: "muted" }, "k/n: score over n trials; select a cell for its trials"));
  }

  function runSection(run, index) {
    const title = DATA.compare ? (index === 0 ? "Baseline: " : "Run " + index + ": ") + run.name
      : "Run: " + run.name;
    const sec = h("section", { id: "run-" + index, "aria-label": title },
      h("h2", {}, title), identity(run), summary(run));
    run.groups.forEach((group) => sec.append(groupSection(run, index, group)));
    return sec;
  }

  function identity(run) {
    const dl = h("dl", { class: "identity" });
    for (const [label, text] of run.identity) dl.append(h("dt", {}, label), h("dd", {}, text));
    return dl;
  }

  function summary(run) {
    const stat = (label, value, note) => h("div", { class: "stat" }, h("b", {}, value), label,
      note ? h("div", { class: "muted" }, note) : null);
    const t = run.totals;
    const counts = Object.keys(t).filter((v) => t[v] || v === "PASS" || v === "FAIL")
      .map((v) => t[v] + " " + v).join(", ");
    const acc = run.accuracy === null ? "-" : pct(run.accuracy);
    const ci = run.wilson ? "95% Wilson interval " + pct(run.wilson[0]) + "–" + pct(run.wilson[1]) : "";
    const eff = run.effective ? fmtCtx(run.effective) : "none";
    return h("div", { class: "summary" },
      stat("trials", String(run.trials), counts),
      stat("accuracy", acc, ci),
      stat("effective context", eff, "accuracy ≥ " + pct(run.effective_threshold) +
        " of the shortest context's"),
      stat("trial time", fmtS(run.seconds), null),
      run.trained ? stat("trained context", fmtCtx(run.trained), null) : null);
  }

  function groupSection(run, index, group) {
    const detail = h("section", { class: "detail", "aria-live": "polite",
      "aria-label": "trials of the selected cell" });
    return h("div", { class: "group" },
      h("h3", {}, "Heatmap: " + group.name),
      h("p", { class: "muted" }, "Select a cell (click it, or arrow keys and Enter) to read its " +
        "trials below." + (run.trained ? " Columns past the trained length (" + fmtCtx(run.trained) +
        ") are shaded, after a dashed line." : "")),
      heatmap(run, index, group, detail), detail, plots(group));
  }

  // ---- heatmap ---------------------------------------------------------------------------
  function byCell(trials) {
    const cells = new Map();
    for (const t of trials) {
      const key = t.context + "|" + t.depth;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(t);
    }
    return cells;
  }

  function heatmap(run, index, group, detail) {
    const cells = byCell(group.trials);
    const contexts = [...new Set(group.trials.map((t) => t.context))].sort((a, b) => a - b);
    const depths = [...new Set(group.trials.map((t) => t.depth))].sort((a, b) => a - b);
    const changed = new Set(DATA.changes.filter((c) => c.run === index && c.group === group.name)
      .map((c) => c.context + "|" + c.depth));
    // a column is past the trained length when its trials say so (context plus the answer
    // budget); records without the field fall back to the context alone
    const beyond = (c) => group.trials.some((t) => t.context === c &&
      (t.beyond_trained === undefined ? run.trained && c > run.trained : t.beyond_trained));
    const firstBeyond = contexts.find(beyond);
    const edge = (c) => (beyond(c) ? "beyond" : "") + (c === firstBeyond ? " first-beyond" : "");
    const table = h("table", { class: "heatmap" }, h("caption", {},
      "Score by needle depth (rows) and context length (columns)"));
    table.append(h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Depth \\ context"),
      contexts.map((c) => h("th", { scope: "col", class: edge(c),
        title: beyond(c) ? "past the trained length" : null }, fmtCtx(c))))));
    const body = h("tbody");
    depths.forEach((d, row) => {
      const tr = h("tr", {}, h("th", { scope: "row" }, depthLabel(d)));
      contexts.forEach((c, col) => {
        const trials = cells.get(c + "|" + d);
        const td = h("td", { class: edge(c) });
        if (!trials) td.append(h("span", { class: "empty", "aria-label": "not run" }, "–"));
        else td.append(cellButton({ run: index, group: group.name, c, d, row, col, trials,
          changed: changed.has(c + "|" + d), table, detail, runData: run }));
        tr.append(td);
      });
      body.append(tr);
    });
    table.append(body, footer(contexts, cells));
    table.addEventListener("keydown", (e) => moveFocus(table, e));
    const first = table.querySelector("button.cell");
    if (first) first.tabIndex = 0;
    return table;
  }

  function footer(contexts, cells) {
    const row = h("tr", {}, h("th", { scope: "row" }, "All depths"));
    for (const c of contexts) {
      const trials = [...cells.entries()].filter(([k]) => Number(k.split("|")[0]) === c)
        .flatMap(([, ts]) => ts).filter((t) => t.score !== null && t.score !== undefined);
      const acc = trials.length ? trials.reduce((a, t) => a + t.score, 0) / trials.length : null;
      row.append(h("td", { class: "empty" }, acc === null ? "-" : pct(acc)));
    }
    return h("tfoot", {}, row);
  }

  function cellState(trials) {
    const scored = trials.filter((t) => t.verdict !== "SKIP");
    const passed = scored.reduce((a, t) => a + (t.score || 0), 0);
    const verdicts = trials.map((t) => t.verdict);
    let cls = "", text, bg = null;
    if (!scored.length) { cls = "skip"; text = "SKIP"; }
    else if (scored.every((t) => t.verdict === "ERROR")) { cls = "error"; text = "ERROR"; }
    else {
      bg = colour(passed / scored.length);
      if (trials.length === 1) {
        text = verdicts[0] + (passed > 0 && passed < 1 ? " " + pct(passed) : "");
        if (verdicts[0] === "NULL") cls = "null";
      } else text = num(passed) + "/" + scored.length;
    }
    const flags = trials.length > 1 ? ["NULL", "ERROR", "SKIP"].filter((v) => verdicts.includes(v))
      .map((v) => v[0]).join("") : "";
    return { cls, text, bg, flags, passed, n: scored.length, verdicts,
             dark: bg !== null && passed / scored.length < 0.6 };
  }

  function cellButton(o) {
    const st = cellState(o.trials);
    const label = "Context " + fmtCtx(o.c) + ", depth " + depthLabel(o.d) + ": " +
      st.verdicts.join(", ") + (st.n ? ", score " + num(st.passed) + " of " + st.n : "") +
      (o.changed ? ", changed against the baseline" : "");
    const btn = h("button", { type: "button", class: ("cell " + st.cls + (o.changed ? " changed" : "")).trim(),
      "data-context": o.c, "data-depth": o.d, "data-row": o.row, "data-col": o.col,
      "data-verdicts": st.verdicts.join(","), "aria-label": label, "aria-pressed": "false",
      tabindex: "-1" }, st.text, st.flags ? h("span", { class: "flag", "aria-hidden": "true" }, st.flags) : null,
      o.changed ? h("span", { class: "flag", "aria-hidden": "true" }, "Δ") : null);
    if (st.bg) { btn.style.background = st.bg; btn.style.color = st.dark ? "#fff" : "#000"; }
    btn.addEventListener("click", () => select(btn, o));
    cellButtons.set([o.run, o.group, o.c, o.d].join("|"), btn);
    return btn;
  }

  function select(btn, o) {
    for (const b of o.table.querySelectorAll("button.cell")) {
      b.classList.remove("selected");
      b.setAttribute("aria-pressed", "false");
      b.tabIndex = -1;
    }
    btn.classList.add("selected");
    btn.setAttribute("aria-pressed", "true");
    btn.tabIndex = 0;
    o.detail.replaceChildren(
      h("h4", {}, "Context " + fmtCtx(o.c) + " · depth " + depthLabel(o.d) + " · " +
        o.trials.length + " trial" + (o.trials.length > 1 ? "s" : "")),
      ...o.trials.map((t) => trialView(t, o.runData)));
  }

  function moveFocus(table, e) {
    const step = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[e.key];
    const from = e.target;
    if (!step || !from.classList || !from.classList.contains("cell")) return;
    let r = Number(from.dataset.row), c = Number(from.dataset.col);
    for (let k = 0; k < 64; k++) {
      r += step[0]; c += step[1];
      const next = table.querySelector('button.cell[data-row="' + r + '"][data-col="' + c + '"]');
      if (next) { from.tabIndex = -1; next.tabIndex = 0; next.focus(); e.preventDefault(); return; }
      if (r < 0 || c < 0 || r > 512 || c > 512) return;
    }
  }

  // ---- one trial -------------------------------------------------------------------------
  function targets(t) {
    const ns = (t.needles || []).filter((n) => n.role !== "distractor");
    const values = ns.map((n) => String(n.value)).filter((v) => v !== "undefined");
    return values.length ? values : (t.value !== undefined ? [String(t.value)] : []);
  }

  function trialView(t, run) {
    const values = targets(t);
    return h("article", { class: "trial" },
      h("p", {}, h("span", { class: "badge " + t.verdict }, t.verdict),
        t.score !== null && t.score !== undefined ? "score " + pct(t.score) + " · " : "",
        "sample " + t.sample + " · value" + (values.length > 1 ? "s " : " "),
        h("code", {}, values.join(", ")),
        t.beyond_trained ? " · past the trained length" : ""),
      t.error ? h("p", { class: "absent" }, "Error: " + t.error) : null,
      h("h5", {}, "Answer"), answer(t.response, values),
      h("h5", {}, "Needles in the prompt"), needleTable(t), promptBar(t), excerpts(t, values),
      h("h5", {}, "Timing and memory"), metrics(t));
  }

  function answer(text, values) {
    if (text === undefined || text === null) return h("p", { class: "absent" }, "no answer recorded");
    const box = h("div", { class: "answer" });
    highlight(box, text, values);
    if (text.trim() === "") box.append(h("span", { class: "muted" }, "(empty answer)"));
    const lower = text.toLowerCase();
    const missing = values.filter((v) => !lower.includes(v.toLowerCase()));
    return h("div", {}, box, missing.length ? h("p", { class: "absent" },
      (missing.length > 1 ? "Values " : "Value ") + missing.join(", ") + " not in the answer") : null);
  }

  function highlight(box, text, values) {
    const lower = text.toLowerCase(), spans = [];
    for (const v of values) {
      if (!v) continue;
      for (let i = lower.indexOf(v.toLowerCase()); i >= 0; i = lower.indexOf(v.toLowerCase(), i + v.length))
        spans.push([i, i + v.length]);
    }
    spans.sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [a, b] of spans) {
      if (a < at) continue;
      box.append(text.slice(at, a), h("mark", {}, text.slice(a, b)));
      at = b;
    }
    box.append(text.slice(at));
  }

  function needleRows(t) {
    if (t.needles && t.needles.length) return t.needles;
    return [{ role: "target", value: t.value, needle_index: t.needle_index,
              needle_depth: t.needle_depth, boundary: t.needle_boundary, excerpt: t.excerpt }];
  }

  function needleTable(t) {
    const rows = needleRows(t);
    const keyed = rows.some((n) => n.key !== undefined);
    const cols = ["Role"].concat(keyed ? ["Key"] : [], ["Value", "Token", "Real depth",
      "Boundary", "In the answer"]);
    const lower = (t.response || "").toLowerCase();
    return h("table", { class: "plain" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((n) => h("tr", {},
        h("td", {}, n.role || "target"), keyed ? h("td", {}, n.key === undefined ? "" : n.key) : null,
        h("td", {}, h("code", {}, n.value === undefined ? "" : String(n.value))),
        h("td", {}, isNum(n.needle_index) ? n.needle_index + " of " + (t.context_tokens || "?") : "?"),
        h("td", {}, isNum(n.needle_depth) ? depthLabel(n.needle_depth) + " (asked " + depthLabel(t.depth) + ")" : "?"),
        h("td", {}, n.boundary || "?"),
        h("td", {}, n.found === undefined ? (lower.includes(String(n.value).toLowerCase()) ? "yes" : "no")
          : (n.found ? "yes" : "no"))))));
  }

  function promptBar(t) {
    const total = t.context_tokens || t.context, W = 600;
    const x = (i) => 6 + (W - 12) * Math.min(1, Math.max(0, i / total));
    const svg = s("svg", { viewBox: "0 0 " + W + " 40", width: W, height: 40, role: "img",
      "aria-label": "where the needles sit in the " + total + "-token prompt" });
    svg.append(s("rect", { x: 6, y: 12, width: W - 12, height: 10, fill: "#d4d4dc" }));
    if (isNum(t.reused_tokens) && t.reused_tokens > 0) {
      svg.append(s("rect", { x: 6, y: 12, width: x(t.reused_tokens) - 6, height: 10, fill: "#a9c6e8" },
        s("title", {}, t.reused_tokens + " tokens reused from the previous trial's cache")));
    }
    for (const n of needleRows(t).filter((n) => isNum(n.needle_index))) {
      const target = n.role !== "distractor";
      svg.append(s("rect", { x: x(n.needle_index) - 2, y: 6, width: 4, height: 22,
        fill: target ? "#440154" : "#35b779" },
      s("title", {}, (n.role || "target") + " " + n.value + " at token " + n.needle_index)));
    }
    svg.append(s("text", { x: 6, y: 38 }, "token 0"),
      s("text", { x: W - 6, y: 38, "text-anchor": "end" }, total + " tokens"));
    return svg;
  }

  function excerpts(t, values) {
    const withText = needleRows(t).filter((n) => typeof n.excerpt === "string");
    if (!withText.length) {
      return h("p", { class: "muted" }, "The prompt's text around the needle is not stored in " +
        "trial records; the bar above shows where each needle sat (dark: asked for, green: " +
        "distractor, blue: prefix reused).");
    }
    return h("div", {}, h("h5", {}, "Prompt text around each needle"),
      withText.map((n) => { const box = h("div", { class: "answer" }); highlight(box, n.excerpt, values); return box; }));
  }

  function metrics(t) {
    const rows = [
      ["Prompt tokens", t.context_tokens], ["Prefill", isNum(t.prefill_s) ? fmtS(t.prefill_s) : null],
      ["Prefill tok/s", isNum(t.prefill_tps) ? fmtRate(t.prefill_tps) : null],
      ["Decode", isNum(t.decode_s) ? fmtS(t.decode_s) : null],
      ["Decode tok/s", isNum(t.decode_tps) ? fmtRate(t.decode_tps) : null],
      ["Generated tokens", t.generated_tokens], ["Finish", t.finish],
      ["Trial time", isNum(t.elapsed_s) ? fmtS(t.elapsed_s) : null],
      ["Peak memory", isNum(t.peak_memory_bytes) ? fmtBytes(t.peak_memory_bytes) : null],
      ["Attention route", t.sdpa_route],
      ["Prefix reuse", t.prefix_reuse === undefined ? null : t.prefix_reuse +
        (t.reused_tokens ? " (" + t.reused_tokens + " tokens)" : "")],
    ];
    return h("dl", { class: "metrics" }, rows.filter((r) => r[1] !== null && r[1] !== undefined)
      .map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v)))));
  }

  // ---- plots -----------------------------------------------------------------------------
  const PLOTS = [
    { key: "prefill_s", label: "Prefill time", unit: "s", scale: 1 },
    { key: "decode_tps", label: "Decode speed", unit: "tokens/s", scale: 1 },
    { key: "peak_memory_bytes", label: "Peak memory", unit: "GiB", scale: 1 / 2 ** 30 },
  ];

  // Against context; against depth when the heatmap has one context only.
  const AXES = {
    context: { label: "context (tokens, log scale)", tick: fmtCtx, pos: Math.log2, name: "context" },
    depth: { label: "needle depth", tick: depthLabel, pos: (d) => d, name: "depth" },
  };

  function series(trials, p, axis) {
    const by = new Map();
    for (const t of trials) {
      if (t.verdict === "SKIP" || t.verdict === "ERROR" || !isNum(t[p.key])) continue;
      if (!by.has(t[axis])) by.set(t[axis], []);
      by.get(t[axis]).push(t[p.key] * p.scale);
    }
    return [...by.entries()].sort((a, b) => a[0] - b[0]).map(([c, v]) => {
      v.sort((a, b) => a - b);
      const m = v.length >> 1;
      return { c, min: v[0], max: v[v.length - 1], n: v.length,
               median: v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2 };
    });
  }

  function plots(group) {
    const axis = new Set(group.trials.map((t) => t.context)).size > 1 ? "context" : "depth";
    const figs = PLOTS.map((p) => plot(series(group.trials, p, axis), p, AXES[axis])).filter(Boolean);
    return figs.length ? h("div", { class: "plots" }, figs) : null;
  }

  function plot(pts, p, ax) {
    if (!pts.length) return null;
    const W = 340, H = 210, L = 56, R = 14, T = 12, B = 34;
    const top = Math.max(...pts.map((q) => q.max)) * 1.08 || 1;
    const lo = ax.pos(pts[0].c), hi = ax.pos(pts[pts.length - 1].c);
    const x = (c) => (hi === lo ? (L + W - R) / 2 : L + (W - L - R) * (ax.pos(c) - lo) / (hi - lo));
    const y = (v) => H - B - (H - T - B) * v / top;
    const label = p.label + " (" + p.unit + ") against " + ax.name;
    const svg = s("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": label },
      s("title", {}, label));
    for (let k = 0; k <= 4; k++) {
      const v = top * k / 4;
      svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e3ea" }),
        s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, v >= 100 ? v.toFixed(0) : v.toPrecision(2)));
    }
    const every = Math.ceil(pts.length / 8);  // at most 8 tick labels
    pts.forEach((q, i) => i % every ? null : svg.append(s("text", { x: x(q.c), y: H - B + 16,
      "text-anchor": "middle" }, ax.tick(q.c))));
    svg.append(s("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, ax.label));
    svg.append(s("polyline", { points: pts.map((q) => x(q.c) + "," + y(q.median)).join(" "),
      fill: "none", stroke: "#31688e", "stroke-width": 2 }));
    for (const q of pts) {
      svg.append(s("line", { x1: x(q.c), x2: x(q.c), y1: y(q.min), y2: y(q.max), stroke: "#440154", "stroke-width": 1.5 }),
        s("circle", { cx: x(q.c), cy: y(q.median), r: 3.5, fill: "#fde725", stroke: "#440154" },
          s("title", {}, ax.tick(q.c) + ": median " + q.median.toPrecision(3) + " " + p.unit + ", range " +
            q.min.toPrecision(3) + "–" + q.max.toPrecision(3) + " over " + q.n + " trials")));
    }
    return h("figure", {}, svg, h("figcaption", {}, p.label + " (" + p.unit + "): median per " +
      ax.name + ", bar from the lowest to the highest trial"));
  }

  // ---- compare ---------------------------------------------------------------------------
  function changesSection() {
    const sec = h("section", { id: "changes", "aria-label": "changed cells" }, h("h2", {}, "Changed cells"));
    if (!DATA.changes.length) {
      sec.append(h("p", {}, "No cell changed verdict against the baseline."));
      return sec;
    }
    const cols = ["Run", "Heatmap", "Context", "Depth", "Baseline", "This run", "Δ score", ""];
    sec.append(h("table", { class: "plain changes" },
      h("caption", { class: "muted" }, DATA.changes.length + " cell(s) changed against " + DATA.runs[0].name),
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, DATA.changes.map((c) => h("tr", {},
        h("td", {}, DATA.runs[c.run].name), h("td", {}, c.group), h("td", {}, fmtCtx(c.context)),
        h("td", {}, depthLabel(c.depth)), h("td", {}, c.before), h("td", {}, c.after),
        h("td", {}, (c.delta >= 0 ? "+" : "") + (c.delta * 100).toFixed(0) + "%"),
        h("td", {}, h("button", { type: "button", class: "linkish", onclick: () => show(c) }, "show")))))));
    return sec;
  }

  function show(c) {
    const btn = cellButtons.get([c.run, c.group, c.context, c.depth].join("|"));
    if (!btn) return;
    btn.click();
    btn.focus();
    btn.scrollIntoView({ block: "center" });
  }

  render();
})();
