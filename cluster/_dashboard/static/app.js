/* zeroserve dashboard: one page, views by URL hash, polling /api/ every 2 s.
   Plain JS and inline SVG; no framework, no build step, nothing fetched from elsewhere. */
"use strict";

const POLL_MS = 2000;
const HISTORY_S = 15 * 60;
const main = document.getElementById("main");
let timer = null;
let generation = 0;  // a view's polls stop when the hash changes
let logState = null;

function esc(v) {
  return String(v === null || v === undefined ? "" : v).replace(/[&<>"']/g,
    c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function num(v, digits) {
  if (v === null || v === undefined) return "–";
  const d = digits === undefined ? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2) : digits;
  return Number(v).toFixed(d);
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
}
function dur(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return Math.floor(s) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}
function badge(state) {
  const s = String(state || "").toUpperCase();
  const cls = ["ALIVE", "RUNNING", "HEALTHY", "TRUE"].includes(s) ? "ok"
    : ["DEAD", "UNHEALTHY", "FALSE", "DEPLOY_FAILED"].includes(s) ? "bad"
    : ["PENDING", "STARTING", "UPDATING", "DEPLOYING", "RESTARTING", "STOPPING", "DELETING"].includes(s) ? "warn" : "";
  return `<span class="badge ${cls}">${esc(state)}</span>`;
}
function link(hash, text) { return `<a href="${esc(hash)}">${esc(text)}</a>`; }
function query(params) {
  const q = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&");
  return q ? "?" + q : "";
}

async function api(path, params) {
  const resp = await fetch("api/" + path + query(params || {}), {credentials: "same-origin", cache: "no-store"});
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) throw new Error((body && body.error) || ("HTTP " + resp.status));
  return body;
}
function showError(e) {
  const el = document.getElementById("error");
  if (e) { el.textContent = "Cannot update: " + e.message; el.hidden = false; } else { el.hidden = true; }
}
function stamp() {
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

/* ---- routing --------------------------------------------------------------------- */
function parseHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, qs] = h.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = {};
  new URLSearchParams(qs || "").forEach((v, k) => { params[k] = v; });
  return {view: parts[0] || "cluster", args: parts.slice(1), params};
}
function route() {
  const r = parseHash();
  generation++;
  if (timer) { clearTimeout(timer); timer = null; }
  document.querySelectorAll("header nav a").forEach(a =>
    a.classList.toggle("active", a.dataset.view === r.view || (r.view === "deployment" && a.dataset.view === "serve")));
  const views = {cluster: clusterView, serve: serveView, deployment: deploymentView, logs: logsView};
  const view = views[r.view] || clusterView;
  main.innerHTML = '<p class="muted">Loading…</p>';
  logState = null;
  poll(view, r, generation);
}
async function poll(view, r, gen) {
  try {
    await view(r);
    showError(null);
    stamp();
  } catch (e) {
    if (gen === generation) showError(e);
  }
  if (gen === generation) timer = setTimeout(() => poll(view, r, gen), POLL_MS);
}
window.addEventListener("hashchange", route);

/* ---- cluster --------------------------------------------------------------------- */
function resCell(res, key, fmt) {
  const r = res[key];
  if (!r) return "–";
  const pct = r.total > 0 ? Math.min(100, 100 * r.used / r.total) : 0;
  return `<span class="bar"><i style="width:${pct.toFixed(0)}%"></i></span>${fmt(r.used)} / ${fmt(r.total)}`;
}
async function clusterView() {
  const d = await api("cluster");
  const g = v => Number(v).toFixed(Number.isInteger(v) ? 0 : 2);
  const rows = d.nodes.map(n => {
    const custom = Object.keys(n.resources).filter(k => !["CPU", "memory", "GPU"].includes(k))
      .map(k => `${esc(k)} ${g(n.resources[k].used)}/${g(n.resources[k].total)}`).join(", ") || "–";
    return `<tr data-node="${esc(n.ip)}"><td>${esc(n.ip)}${n.is_head ? ' <span class="badge">head</span>' : ""}</td>
      <td>${badge(n.alive ? "ALIVE" : "DEAD")}</td><td>${resCell(n.resources, "CPU", g)}</td>
      <td>${resCell(n.resources, "memory", bytes)}</td><td>${resCell(n.resources, "GPU", g)}</td>
      <td>${custom}</td><td class="num">${n.actors}</td>
      <td>${n.metrics_url ? `<a href="${esc(n.metrics_url)}">${esc(n.metrics_url)}</a>` : "–"}</td>
      <td><code>${esc(n.node_id)}</code></td></tr>`;
  }).join("");
  const states = Object.entries(d.actors_by_state).sort().map(([s, c]) => `${badge(s)} ${c}`).join(" &nbsp; ");
  const live = d.actors.filter(a => a.state !== "DEAD");
  const actorRows = live.map(a => `<tr><td><code>${esc(a.actor_id)}</code></td><td>${esc(a.class_name)}</td>
      <td>${badge(a.state)}</td><td>${esc(a.name || "–")}</td><td>${esc(a.namespace || "")}</td>
      <td>${esc(a.node_ip || "–")}</td><td class="num">${esc(a.pid || "–")}</td></tr>`).join("");
  main.innerHTML = `<h2>Cluster <span class="muted">${esc(d.head)}</span></h2>
    <div class="card"><h3>Nodes</h3><table id="nodes"><tr><th>IP</th><th>State</th><th>CPU</th><th>Memory</th>
      <th>GPU</th><th>Custom resources</th><th class="num">Actors</th><th>Metrics</th><th>Node id</th></tr>${rows}</table></div>
    <div class="card"><h3>Actors</h3><p id="actor-states">${states || "none"}</p>
      <table id="actors"><tr><th>Actor</th><th>Class</th><th>State</th><th>Name</th><th>Namespace</th><th>Node</th>
      <th class="num">PID</th></tr>${actorRows}</table></div>`;
}

/* ---- serve ----------------------------------------------------------------------- */
function replicaCounts(counts) {
  const e = Object.entries(counts || {}).filter(([, c]) => c > 0);
  return e.length ? e.map(([s, c]) => `${c} ${esc(s.toLowerCase())}`).join(", ") : "none";
}
function autoscale(a) {
  if (!a) return "–";
  return `${a.min_replicas}–${a.max_replicas}, ${a.target_ongoing_requests} in flight each`;
}
async function serveView() {
  const d = await api("serve");
  const apps = d.applications.map(app => {
    const rows = app.deployments.map(dep => `<tr data-deployment="${esc(dep.name)}">
      <td>${link(`#/deployment/${encodeURIComponent(app.name)}/${encodeURIComponent(dep.name)}`, dep.name)}</td>
      <td>${badge(dep.status)}</td><td>${esc(dep.version || "–")}</td>
      <td class="replicas">${replicaCounts(dep.replicas)}</td><td class="num">${esc(dep.target)}</td>
      <td>${autoscale(dep.autoscaling)}</td><td class="num">${num(dep.rps)}</td><td class="num">${num(dep.p50_ms)}</td>
      <td class="num">${num(dep.p99_ms)}</td><td class="num">${num(dep.errors_per_s)}</td>
      <td class="muted">${esc((dep.message || "").slice(0, 200))}</td></tr>`).join("");
    return `<div class="card" data-app="${esc(app.name)}"><h3>${esc(app.name)} ${badge(app.status)}
      <span class="muted">route ${esc(app.route_prefix || "–")}</span>
      <span class="muted import-path" title="${app.import_path ? "the application's import path (for serve.run(app): its ingress class)" : "deployed with Deployment.deploy(): no import path"}">import path <code>${esc(app.import_path || "–")}</code></span></h3>
      <table><tr><th>Deployment</th><th>Status</th><th>Version</th><th>Replicas</th><th class="num">Target</th>
      <th>Autoscaling</th><th class="num">req/s</th><th class="num">p50 ms</th><th class="num">p99 ms</th>
      <th class="num">errors/s</th><th>Message</th></tr>${rows}</table></div>`;
  }).join("");
  const proxies = d.proxies.map(p => `<tr><td>${esc(p.node_ip || "–")}</td><td>${badge(p.state)}</td>
      <td class="num">${esc(p.pid || "–")}</td><td><code>${esc(p.actor_id)}</code></td></tr>`).join("");
  main.innerHTML = `<h2>Serve</h2>${apps || '<p class="muted">No applications are deployed.</p>'}
    <div class="card"><h3>Proxies</h3><table id="proxies"><tr><th>Node</th><th>State</th><th class="num">PID</th>
    <th>Actor</th></tr>${proxies}</table></div>`;
}

/* ---- deployment ------------------------------------------------------------------ */
function chart(id, title, hist, now, series, unit) {
  const W = 600, H = 170, L = 46, R = 8, T = 8, B = 20;
  let max = 0;
  for (const p of hist) for (const s of series) if (p[s.key] !== null && p[s.key] !== undefined) max = Math.max(max, p[s.key]);
  max = max > 0 ? niceMax(max) : 1;
  // The window: the last 15 minutes, or less while the history is shorter (at least 2).
  const first = hist.length ? hist[0].t : now;
  const t1 = now, t0 = Math.max(now - HISTORY_S, Math.min(first, now - 120));
  const x = t => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = v => T + (H - T - B) * (1 - v / max);
  let paths = "";
  let count = 0;
  for (const s of series) {
    let d = "", pen = false;
    for (const p of hist) {
      const v = p[s.key];
      if (v === null || v === undefined || p.t < t0) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
      if (s === series[0]) count++;
    }
    paths += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"/>`;
  }
  let grid = "";
  for (const f of [0, 0.5, 1]) {
    grid += `<line x1="${L}" x2="${W - R}" y1="${y(max * f)}" y2="${y(max * f)}" stroke="#e5e7eb"/>` +
      `<text x="${L - 4}" y="${y(max * f) + 4}" text-anchor="end" font-size="10" fill="#6b7280">${num(max * f)}</text>`;
  }
  for (const f of [1, 2 / 3, 1 / 3, 0]) {
    const ago = (t1 - t0) * f;
    const label = f ? "-" + (ago >= 120 ? Math.round(ago / 60) + "m" : Math.round(ago) + "s") : "now";
    grid += `<text x="${x(t1 - ago)}" y="${H - 5}" text-anchor="${f === 1 ? "start" : f ? "middle" : "end"}" font-size="10" fill="#6b7280">${label}</text>`;
  }
  const legend = series.map(s => `<span><i style="background:${s.color}"></i>${esc(s.label)}</span>`).join("");
  return `<div class="card chart" id="${id}"><div class="title">${esc(title)} <span class="muted">${esc(unit)}</span></div>
    <svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" data-points="${count}">${grid}${paths}</svg>
    <div class="legend">${legend}</div></div>`;
}
function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
async function deploymentView(r) {
  const [app, name] = r.args;
  const d = await api("deployment", {app: app || "", name: name || ""});
  const rows = d.replica_list.map(x => `<tr data-replica="${esc(x.replica_id)}" data-state="${esc(x.state)}">
      <td><code>${esc(x.replica_id)}</code></td><td>${badge(x.state)}</td><td>${esc(x.node_ip || "–")}</td>
      <td class="num">${esc(x.pid || "–")}</td><td class="num">${dur(x.uptime_s)}</td><td class="num">${num(x.rps)}</td>
      <td class="num">${num(x.p50_ms)}</td><td class="num">${num(x.p99_ms)}</td><td class="num">${num(x.errors_per_s)}</td>
      <td class="num">${num(x.in_flight, 0)}</td>
      <td>${link("#/logs" + query({target: x.replica_id}), "logs")}${x.death_cause ? ` <span class="muted">${esc(x.death_cause.slice(0, 120))}</span>` : ""}</td></tr>`).join("");
  const h = d.history, now = d.time;
  main.innerHTML = `<h2>${link("#/serve", "Serve")} / ${esc(d.app)} / ${esc(d.name)} ${badge(d.status)}</h2>
    <div class="card"><dl class="kv">
      <dt>Version</dt><dd>${esc(d.version || "–")}</dd>
      <dt>Replicas</dt><dd id="replica-count">${replicaCounts(d.replicas)} (target ${esc(d.target)})</dd>
      <dt>Autoscaling</dt><dd>${autoscale(d.autoscaling)}</dd>
      <dt>Route</dt><dd>${esc(d.route_prefix || "–")}</dd>
      <dt>Message</dt><dd class="muted">${esc(d.message || "–")}</dd>
      <dt>Logs</dt><dd>${link("#/logs" + query({target: d.name}), "all replicas' logs")}</dd></dl></div>
    <div class="card"><h3>Replicas</h3><table id="replicas"><tr><th>Replica</th><th>State</th><th>Node</th>
      <th class="num">PID</th><th class="num">Uptime</th><th class="num">req/s</th><th class="num">p50 ms</th>
      <th class="num">p99 ms</th><th class="num">errors/s</th><th class="num">In flight</th><th></th></tr>${rows}</table></div>
    <div class="charts">
      ${chart("chart-rate", "Request rate", h, now, [{key: "rps", label: "requests", color: "#2563eb"}], "req/s")}
      ${chart("chart-latency", "Latency", h, now, [{key: "p50_ms", label: "p50", color: "#059669"},
                                                     {key: "p99_ms", label: "p99", color: "#d97706"}], "ms")}
      ${chart("chart-errors", "Error rate", h, now, [{key: "errors_per_s", label: "errors", color: "#dc2626"}], "errors/s")}
      ${chart("chart-replicas", "Replicas", h, now, [{key: "replicas", label: "running", color: "#7c3aed"},
                                                     {key: "target", label: "target", color: "#9ca3af"}], "")}
    </div>`;
}

/* ---- logs ------------------------------------------------------------------------ */
async function logsView(r) {
  const p = r.params;
  if (logState === null) {
    const listing = await api("logs", {target: p.target, node: p.node && !p.file ? p.node : ""});
    let node = p.node, file = p.file;
    if (!file && listing.files.length) {
      const pick = listing.files.find(f => f.name.endsWith(".log")) || listing.files[0];
      node = pick.node_ip; file = pick.name;
    }
    logState = {node, file, filter: p.filter || "", files: listing.files, offset: 0, inode: -1, partial: "",
                lines: 0};
    const options = listing.files.map(f => {
      const v = f.node_ip + "|" + f.name;
      return `<option value="${esc(v)}"${f.node_ip === node && f.name === file ? " selected" : ""}>${esc(f.node_ip)} ${esc(f.name)}${f.actor_name ? " (" + esc(f.actor_name) + ")" : ""}</option>`;
    }).join("");
    main.innerHTML = `<h2>Logs ${p.target ? '<span class="muted">' + esc(p.target) + "</span>" : ""}</h2>
      <div class="logbar"><select id="logfile">${options || "<option>no log files</option>"}</select>
        <input id="logfilter" placeholder="filter: request id or any text" size="36" value="${esc(logState.filter)}">
        <label><input id="logfollow" type="checkbox" checked> follow</label>
        <span class="muted" id="logmeta"></span></div>
      <pre class="log" id="logtext"></pre>`;
    document.getElementById("logfile").addEventListener("change", ev => {
      const [n, ...rest] = ev.target.value.split("|");
      location.hash = "#/logs" + query({target: p.target, node: n, file: rest.join("|"), filter: logState.filter});
    });
    document.getElementById("logfilter").addEventListener("change", ev => {
      location.hash = "#/logs" + query({target: p.target, node: logState.node, file: logState.file,
                                        filter: ev.target.value.trim()});
    });
    if (!file) return;
    const t = await api("logs/tail", {node, file, lines: 1000, filter: logState.filter});
    logState.offset = t.offset; logState.inode = t.inode;
    appendLog(t.text, true);
    return;
  }
  if (!logState.file || !document.getElementById("logfollow").checked) return;
  const c = await api("logs/read", {node: logState.node, file: logState.file, offset: logState.offset,
                                    inode: logState.inode});
  logState.offset = c.offset; logState.inode = c.inode;
  if (c.text) appendLog(c.text, false);
}
function appendLog(text, whole) {
  const pre = document.getElementById("logtext");
  const s = logState;
  let lines;
  if (whole) {
    lines = text.split("\n");
    if (lines.length && lines[lines.length - 1] === "") lines.pop();
  } else {
    const all = (s.partial + text).split("\n");
    s.partial = all.pop();
    lines = all;
    if (s.filter) lines = lines.filter(ln => ln.includes(s.filter));
  }
  if (!lines.length) return;
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
  pre.appendChild(document.createTextNode(lines.join("\n") + "\n"));
  s.lines += lines.length;
  document.getElementById("logmeta").textContent = s.lines + " lines" + (s.filter ? " matching" : "");
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

route();
