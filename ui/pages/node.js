// The node and its cluster: every node sharing the index (GET /api/nodes), storage used and
// instances received per hour (GET /api/statistics), this node's readiness (GET /readyz),
// and a link to the Prometheus metrics. Refreshes every 10 s.

import { api } from '../api.js';
import { h, table, emptyRow, fmtTs, fmtBytes, fmtInt, fmtDuration, badge } from '../dom.js';
import { plot } from '../chart.js';

export default async function render(main, ctx) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Node and cluster'),
    h('div', { class: 'actions' }, h('a', { class: 'button secondary', href: '/metrics', target: '_blank', rel: 'noopener' }, 'Prometheus metrics (/metrics)'))));
  const stat = (name, label) => {
    const v = h('div', { class: 'value', dataset: { stat: name } }, '…');
    return [h('div', { class: 'card' }, h('div', { class: 'label' }, label), v), v];
  };
  const [readyCard, ready] = stat('ready', 'This node');
  const [storageCard, storage] = stat('storage', 'Storage used');
  const [instancesCard, instances] = stat('instances', 'Instances');
  const [studiesCard, studies] = stat('studies', 'Studies');
  const [dayCard, day] = stat('received-24h', 'Received (24 h)');
  const detail = h('div', { class: 'muted small' });
  main.append(h('div', { class: 'cards' }, readyCard, storageCard, instancesCard, studiesCard, dayCard));
  const chart = h('div', { class: 'chart', dataset: { chart: 'received' } });
  main.append(h('h2', {}, 'Instances received per hour (last 24 h)'), h('div', { class: 'panel' }, chart, detail));
  const nodes = table('nodes', ['Node', 'AE title', 'Version', 'HTTP', 'Started', 'Uptime', 'Last seen', 'Ready']);
  main.append(h('h2', {}, 'Nodes sharing the index'), h('div', { class: 'panel' }, nodes.wrap));

  let uplot = null;
  async function loadStats() {
    let s;
    try { s = await api('/api/statistics'); } catch { return; }
    if (!ctx.alive()) return;
    storage.textContent = s.storage_bytes !== undefined ? fmtBytes(s.storage_bytes) : '—';
    instances.textContent = fmtInt(s.instances);
    studies.textContent = fmtInt(s.studies);
    detail.textContent = `Index ${s.index || '?'} · storage ${s.storage || '?'}`;
    const hours = s.received_per_hour || [];
    day.textContent = fmtInt(hours.reduce((n, x) => n + (x.instances || 0), 0));
    const data = [hours.map((x) => new Date(x.hour).getTime() / 1000), hours.map((x) => x.instances)];
    if (uplot) uplot.setData(data);
    else if (hours.length) uplot = plot(chart, { data, series: [{ label: 'instances / hour' }], bars: true, height: 200 });
    else chart.textContent = 'No hourly counts.';
  }
  async function loadReady() {
    try {
      const r = await fetch('/readyz', { credentials: 'same-origin', cache: 'no-store' });
      const text = (await r.text()).trim();
      if (!ctx.alive()) return;
      ready.replaceChildren(r.ok ? h('span', { class: 'ok' }, 'Ready') : h('span', { class: 'bad', title: text }, `Not ready (HTTP ${r.status})`));
    } catch (e) {
      ready.replaceChildren(h('span', { class: 'bad' }, `Not ready: ${e.message}`));
    }
  }
  async function loadNodes() {
    let list;
    try { list = await api('/api/nodes'); } catch { return; }
    if (!ctx.alive()) return;
    nodes.tbody.replaceChildren();
    if (!list.length) emptyRow(nodes.tbody, 8, 'No node has reported.');
    for (const n of list) {
      nodes.tbody.append(h('tr', { dataset: { nodeId: n.node_id, self: String(!!n.self) } },
        h('td', { class: 'mono' }, n.node_id, n.self ? h('span', { class: 'muted' }, ' (this one)') : null),
        h('td', { class: 'mono' }, n.ae_title || ''), h('td', {}, n.version || ''), h('td', {}, n.http_address || ''),
        h('td', {}, fmtTs(n.started_at)), h('td', {}, fmtDuration(n.uptime_seconds)), h('td', {}, fmtTs(n.last_seen)),
        h('td', {}, n.ready ? badge('ready', 'ok') : badge('not ready', 'bad'))));
    }
  }
  await Promise.all([loadStats(), loadReady(), loadNodes()]);
  const timer = setInterval(() => { if (!document.hidden) { loadStats(); loadReady(); loadNodes(); } }, 10000);
  return () => clearInterval(timer);
}
