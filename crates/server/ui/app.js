// Stargrid's dashboard: pages drawn from the /v1 API (the session cookie stands for the token on
// reads), kept live by the event stream (/v1/events). Data is put into the page as text nodes
// only, never as markup.
'use strict';

const view = document.getElementById('view');
const state = { route: '', arg: '', events: [], samples: {}, timer: null, drawing: false };

// h('td', {class: 'num'}, 'text', child…): an element with attributes and children.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith('data-')) el.setAttribute(k, v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svgEl(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

class Refused extends Error {
  constructor(status, body) {
    super(body && body.error ? (body.error.field ? body.error.field + ': ' : '') + body.error.reason : 'HTTP ' + status);
    this.status = status;
  }
}

async function api(path) {
  const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (r.status === 401) {
    location.href = '/ui/login?next=' + encodeURIComponent(location.hash.slice(2));
    throw new Refused(401, null);
  }
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Refused(r.status, body);
  return body;
}

const fmtTime = (unix) => unix ? new Date(unix * 1000).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : '-';
const fmtSpan = (s) => {
  if (s === null || s === undefined) return '-';
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.floor(s % 86400 / 3600) + ' h';
};
const usd = (x) => '$' + Number(x || 0).toLocaleString('en-US', { maximumFractionDigits: 0 });
const num = (x, d) => Number(x || 0).toLocaleString('en-US', { maximumFractionDigits: d || 0 });
const now = () => Math.floor(Date.now() / 1000);
// Reasons carry times as t=<Unix seconds>: shown as dates.
const reasonText = (r) => (r || '').replace(/\bt=(\d{10,})/g, (_, t) => fmtTime(Number(t)));
const stateCell = (s) => h('td', { class: 'state-' + s }, s);
const card = (label, value) => h('div', { class: 'card' }, h('b', {}, value), label);

function table(headers, rows) {
  return h('table', {},
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { class: x.endsWith('#') ? 'num' : '' }, x.replace(/#$/, ''))))),
    h('tbody', {}, rows));
}

async function pages(path, key, limit) {
  const out = [];
  let after = 0;
  while (out.length < limit) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(path + sep + 'limit=1000&after=' + after);
    out.push(...page[key]);
    if (page.next_after === null || page.next_after === undefined || page[key].length === 0) break;
    after = page.next_after;
  }
  return out;
}

// ---- pages ----

const occupancy = (c) => c.gpus === 0 ? 0 : Math.min(4, Math.ceil(4 * c.used_gpus / c.gpus));
const cellClass = (c) => c.down > 0 ? 'down' : c.draining > 0 ? 'draining' : c.cordoned > 0 ? 'cordoned' : 'occ' + occupancy(c);

async function fleetPage() {
  const o = await api('/v1/fleet/overview');
  const t = o.totals;
  const out = [h('h1', {}, 'Fleet'),
    h('div', { class: 'cards' },
      card('GPUs in use', num(t.used_gpus) + ' / ' + num(t.gpus)),
      card('NVLink domains', num(t.domains)),
      card('wholly free domains', num(t.free_domains)),
      card('nodes down', num(t.down)),
      card('nodes drained or cordoned', num(t.draining))),
    h('div', { class: 'legend' },
      ['occ0', 'occ2', 'occ4', 'draining', 'cordoned', 'down'].map((c) => h('span', {}, h('span', { class: 'cell ' + c }),
        { occ0: 'idle', occ2: 'half used', occ4: 'full', draining: 'draining', cordoned: 'cordoned', down: 'down' }[c])))];
  // Aggregate per zone, then each network group's domains as cells; a cell opens its domain.
  const zones = new Map();
  for (const g of o.groups) {
    const zone = g.path.split('/').slice(0, 3).join('/');
    if (!zones.has(zone)) zones.set(zone, []);
    zones.get(zone).push(g);
  }
  for (const [zone, groups] of zones) {
    let gpus = 0, used = 0, down = 0, domains = 0;
    for (const g of groups) for (const c of g.domains) { gpus += c.gpus; used += c.used_gpus; down += c.down; domains++; }
    const body = h('details', { class: 'zone', open: zones.size <= 8 ? '' : null },
      h('summary', {}, h('b', {}, zone), ' — ' + num(domains) + ' domains, ' + num(used) + ' / ' + num(gpus) + ' GPUs in use' + (down ? ', ' + down + ' trays down' : '')));
    for (const g of groups) {
      const cells = h('div', { class: o.totals.domains <= 200 ? 'cells big' : 'cells' });
      for (const c of g.domains) {
        const path = g.path + '/' + c.name;
        cells.appendChild(h('a', {
          class: 'cell ' + cellClass(c), href: '#/domain/' + encodeURIComponent(path), 'data-path': path,
          title: c.name + ': ' + c.used_gpus + '/' + c.gpus + ' GPUs used, ' + c.down + ' down, ' + c.draining + ' draining, ' + c.cordoned + ' cordoned',
        }));
      }
      body.appendChild(h('div', { class: 'group' }, h('div', { class: 'path' }, g.path.split('/').slice(3).join('/') || g.path), cells));
    }
    out.push(body);
  }
  if (o.cpu_zones.length) {
    out.push(h('h2', {}, 'CPU hosts'));
    out.push(table(['zone', 'hosts#', 'down#', 'drained#', 'CPU in use#'], o.cpu_zones.map((z) => h('tr', {},
      h('td', {}, z.path), h('td', { class: 'num' }, num(z.hosts)), h('td', { class: 'num' }, num(z.down)),
      h('td', { class: 'num' }, num(z.draining)),
      h('td', { class: 'num' }, (z.cpu_millis ? Math.round(100 * z.used_cpu_millis / z.cpu_millis) : 0) + ' %')))));
  }
  return out;
}

async function domainPage(path) {
  const d = await api('/v1/fleet/domain?path=' + encodeURIComponent(path));
  return [h('h1', {}, 'Domain ', d.path), h('p', {}, h('a', { href: '#/fleet' }, '← fleet')),
    table(['tray', 'state', 'GPUs free#', 'running'], d.trays.map((t) => h('tr', { 'data-node': t.name },
      h('td', {}, t.name), stateCell(t.state), h('td', { class: 'num' }, t.free_gpus + ' / ' + t.gpus),
      h('td', {}, t.work.join(', ') || '-'))))];
}

async function queuePage() {
  const jobs = await pages('/v1/jobs', 'jobs', 5000);
  const byTenant = new Map();
  for (const j of jobs) {
    const k = j.tenant;
    const row = byTenant.get(k) || { pending: 0, running: 0, gpusRunning: 0, gpusPending: 0 };
    if (j.state === 'pending') { row.pending++; row.gpusPending += j.gpus; }
    if (j.state === 'running' || j.state === 'preempting') { row.running++; row.gpusRunning += j.gpus; }
    byTenant.set(k, row);
  }
  const live = jobs.filter((j) => ['pending', 'running', 'preempting'].includes(j.state));
  return [h('h1', {}, 'Queue'),
    table(['tenant', 'running#', 'GPUs running#', 'pending#', 'GPUs pending#'], [...byTenant].map(([t, r]) => h('tr', {},
      h('td', {}, t), h('td', { class: 'num' }, r.running), h('td', { class: 'num' }, num(r.gpusRunning)),
      h('td', { class: 'num' }, r.pending), h('td', { class: 'num' }, num(r.gpusPending))))),
    h('h2', {}, 'Jobs (' + live.length + ' live, ' + (jobs.length - live.length) + ' ended)'),
    table(['id#', 'name', 'tenant', 'state', 'GPUs#', 'nodes#', 'expected start', 'reason'], jobs.map((j) => h('tr', { 'data-job': j.id },
      h('td', { class: 'num' }, h('a', { href: '#/job/' + j.id }, j.id)), h('td', {}, j.name), h('td', {}, j.tenant),
      stateCell(j.state), h('td', { class: 'num' }, j.gpus), h('td', { class: 'num' }, j.nodes.length),
      h('td', {}, j.expected_start ? fmtTime(j.expected_start) : ''), h('td', {}, reasonText(j.reason)))))];
}

async function jobPage(id) {
  if (!/^\d{1,20}$/.test(id)) throw new Error('not a job id: ' + id);
  const [j, log] = await Promise.all([api('/v1/jobs/' + id + '/why'),
    api('/v1/jobs/' + id + '/logs?rank=0&from=0').catch((e) => ({ data: '(no log: ' + e.message + ')' }))]);
  const mine = state.events.filter((e) => ['job', 'preempted', 'requeued', 'checkpointed'].includes(e.change.type) && e.change.job === j.id);
  const rows = [['state', j.state], ['tenant', j.tenant], ['GPUs', j.gpus], ['submitted', fmtTime(j.submitted_at)],
    ['since', fmtTime(j.since)], ['restarts', j.restarts], ['exit code', j.exit_code ?? '-'],
    ['expected start', j.expected_start ? fmtTime(j.expected_start) : '-'], ['reason', reasonText(j.reason) || '-'],
    ['nodes', j.nodes.join(' ') || '-']];
  return [h('h1', {}, 'Job ' + j.id + ' ', j.name), h('p', {}, h('a', { href: '#/queue' }, '← queue')),
    table(['', ''], rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: k === 'state' ? 'state-' + v : '' }, String(v))))),
    h('h2', {}, 'Events'),
    mine.length ? table(['time', 'what'], mine.map((e) => h('tr', {}, h('td', {}, fmtTime(e.at)), h('td', {}, describe(e.change)))))
      : h('p', { class: 'muted' }, 'none kept since this page opened'),
    h('h2', {}, 'Log (rank 0)'), h('pre', { class: 'log' }, log.data || '(empty)')];
}

function describe(c) {
  switch (c.type) {
    case 'job': return c.state + (c.nodes ? ' on ' + c.nodes : '') + (c.exit_code !== undefined ? ', exit code ' + c.exit_code : '');
    case 'preempted': return 'preempted' + (c.by ? ' for job ' + c.by : '') + ', stops by ' + fmtTime(c.stops_at);
    case 'requeued': return c.reason + ' (' + num(c.lost_gpu_hours, 2) + ' GPU-h lost)';
    case 'checkpointed': return 'checkpointed';
    default: return c.type;
  }
}

function sparkline(series, width, height) {
  const svg = svgEl('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}` });
  const all = series.flatMap((s) => s.values);
  const max = Math.max(1, ...all);
  const n = Math.max(2, ...series.map((s) => s.values.length));
  series.forEach((s, i) => {
    const pts = s.values.map((v, k) => `${(k / (n - 1)) * (width - 8) + 4},${height - 14 - (v / max) * (height - 22)}`).join(' ');
    svg.appendChild(svgEl('polyline', { points: pts, fill: 'none', stroke: s.color, 'stroke-width': 2 }));
    svg.appendChild(svgEl('text', { x: 6 + i * 90, y: height - 2 }, s.name));
  });
  return svg;
}

async function servicesPage() {
  const services = await api('/v1/services?limit=1000');
  const list = services.services || services;
  const t = now();
  for (const s of list) {
    const hist = state.samples[s.id] || (state.samples[s.id] = []);
    hist.push({ t, desired: s.desired, running: s.running, pending: s.pending });
    if (hist.length > 240) hist.shift();
  }
  return [h('h1', {}, 'Services'),
    table(['id#', 'name', 'tenant', 'state', 'desired#', 'running#', 'pending#', 'replicas over time', 'reason'], list.map((s) => {
      const hist = state.samples[s.id] || [];
      return h('tr', { 'data-service': s.id }, h('td', { class: 'num' }, s.id), h('td', {}, s.name), h('td', {}, s.tenant),
        stateCell(s.state), h('td', { class: 'num' }, s.desired), h('td', { class: 'num' }, s.running), h('td', { class: 'num' }, s.pending),
        h('td', {}, sparkline([{ name: 'desired', color: '#5aa9ff', values: hist.map((x) => x.desired) },
          { name: 'running', color: '#3fb27f', values: hist.map((x) => x.running) },
          { name: 'pending', color: '#e0a43a', values: hist.map((x) => x.pending) }], 280, 60)),
        h('td', {}, reasonText(s.reason)));
    })),
    h('p', { class: 'muted' }, 'Replica counts are sampled on each change while this page is open.')];
}

async function sandboxesPage() {
  const batches = await pages('/v1/sandboxes', 'batches', 5000);
  let live = 0;
  for (const b of batches) live += b.live;
  return [h('h1', {}, 'Sandboxes'), h('div', { class: 'cards' }, card('batches', num(batches.length)), card('live sandboxes', num(live))),
    table(['id#', 'name', 'tenant', 'state', 'count#', 'live#', 'ok#', 'failed#', 'lost#', 'hosts#'], batches.map((b) => h('tr', { 'data-batch': b.id },
      h('td', { class: 'num' }, b.id), h('td', {}, b.name), h('td', {}, b.tenant), stateCell(b.state),
      ['count', 'live', 'succeeded', 'failed', 'lost', 'hosts'].map((k) => h('td', { class: 'num' }, num(b[k]))))))];
}

async function tenantsPage() {
  const [tenants, usage] = await Promise.all([api('/v1/tenants'),
    api('/v1/usage?since=' + (now() - 7 * 86400)).catch(() => ({ lines: [] }))]);
  const week = new Map();
  for (const l of usage.lines) {
    const u = week.get(l.tenant) || { gpu_hours: 0, cost_usd: 0, count: 0 };
    u.gpu_hours += l.gpu_hours; u.cost_usd += l.cost_usd; u.count += l.count;
    week.set(l.tenant, u);
  }
  return [h('h1', {}, 'Tenants'),
    table(['tenant', 'cohort', 'quota GPUs#', 'GPUs in use#', 'borrowed#', 'weight#', 'fair share (dominant)#', 'GPU-h lost#', 'ended jobs, 7 d#', 'GPU-h, 7 d#', 'cost, 7 d#'], tenants.map((t) => {
      const u = week.get(t.name) || { gpu_hours: 0, cost_usd: 0, count: 0 };
      return h('tr', { 'data-tenant': t.name }, h('td', {}, t.name), h('td', {}, t.cohort || '-'),
        h('td', { class: 'num' }, t.quota_gpus === null || t.quota_gpus === undefined ? 'unlimited' : num(t.quota_gpus)), h('td', { class: 'num' }, num(t.gpus_in_use)),
        h('td', { class: 'num' }, num(t.borrowed_gpus)), h('td', { class: 'num' }, num(t.weight, 2)),
        h('td', { class: 'num' }, num(t.dominant_share, 3)), h('td', { class: 'num' }, num(t.lost_gpu_hours, 1)),
        h('td', { class: 'num' }, num(u.count)), h('td', { class: 'num' }, num(u.gpu_hours, 1)), h('td', { class: 'num' }, usd(u.cost_usd)));
    }))];
}

function burnDown(c) {
  const width = 480, height = 140;
  const svg = svgEl('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}` });
  const pace = c.pace_by_day || [];
  const max = Math.max(1.5, ...pace);
  const y = (v) => height - 16 - (v / max) * (height - 28);
  svg.appendChild(svgEl('line', { x1: 4, x2: width - 4, y1: y(1), y2: y(1), stroke: '#8a96a5', 'stroke-dasharray': '4 4' }));
  const pts = pace.map((v, k) => `${4 + (k / Math.max(1, pace.length - 1)) * (width - 8)},${y(v)}`).join(' ');
  svg.appendChild(svgEl('polyline', { points: pts, fill: 'none', stroke: '#5aa9ff', 'stroke-width': 2 }));
  svg.appendChild(svgEl('text', { x: 6, y: height - 2 }, 'spend over the straight line, by day (1 = on pace)'));
  return svg;
}

async function moneyPage() {
  let cost;
  try {
    cost = await api('/v1/cost');
  } catch (e) {
    if (e.status === 403) return [h('h1', {}, 'Money'), h('p', { class: 'muted' }, 'The spend report is for admin tokens.')];
    throw e;
  }
  const rows = (list) => table(['name', 'USD#', 'last day#'], list.map((r) => h('tr', {}, h('td', {}, r.name),
    h('td', { class: 'num' }, usd(r.usd)), h('td', { class: 'num' }, usd(r.usd_by_day[r.usd_by_day.length - 1])))));
  return [h('h1', {}, 'Money'),
    h('div', { class: 'cards' }, card('spent since ' + cost.start_date, usd(cost.total_usd)), card('idle committed capacity', usd(cost.idle_committed_usd))),
    h('h2', {}, 'By provider'), rows(cost.by_provider),
    h('h2', {}, 'By kind of capacity'), rows(cost.by_pricing),
    h('h2', {}, 'Idle committed capacity by provider'), rows(cost.idle_by_provider),
    h('h2', {}, 'Commitments'),
    cost.commitments.length ? cost.commitments.map((c) => h('div', { class: 'zone', 'data-commitment': c.provider },
      h('b', {}, c.provider + ': ' + usd(c.total_usd) + ' from ' + c.start + ' to ' + c.end),
      h('p', {}, 'spent ' + usd(c.burn_down.spent_usd) + ', straight line ' + usd(c.burn_down.straight_line_usd) +
        ', forecast ' + usd(c.burn_down.forecast_usd) + (c.burn_down.shortfall_usd > 0 ? ', shortfall ' + usd(c.burn_down.shortfall_usd) : '') +
        (c.burn_down.overrun_usd > 0 ? ', overrun ' + usd(c.burn_down.overrun_usd) : '')),
      burnDown(c))) : h('p', { class: 'muted' }, 'No commitments in this control plane\'s catalogue.')];
}

async function historyPage() {
  const page = await api('/v1/history?limit=500');
  return [h('h1', {}, 'History'), h('p', { class: 'muted' }, 'Finished, failed and cancelled work (stargrid history for filters and CSV).'),
    table(['kind', 'id#', 'name', 'tenant', 'state', 'ended', 'waited', 'GPU-h#', 'cost#', 'exit#'], page.items.map((r) => h('tr', {},
      h('td', {}, r.kind), h('td', { class: 'num' }, r.id), h('td', {}, r.name), h('td', {}, r.tenant), stateCell(r.state),
      h('td', {}, fmtTime(r.ended_at)), h('td', {}, fmtSpan(r.wait_s)), h('td', { class: 'num' }, r.gpu_hours === null ? '-' : num(r.gpu_hours, 2)),
      h('td', { class: 'num' }, r.cost_usd === null ? '-' : usd(r.cost_usd)), h('td', { class: 'num' }, r.exit_code ?? '-'))))];
}

const routes = { fleet: fleetPage, domain: domainPage, queue: queuePage, job: jobPage, services: servicesPage,
  sandboxes: sandboxesPage, tenants: tenantsPage, money: moneyPage, history: historyPage };

// ---- drawing and live updates ----

async function draw() {
  if (state.drawing) { state.again = true; return; }
  state.drawing = true;
  const started = performance.now();
  const page = routes[state.route] || fleetPage;
  try {
    const content = await page(decodeURIComponent(state.arg));
    view.replaceChildren(...content);
    document.body.dataset.view = state.route;
    document.body.dataset.renderMs = String(Math.round(performance.now() - started));
    document.body.dataset.ready = '1';
  } catch (e) {
    if (e.status !== 401) view.replaceChildren(h('h1', {}, 'Cannot show this page'), h('p', { class: 'problem' }, e.message));
    document.body.dataset.ready = '1';
  }
  state.drawing = false;
  if (state.again) { state.again = false; draw(); }
}

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  state.route = routes[name] ? name : 'fleet';
  state.arg = rest.join('/');
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.route === state.route);
  draw();
}

function live() {
  const badge = document.getElementById('live');
  const source = new EventSource('/v1/events');
  source.onopen = () => { badge.textContent = 'live'; badge.className = 'live on'; };
  source.onerror = () => { badge.textContent = 'reconnecting'; badge.className = 'live off'; };
  const onEvent = (msg) => {
    let e;
    try { e = JSON.parse(msg.data); } catch (err) { return; }
    state.events.push(e);
    if (state.events.length > 2000) state.events.shift();
    // Bursts redraw once: at most one redraw a second.
    if (!state.timer) state.timer = setTimeout(() => { state.timer = null; draw(); }, 1000);
  };
  for (const kind of ['job', 'batch', 'service', 'node', 'preempted', 'requeued', 'checkpointed', 'resync']) {
    source.addEventListener(kind, onEvent);
  }
}

window.addEventListener('hashchange', route);
route();
live();
