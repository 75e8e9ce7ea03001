/**
 * The admin status page: plain HTML, one stylesheet and one small script, no
 * build step. Served by admin.ts from three routes so the page's CSP can say
 * `script-src 'self'; style-src 'self'` with no inline code at all. The script
 * polls /admin/api/status and rebuilds two tables with textContent only (no
 * innerHTML), so nothing a client could influence is ever parsed as markup.
 */

export const ADMIN_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Reflector gateway</title>
<link rel="stylesheet" href="/admin/admin.css">
<script src="/admin/admin.js" defer></script>
</head>
<body>
<header>
  <h1>Reflector gateway</h1>
  <p class="meta">
    <span id="state" class="state">loading…</span>
    <span>host key <code id="host-key">…</code></span>
    <span>updated <time id="updated">never</time></span>
  </p>
  <p id="error" class="error" hidden></p>
</header>
<main>
  <section>
    <h2>Sessions <span id="session-count" class="count">0</span></h2>
    <table id="sessions">
      <thead><tr><th>Client</th><th>Address</th><th>Since</th><th class="num">Streams</th><th class="num">Bytes in</th><th class="num">Bytes out</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="no-sessions" class="empty">No live sessions.</p>
  </section>
  <section>
    <h2>Services</h2>
    <table id="services">
      <thead><tr><th>Service</th><th class="num">Open streams</th><th class="num">Opened</th><th class="num">Failed</th><th class="num">To backend</th><th class="num">From backend</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="no-services" class="empty">No services yet.</p>
  </section>
</main>
<footer>Refreshes every 2 s. Prometheus metrics: <a href="/metrics">/metrics</a>. JSON: <a href="/admin/api/status">/admin/api/status</a>.</footer>
</body>
</html>
`;

export const ADMIN_PAGE_CSS = `:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --ok: #15803d; --warn: #b45309; --bad: #b91c1c; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; padding: 1.5rem; max-width: 72rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
.meta { display: flex; flex-wrap: wrap; gap: 1.25rem; color: var(--muted); margin: 0; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
.state { font-weight: 600; }
.state.running { color: var(--ok); }
.state.draining { color: var(--warn); }
.state.closed, .error { color: var(--bad); }
.count { color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; font-size: .85rem; color: var(--muted); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.empty { color: var(--muted); margin: .5rem 0; }
footer { margin-top: 2rem; color: var(--muted); font-size: .85rem; }
`;

export const ADMIN_PAGE_SCRIPT = `'use strict';
(function () {
  var REFRESH_MS = 2000;

  function bytes(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  }

  function ago(iso, now) {
    var s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function cell(row, text, className, title) {
    var td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    if (title) td.title = title;
    row.appendChild(td);
  }

  function fill(tableId, emptyId, items, render) {
    var body = document.querySelector('#' + tableId + ' tbody');
    var rows = items.map(function (item) {
      var tr = document.createElement('tr');
      render(tr, item);
      return tr;
    });
    body.replaceChildren.apply(body, rows);
    document.getElementById(tableId).hidden = items.length === 0;
    document.getElementById(emptyId).hidden = items.length !== 0;
  }

  function render(status) {
    var now = Date.parse(status.now);
    var state = document.getElementById('state');
    state.textContent = status.state;
    state.className = 'state ' + status.state;
    document.getElementById('host-key').textContent = status.hostKey;
    var updated = document.getElementById('updated');
    updated.textContent = new Date(now).toLocaleTimeString();
    updated.dateTime = status.now;
    document.getElementById('session-count').textContent = String(status.sessions.length);
    fill('sessions', 'no-sessions', status.sessions, function (tr, s) {
      tr.dataset.session = s.id;
      cell(tr, s.client);
      cell(tr, s.address);
      cell(tr, ago(s.since, now), '', s.since);
      cell(tr, String(s.streams), 'num');
      cell(tr, bytes(s.bytesIn), 'num', s.bytesIn + ' bytes');
      cell(tr, bytes(s.bytesOut), 'num', s.bytesOut + ' bytes');
    });
    fill('services', 'no-services', status.services, function (tr, s) {
      tr.dataset.service = s.service;
      cell(tr, s.service);
      cell(tr, String(s.openStreams), 'num');
      cell(tr, String(s.opened), 'num');
      cell(tr, String(s.failed), 'num');
      cell(tr, bytes(s.bytesToBackend), 'num', s.bytesToBackend + ' bytes');
      cell(tr, bytes(s.bytesFromBackend), 'num', s.bytesFromBackend + ' bytes');
    });
  }

  function showError(text) {
    var error = document.getElementById('error');
    error.textContent = text;
    error.hidden = text === '';
  }

  function refresh() {
    fetch('/admin/api/status', { cache: 'no-store', credentials: 'same-origin' })
      .then(function (response) {
        if (!response.ok) throw new Error('status request failed: HTTP ' + response.status);
        return response.json();
      })
      .then(function (status) { render(status); showError(''); })
      .catch(function (error) { showError(String(error.message || error)); })
      .then(function () { setTimeout(refresh, REFRESH_MS); });
  }

  refresh();
})();
`;
