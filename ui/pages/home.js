// The start page: the archive's counts and where to go from here.

import { api } from '../api.js';
import { h, fmtInt, fmtBytes } from '../dom.js';

export default async function render(main, ctx) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, `Welcome, ${ctx.identity.principal.replace(/^user:/, '')}`)));
  const cards = h('div', { class: 'cards' });
  main.append(cards);
  const links = [
    ['read', '/ui/studies', 'Studies', 'search, open, upload, send, export'],
    ['admin', '/ui/aes', 'AE titles', 'DICOM peers, C-ECHO, refused associations'],
    ['admin', '/ui/ai', 'AI', 'models, routing rules, job queue'],
    ['audit', '/ui/audit', 'Audit', 'the audit trail and its hash chain'],
    ['admin', '/ui/users', 'Users & keys', 'local users, roles, API keys'],
    ['admin', '/ui/node', 'Node', 'cluster nodes, storage, ingest rate'],
  ].filter(([p]) => ctx.can(p));
  main.append(h('div', { class: 'cards' }, links.map(([, href, title, text]) =>
    h('div', { class: 'card' }, h('a', { class: 'value', href, style: { fontSize: '1.1rem' } }, title), h('div', { class: 'muted small' }, text)))));
  if (!links.length) main.append(h('p', { class: 'muted' }, 'This identity has no console page besides this one.'));
  if (ctx.can('read')) {
    const s = await api('/api/statistics');
    if (!ctx.alive()) return;
    for (const [label, value] of [['Patients', fmtInt(s.patients)], ['Studies', fmtInt(s.studies)], ['Series', fmtInt(s.series)], ['Instances', fmtInt(s.instances)],
      ...(s.storage_bytes !== undefined ? [['Storage', fmtBytes(s.storage_bytes)]] : [])]) {
      cards.append(h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value)));
    }
  }
}
