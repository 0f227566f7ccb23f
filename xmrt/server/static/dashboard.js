// XMRT dashboard: polls /dashboard/data and draws everything without external libraries.
(function () {
  "use strict";
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);
  const fmt = (v, digits) => (v === null || v === undefined ? "–" : typeof v === "number" ? v.toFixed(digits ?? 0) : String(v));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");
  let agent = new URLSearchParams(location.search).get("agent") || "eliza";

  function key() { return sessionStorage.getItem("xmrt-api-key") || new URLSearchParams(location.hash.slice(1)).get("key") || ""; }

  function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }

  function fillTable(id, rows, make) {
    const body = $(id).querySelector("tbody");
    body.textContent = "";
    rows.forEach((row) => { const tr = document.createElement("tr"); make(tr, row); body.appendChild(tr); });
    if (!rows.length) { const tr = document.createElement("tr"); cell(tr, "nothing recorded yet", "muted").colSpan = 6; body.appendChild(tr); }
  }

  function drawChart(history) {
    const svg = $("chart"), NS = "http://www.w3.org/2000/svg", W = 800, H = 220, P = 30;
    svg.textContent = "";
    const points = history.filter((p) => typeof p.decision_accuracy === "number");
    const el = (name, attrs, text) => { const e = document.createElementNS(NS, name); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text) e.textContent = text; svg.appendChild(e); return e; };
    [0, 0.5, 1].forEach((y) => {
      const yy = H - P - y * (H - 2 * P);
      el("line", { x1: P, x2: W - 10, y1: yy, y2: yy, stroke: "#d0d5dd", "stroke-dasharray": "3 3" });
      el("text", { x: 2, y: yy + 4, "font-size": 11, fill: "#7a8499" }, (y * 100) + "%");
    });
    $("chart-note").textContent = points.length ? points.length + " cycle(s); last at " + new Date(points[points.length - 1].at * 1000).toLocaleTimeString() : "no cycles with outcomes yet";
    if (!points.length) return;
    const x = (i) => P + (points.length === 1 ? (W - P - 10) / 2 : (i * (W - P - 10)) / (points.length - 1));
    const y = (v) => H - P - v * (H - 2 * P);
    const d = points.map((p, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(p.decision_accuracy).toFixed(1)).join(" ");
    el("path", { d: d, fill: "none", stroke: "#2f6feb", "stroke-width": 2, id: "accuracy-line" });
    points.forEach((p, i) => el("circle", { cx: x(i), cy: y(p.decision_accuracy), r: 3, fill: p.kind === "self_improve" ? "#9a6700" : "#2f6feb", class: "point" }));
  }

  // Accuracy (blue) and Brier score (orange) of each window of judged decisions, in the order they were made.
  function drawCurve(curve) {
    const svg = $("curve"), NS = "http://www.w3.org/2000/svg", W = 800, H = 220, P = 30;
    svg.textContent = "";
    const el = (name, attrs, text) => { const e = document.createElementNS(NS, name); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text) e.textContent = text; svg.appendChild(e); return e; };
    [0, 0.5, 1].forEach((y) => {
      const yy = H - P - y * (H - 2 * P);
      el("line", { x1: P, x2: W - 10, y1: yy, y2: yy, stroke: "#d0d5dd", "stroke-dasharray": "3 3" });
      el("text", { x: 2, y: yy + 4, "font-size": 11, fill: "#7a8499" }, String(y));
    });
    $("curve-note").textContent = curve.length ? curve.length + " window(s) of decisions; last: decisions " + curve[curve.length - 1].from + "–" + curve[curve.length - 1].to + ", accuracy " + pct(curve[curve.length - 1].accuracy) + ", Brier " + fmt(curve[curve.length - 1].brier, 3) : "no decisions with outcomes yet";
    if (!curve.length) return;
    const x = (i) => P + (curve.length === 1 ? (W - P - 10) / 2 : (i * (W - P - 10)) / (curve.length - 1));
    const y = (v) => H - P - v * (H - 2 * P);
    const line = (key, colour, id) => {
      const pts = curve.map((p, i) => [i, p[key]]).filter((q) => typeof q[1] === "number");
      if (!pts.length) return;
      el("path", { d: pts.map((q, j) => (j ? "L" : "M") + x(q[0]).toFixed(1) + " " + y(q[1]).toFixed(1)).join(" "), fill: "none", stroke: colour, "stroke-width": 2, id: id });
      pts.forEach((q) => el("circle", { cx: x(q[0]), cy: y(q[1]), r: 3, fill: colour, class: id + "-point" }));
    };
    line("accuracy", "#2f6feb", "curve-accuracy");
    line("brier", "#d4730b", "curve-brier");
  }

  function render(data) {
    $("updated").textContent = "updated " + data.timestamp;
    const r = data.redis || {};
    $("redis-state").textContent = r.connected ? "up" : "down";
    $("redis-state").className = "big " + (r.connected ? "up" : "down");
    $("redis-memory").textContent = r.used_memory_human || fmt(r.used_memory);
    $("redis-clients").textContent = fmt(r.connected_clients);
    $("redis-keys").textContent = fmt(r.keys);
    $("redis-version").textContent = r.connected ? "Redis " + r.version + " · " + (r.modules || []).join(", ") : (r.error || "");
    const kb = data.kb || {};
    $("kb-documents").textContent = fmt(kb.documents);
    $("kb-chunks").textContent = fmt(kb.chunks);
    $("kb-collections").textContent = fmt(kb.collections);
    $("kb-model").textContent = (kb.embedding_model || "") + (kb.error ? " · " + kb.error : "");
    const m = data.metrics || {};
    $("agent-accuracy").textContent = pct(m.decision_accuracy);
    $("agent-decisions").textContent = fmt(m.decisions);
    $("agent-judged").textContent = fmt(m.with_outcome);
    $("agent-recent").textContent = pct(m.recent_accuracy);
    const sel = $("agent"), names = Array.from(new Set([data.agent].concat(data.agents || [])));
    if (sel.options.length !== names.length) {
      sel.textContent = "";
      names.forEach((n) => { const o = document.createElement("option"); o.value = o.textContent = n; sel.appendChild(o); });
    }
    sel.value = data.agent;
    drawChart(data.history || []);
    drawCurve(m.learning_curve || []);
    fillTable("reliability", (m.reliability || []).filter((r) => r.n), (tr, r) => {
      cell(tr, r.bin); cell(tr, fmt(r.n)); cell(tr, fmt(r.mean_score, 2)); cell(tr, fmt(r.observed, 2));
    });
    const mix = Object.entries(((data.model || {}).mixture) || {}).filter((e) => e[1] >= 0.01).sort((a, b) => b[1] - a[1]);
    $("calibration-note").textContent = "Brier " + fmt(m.brier_score, 3) + " (last 100: " + fmt(m.recent_brier_score, 3) + ") · calibration error " + fmt(m.calibration_error, 3) + (mix.length ? " · experts: " + mix.map((e) => e[0] + " " + e[1].toFixed(2)).join(", ") : "");
    fillTable("decisions", data.decisions || [], (tr, d) => {
      cell(tr, d.id); cell(tr, d.decision, d.decision); cell(tr, fmt(d.score, 2));
      cell(tr, d.outcome ? (d.outcome.success ? "success" : "failure") : "pending");
      cell(tr, d.rationale || "", "rationale");
    });
    const nodes = Object.entries(((data.latencies || {}).nodes) || {});
    fillTable("latencies", nodes, (tr, [name, s]) => {
      cell(tr, name); cell(tr, fmt(s.count)); cell(tr, fmt(s.p50_ms, 1)); cell(tr, fmt(s.p95_ms, 1)); cell(tr, fmt(s.last_ms, 1)); cell(tr, fmt(s.errors));
    });
    fillTable("audit", data.audit || [], (tr, a) => { cell(tr, a.time); cell(tr, a.who); cell(tr, a.action); cell(tr, a.outcome); });
  }

  async function refresh() {
    try {
      const headers = key() ? { "x-api-key": key() } : {};
      const res = await fetch("/dashboard/data?agent=" + encodeURIComponent(agent), { headers: headers, cache: "no-store" });
      if (res.status === 401 || res.status === 403) {
        $("keyform").hidden = false;
        throw new Error("this server needs an API key");
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      render(await res.json());
      $("error").hidden = true;
      document.body.dataset.loaded = "true";
    } catch (err) {
      $("error").textContent = String(err.message || err);
      $("error").hidden = false;
    }
  }

  $("keyform").addEventListener("submit", (ev) => { ev.preventDefault(); sessionStorage.setItem("xmrt-api-key", $("apikey").value); $("keyform").hidden = true; refresh(); });
  $("agent").addEventListener("change", (ev) => { agent = ev.target.value; refresh(); });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
