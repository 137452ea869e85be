import { createHash } from 'node:crypto';

/**
 * The operator page at / on the health port: GET /clusters drawn as one row per cluster, fetched again
 * every few seconds. One static string with its style and script inline (no build step, nothing loaded
 * from elsewhere), so it works from a `kubectl port-forward` on a cluster without outside access. Data is
 * only ever put into the page as text nodes and SVG attributes, never parsed as HTML; the CSP allows
 * exactly this style and script, by hash, and requests to this origin.
 */

const STYLE = `
:root { color-scheme: light dark; --fg: #1d2329; --muted: #66707a; --bg: #fff; --line: #dde1e5; --head: #f3f5f7;
  --ok: #1e7d32; --warn: #b26a00; --bad: #c62828; --idle: #6b7580; --bar: #8aa4bf; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e3e6e9; --muted: #9aa3ad; --bg: #15191d; --line: #2c333a; --head: #1d2227;
    --ok: #4caf50; --warn: #f0a030; --bad: #ef5350; --idle: #8d96a0; --bar: #5d7894; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; justify-content: space-between; padding: 12px 16px; border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 18px; }
h1 small { font-weight: normal; color: var(--muted); font-size: 13px; }
.bar { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; color: var(--muted); }
#status.stale { color: var(--bad); font-weight: 600; }
select { font: inherit; }
main { padding: 8px 16px 24px; }
table { width: 100%; border-collapse: collapse; }
th, td { padding: 6px 8px; text-align: left; vertical-align: middle; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: var(--head); font-weight: 600; font-size: 12px; color: var(--muted); }
td.num { font-variant-numeric: tabular-nums; }
td.error { white-space: normal; min-width: 14em; }
td.error .sub { display: block; }
.name { font-weight: 600; }
.pill { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.pill.ok { background: var(--ok); } .pill.warn { background: var(--warn); } .pill.bad { background: var(--bad); } .pill.idle { background: var(--idle); }
.sub { color: var(--muted); font-size: 12px; }
.errors { color: var(--bad); font-weight: 600; }
svg.spark { vertical-align: middle; margin-right: 6px; }
svg.spark .r { fill: var(--bar); } svg.spark .e { fill: var(--bad); } svg.spark .base { fill: var(--line); }
.none { color: var(--muted); }
@media (max-width: 720px) {
  main { padding: 8px; }
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border: 1px solid var(--line); border-radius: 6px; margin-bottom: 10px; padding: 4px 0; }
  td { display: flex; justify-content: space-between; gap: 12px; border: 0; padding: 3px 10px; white-space: normal; text-align: right; }
  td::before { content: attr(data-label); color: var(--muted); text-align: left; flex: none; }
  td.name { font-size: 15px; }
  td.error { min-width: 0; }
}
`;

const SCRIPT = `
'use strict';
const REFRESH_MS = 2000;
const STATES = {
  connected: ['connected', 'ok'], unknown: ['not dialled yet', 'idle'], no_agent: ['no agent', 'bad'],
  refused: ['dial refused', 'bad'], timed_out: ['timed out', 'warn'], tls_failure: ['TLS failure', 'bad'],
  proxy_error: ['proxy-server error', 'bad'],
};
const SVG = 'http://www.w3.org/2000/svg';
const tbody = document.querySelector('#clusters tbody');
const empty = document.getElementById('empty');
const status = document.getElementById('status');
const sort = document.getElementById('sort');

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function cell(label, cls, ...children) {
  const td = el('td', cls);
  td.dataset.label = label;
  // One box for the value, so that on a narrow screen it sits opposite its label as a whole.
  const value = el('span', 'v');
  value.append(...children);
  td.append(value);
  return td;
}
function ago(iso, now) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 90) return s + 's';
  if (s < 5400) return Math.round(s / 60) + 'm';
  if (s < 172800) return Math.round(s / 3600) + 'h';
  return Math.round(s / 86400) + 'd';
}
function secs(v) {
  if (v === null) return '\\u2013';
  return v < 1 ? Math.round(v * 1000) + ' ms' : v.toFixed(2) + ' s';
}
function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}
function spark(history) {
  const w = 90, h = 18, n = history.requests.length, bw = w / n;
  const max = Math.max(1, ...history.requests);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', w);
  svg.setAttribute('height', h);
  svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
  svg.setAttribute('aria-hidden', 'true');
  const bar = (cls, i, v) => {
    if (v === 0) return;
    const bh = Math.max(1, (v / max) * h);
    const r = document.createElementNS(SVG, 'rect');
    r.setAttribute('class', cls);
    r.setAttribute('x', (i * bw).toFixed(2));
    r.setAttribute('y', (h - bh).toFixed(2));
    r.setAttribute('width', Math.max(1, bw - 1).toFixed(2));
    r.setAttribute('height', bh.toFixed(2));
    svg.append(r);
  };
  const base = document.createElementNS(SVG, 'rect');
  base.setAttribute('class', 'base');
  base.setAttribute('y', h - 1);
  base.setAttribute('width', w);
  base.setAttribute('height', 1);
  svg.append(base);
  history.requests.forEach((v, i) => bar('r', i, v));
  history.errors.forEach((v, i) => bar('e', i, v));
  return svg;
}
function row(c, now) {
  const [words, tone] = STATES[c.agent.state] || [c.agent.state, 'idle'];
  const tr = el('tr');
  tr.dataset.cluster = c.name;
  tr.dataset.state = c.agent.state;
  const agent = [el('span', 'pill ' + tone, words)];
  if (c.agent.since) agent.push(el('span', 'sub', ' for ' + ago(c.agent.since, now)));
  const err = c.lastError
    ? [el('span', '', c.lastError.text + ' '), el('span', 'sub', c.lastError.status + ' ' + c.lastError.code + ', ' + ago(c.lastError.at, now) + ' ago')]
    : [el('span', 'none', 'none')];
  const t = c.tunnels;
  tr.append(
    cell('Cluster', 'name', c.name),
    cell('Agent', 'agent', ...agent),
    cell('Requests 5m', 'num', spark(c.history), String(c.requests5m)),
    cell('Errors 5m', 'num', el('span', c.errors5m > 0 ? 'errors' : '', String(c.errors5m))),
    cell('In flight', 'num', String(c.inFlight)),
    cell('Tunnels', 'num', t.short + ' / ' + t.stream + ' / ' + t.upgrade),
    cell('Dial p50 / p99', 'num', secs(c.dialSeconds.p50) + ' / ' + secs(c.dialSeconds.p99)),
    cell('TLS p50 / p99', 'num', secs(c.tlsSeconds.p50) + ' / ' + secs(c.tlsSeconds.p99)),
    cell('Bytes up / down', 'num', bytes(c.bytes.up) + ' / ' + bytes(c.bytes.down)),
    cell('Last error', 'error', ...err),
  );
  return tr;
}
let timer;
async function refresh() {
  clearTimeout(timer);
  try {
    const res = await fetch('clusters?sort=' + encodeURIComponent(sort.value), { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const body = await res.json();
    const now = Date.parse(body.generatedAt);
    tbody.replaceChildren(...body.clusters.map((c) => row(c, now)));
    empty.hidden = body.clusters.length > 0;
    status.className = '';
    status.textContent = body.clusters.length + ' cluster' + (body.clusters.length === 1 ? '' : 's') + ', updated ' + new Date(now).toLocaleTimeString();
  } catch (e) {
    status.className = 'stale';
    status.textContent = 'cannot read /clusters (' + e.message + '); showing the last answer';
  }
  timer = setTimeout(refresh, REFRESH_MS);
}
sort.addEventListener('change', refresh);
refresh();
`;

const hash = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

export const CLUSTER_PAGE_CSP = `default-src 'none'; style-src ${hash(STYLE)}; script-src ${hash(SCRIPT)}; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

export const CLUSTER_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Clusters - cluster-proxy user-server</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>Clusters <small>as this replica sees them, last 5 minutes</small></h1>
<div class="bar">
<span id="status" role="status">loading...</span>
<label>Sort <select id="sort"><option value="errors">errors first</option><option value="name">by name</option></select></label>
</div>
</header>
<main>
<table id="clusters">
<thead><tr><th>Cluster</th><th>Agent</th><th>Requests 5m</th><th>Errors 5m</th><th>In flight</th><th>Tunnels short / stream / upgrade</th><th>Dial p50 / p99</th><th>TLS p50 / p99</th><th>Bytes up / down</th><th>Last error</th></tr></thead>
<tbody></tbody>
</table>
<p id="empty" class="none" hidden>No cluster was asked for recently.</p>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
