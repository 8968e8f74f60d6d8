// The audit trail (GET /api/audit, newest first, paged with limit and offset) and the check
// of its hash chain (POST /api/audit/verify). A row opens the record's DICOM audit message
// (PS3.15 A.5).

import { api, post, qs } from '../api.js';
import { h, table, emptyRow, fmtTs, badge, field } from '../dom.js';

const PAGE = 50;
const EVENTS = ['application-activity', 'user-authentication', 'query', 'instances-accessed', 'begin-transferring',
  'instances-transferred', 'export', 'security-alert'];
const OUTCOMES = [['', 'any'], ['0', '0 success'], ['4', '4 minor failure'], ['8', '8 serious failure'], ['12', '12 major failure']];
const OUTCOME_TEXT = { 0: 'success', 4: 'minor failure', 8: 'serious failure', 12: 'major failure' };
const FIELDS = ['from', 'to', 'user', 'ae', 'patient', 'study', 'event', 'outcome'];

/** datetime-local (local time, no zone) → RFC 3339 in UTC. */
function rfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

export default async function render(main, ctx) {
  const q = ctx.query;
  const offset = Math.max(0, parseInt(q.get('offset') || '0', 10) || 0);
  const input = (name, label, type = 'text') => field(label, h('input', { name, type, value: q.get(name) || '' }));
  const form = h('form', { class: 'search', dataset: { form: 'audit-search' } },
    input('from', 'From', 'datetime-local'), input('to', 'To', 'datetime-local'), input('user', 'User (user:NAME, key:NAME)'),
    input('ae', 'AE title'), input('patient', 'Patient ID'), input('study', 'Study Instance UID'),
    field('Event', h('select', { name: 'event' }, h('option', { value: '' }, 'any'), EVENTS.map((e) => h('option', { value: e, selected: q.get('event') === e }, e)))),
    field('Outcome', h('select', { name: 'outcome' }, OUTCOMES.map(([v, t]) => h('option', { value: v, selected: (q.get('outcome') || '') === v }, t)))),
    h('button', { type: 'submit' }, 'Search'),
    h('button', { type: 'button', class: 'secondary', onclick: () => ctx.navigate('/ui/audit') }, 'Clear'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = {};
    for (const f of FIELDS) p[f] = form.elements[f].value.trim();
    ctx.navigate(`/ui/audit${qs(p)}`);
  });
  const verify = h('button', { class: 'secondary', dataset: { action: 'verify' } }, 'Verify the chain');
  const verifyResult = h('span', { dataset: { result: 'verify' }, class: 'small' });
  verify.addEventListener('click', async () => {
    verify.disabled = true;
    verifyResult.className = 'small muted';
    verifyResult.textContent = 'Verifying…';
    try {
      const r = await post('/api/audit/verify');
      if (r.ok) {
        verifyResult.className = 'small ok';
        verifyResult.textContent = `Chain intact: ${r.records} record(s) verified.`;
      } else {
        verifyResult.className = 'small bad';
        const bad = r.first_bad || {};
        verifyResult.textContent = `Chain broken at record ${bad.id ?? '?'}: ${bad.reason || 'mismatch'} (${r.records} record(s) checked).`;
      }
    } catch (e) {
      verifyResult.className = 'small bad';
      verifyResult.textContent = `Verification failed: ${e.message}`;
    } finally {
      verify.disabled = false;
    }
  });
  const t = table('audit', ['#', 'Time', 'Event', 'Outcome', 'User', 'AE', 'Address', 'Patient', 'Studies']);
  const info = h('span', { dataset: { role: 'page-info' } });
  const go = (o) => {
    const p = Object.fromEntries(FIELDS.map((f) => [f, q.get(f) || '']));
    ctx.navigate(`/ui/audit${qs({ ...p, offset: o || '' })}`);
  };
  const prev = h('button', { class: 'secondary', dataset: { action: 'prev-page' }, disabled: offset === 0, onclick: () => go(Math.max(0, offset - PAGE)) }, '‹ Previous');
  const next = h('button', { class: 'secondary', dataset: { action: 'next-page' }, disabled: true, onclick: () => go(offset + PAGE) }, 'Next ›');
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Audit trail'), h('div', { class: 'actions' }, verifyResult, verify)),
    h('div', { class: 'panel' }, form),
    h('div', { class: 'panel' }, t.wrap, h('div', { class: 'pager' }, info, prev, next)));
  emptyRow(t.tbody, 9, 'Searching…');

  const params = {
    from: rfc3339(q.get('from')), to: rfc3339(q.get('to')), user: q.get('user'), ae: q.get('ae'), patient: q.get('patient'),
    study: q.get('study'), event: q.get('event'), outcome: q.get('outcome'), limit: PAGE + 1, offset: offset || '',
  };
  let r;
  try {
    r = await api(`/api/audit${qs(params)}`);
  } catch {
    t.tbody.replaceChildren();
    emptyRow(t.tbody, 9, 'The search failed.');
    return;
  }
  if (!ctx.alive()) return;
  let rows = r.records || [];
  const more = rows.length > PAGE;
  rows = rows.slice(0, PAGE);
  t.tbody.replaceChildren();
  if (!rows.length) emptyRow(t.tbody, 9, offset ? 'No more records.' : 'No record matches.');
  for (const rec of rows) {
    const outcome = Number(rec.outcome);
    const tr = h('tr', { class: 'clickable', dataset: { auditId: String(rec.seq), eventType: rec.event } },
      h('td', {}, String(rec.seq)), h('td', {}, fmtTs(rec.time_ms || rec.time)), h('td', {}, rec.event),
      h('td', {}, badge(OUTCOME_TEXT[outcome] || String(outcome), outcome === 0 ? 'ok' : 'bad')), h('td', {}, rec.user || ''), h('td', { class: 'mono' }, rec.ae || ''),
      h('td', {}, rec.address || ''),
      h('td', {}, rec.patient_id ? h('a', { href: `/ui/patients/${encodeURIComponent(rec.patient_id)}` }, rec.patient_id) : ''),
      h('td', { class: 'small' }, (rec.study_uids || []).map((u) => h('div', {}, h('a', { href: `/ui/studies/${encodeURIComponent(u)}`, class: 'mono' }, u)))));
    tr.addEventListener('click', (e) => {
      if (e.target.closest('a')) return;
      const open = tr.nextElementSibling && tr.nextElementSibling.classList.contains('detail');
      if (open) tr.nextElementSibling.remove();
      else tr.after(h('tr', { class: 'detail' }, h('td', { colspan: 9 }, h('pre', {}, rec.xml || ''), h('div', { class: 'muted small mono' }, `hash ${rec.hash || ''}`))));
    });
    t.tbody.append(tr);
  }
  info.textContent = rows.length ? `${offset + 1}–${offset + rows.length}` : '';
  next.disabled = !more;
}
