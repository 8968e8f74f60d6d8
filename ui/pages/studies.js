// The study list, like OHIF's: QIDO-RS /studies with the search fields, 25 a page (limit and
// offset; one more is asked for to know whether a next page exists). The search lives in the
// page's URL so that back and reload keep it.

import { api, qs } from '../api.js';
import { h, table, emptyRow, dv, fmtDate, fmtTime, badge, fmtInt } from '../dom.js';
import { uploadWidget } from '../upload.js';

const PAGE = 25;
const FIELDS = ['PatientName', 'PatientID', 'StudyDateFrom', 'StudyDateTo', 'ModalitiesInStudy', 'AccessionNumber'];
// Study Description, Number of Study Related Series/Instances are not default return keys
const INCLUDE = ['00081030', '00201206', '00201208', '00080090'].join(',');

/** QIDO-RS parameters for a search; a name without wildcards matches as a prefix. */
export function qidoParams(q) {
  const p = {};
  const name = (q.get('PatientName') || '').trim();
  if (name) p.PatientName = /[*?]/.test(name) ? name : `${name}*`;
  const id = (q.get('PatientID') || '').trim();
  if (id) p.PatientID = id;
  const from = (q.get('StudyDateFrom') || '').replaceAll('-', '');
  const to = (q.get('StudyDateTo') || '').replaceAll('-', '');
  if (from || to) p.StudyDate = from === to ? from : `${from}-${to}`;
  const mod = (q.get('ModalitiesInStudy') || '').trim().toUpperCase();
  if (mod) p.ModalitiesInStudy = mod;
  const acc = (q.get('AccessionNumber') || '').trim();
  if (acc) p.AccessionNumber = acc;
  return p;
}

export default async function render(main, ctx) {
  const q = ctx.query;
  const offset = Math.max(0, parseInt(q.get('offset') || '0', 10) || 0);
  const input = (name, type = 'text', placeholder = '') => h('div', { class: 'field' },
    h('label', { for: `s-${name}` }, label(name)),
    h('input', { id: `s-${name}`, name, type, placeholder, value: q.get(name) || '' }));
  const form = h('form', { class: 'search', dataset: { form: 'study-search' } },
    input('PatientName', 'text', 'DOE^J'), input('PatientID'), input('StudyDateFrom', 'date'), input('StudyDateTo', 'date'),
    input('ModalitiesInStudy', 'text', 'CT'), input('AccessionNumber'),
    h('button', { type: 'submit' }, 'Search'),
    h('button', { type: 'button', class: 'secondary', onclick: () => ctx.navigate('/ui/studies') }, 'Clear'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = {};
    for (const f of FIELDS) p[f] = form.elements[f].value.trim();
    ctx.navigate(`/ui/studies${qs(p)}`);
  });
  const { wrap, tbody } = table('studies', ['Patient name', 'Patient ID', 'Study date', 'Modalities', 'Description', 'Accession', { text: 'Series', class: 'num' }, { text: 'Instances', class: 'num' }]);
  const info = h('span', { dataset: { role: 'page-info' } }, '');
  const prev = h('button', { class: 'secondary', dataset: { action: 'prev-page' }, disabled: offset === 0 }, '‹ Previous');
  const next = h('button', { class: 'secondary', dataset: { action: 'next-page' }, disabled: true }, 'Next ›');
  const go = (o) => {
    const p = Object.fromEntries(FIELDS.map((f) => [f, q.get(f) || '']));
    ctx.navigate(`/ui/studies${qs({ ...p, offset: o || '' })}`);
  };
  prev.addEventListener('click', () => go(Math.max(0, offset - PAGE)));
  next.addEventListener('click', () => go(offset + PAGE));
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Studies')),
    h('div', { class: 'panel' }, form),
    h('div', { class: 'panel' }, wrap, h('div', { class: 'pager' }, info, prev, next)));
  if (ctx.can('write')) main.append(uploadWidget(ctx.config.dicomweb, () => load()));
  emptyRow(tbody, 8, 'Searching…');
  await load();

  async function load() {
  const params = { ...qidoParams(q), includefield: INCLUDE, limit: PAGE + 1, offset: offset || '' };
  let rows;
  try {
    rows = await api(`${ctx.config.dicomweb}/studies${qs(params)}`, { accept: 'application/dicom+json' });
  } catch (e) {
    tbody.replaceChildren();
    emptyRow(tbody, 8, 'The search failed.');
    return;
  }
  if (!ctx.alive()) return;
  rows = Array.isArray(rows) ? rows : [];
  const more = rows.length > PAGE;
  rows = rows.slice(0, PAGE);
  tbody.replaceChildren();
  if (!rows.length) emptyRow(tbody, 8, offset ? 'No more studies.' : 'No study matches.');
  for (const s of rows) {
    const uid = dv(s, '0020000D');
    const href = `/ui/studies/${encodeURIComponent(uid)}`;
    tbody.append(h('tr', { class: 'clickable', dataset: { studyUid: uid }, onclick: (e) => { if (!e.target.closest('a')) ctx.navigate(href); } },
      h('td', {}, h('a', { href }, dv(s, '00100010') || '(no name)')),
      h('td', {}, dv(s, '00100020')),
      h('td', {}, `${fmtDate(dv(s, '00080020'))} ${fmtTime(dv(s, '00080030'))}`),
      h('td', {}, (s['00080061'] && s['00080061'].Value || []).map((m) => badge(m, 'mod'))),
      h('td', { class: 'wrap' }, dv(s, '00081030')),
      h('td', {}, dv(s, '00080050')),
      h('td', { class: 'num' }, fmtInt(dv(s, '00201206') || null)),
      h('td', { class: 'num' }, fmtInt(dv(s, '00201208') || null))));
  }
  info.textContent = rows.length ? `${offset + 1}–${offset + rows.length}${more ? '' : ` of ${offset + rows.length}`}` : '';
  next.disabled = !more;
  }
}

function label(name) {
  return {
    PatientName: 'Patient name', PatientID: 'Patient ID', StudyDateFrom: 'Study date from', StudyDateTo: 'to',
    ModalitiesInStudy: 'Modality', AccessionNumber: 'Accession',
  }[name];
}
