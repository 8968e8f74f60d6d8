// A patient's measurements over time (GET /api/patients/{id}/measurements, from the SRs'
// measurements index): a trend chart per tracked finding and quantity, and the table of
// values with the change from the prior point.

import { api, qs } from '../api.js';
import { h, table, emptyRow, fmtDate, personName } from '../dom.js';
import { plot } from '../chart.js';

function trackName(t, i) {
  const concept = (t.concept && (t.concept.code_meaning || t.concept.code_value)) || 'measurement';
  const derivation = t.derivation && (t.derivation.code_meaning || t.derivation.code_value);
  const finding = t.tracking_id || (t.tracking_uid ? `finding ${i + 1}` : '');
  return [finding, concept, derivation].filter(Boolean).join(' — ');
}

function dayOf(da) {
  // seconds since the epoch of the study date (uPlot time scales are in seconds)
  if (!/^\d{8}$/.test(da)) return null;
  return Date.UTC(Number(da.slice(0, 4)), Number(da.slice(4, 6)) - 1, Number(da.slice(6, 8))) / 1000;
}

const num = (v, digits = 2) => (v === null || v === undefined ? '—' : `${v > 0 ? '+' : ''}${Number(v).toFixed(digits)}`);

export default async function render(main, ctx) {
  const id = ctx.segs.slice(1).join('/');
  const head = h('div', { class: 'page-head' }, h('h1', {}, `Patient ${id}`),
    h('div', { class: 'actions' }, h('a', { class: 'button secondary', href: `/ui/studies${qs({ PatientID: id })}` }, 'Studies of this patient')));
  main.append(head);
  const charts = h('div', {});
  const t = table('measurements', ['Finding / quantity', 'Study date', { text: 'Value', class: 'num' }, 'Unit', { text: 'Change', class: 'num' }, { text: 'Change %', class: 'num' }, 'Study']);
  main.append(h('h2', {}, 'Trends'), charts, h('h2', {}, 'Measurements'), h('div', { class: 'panel' }, t.wrap));
  emptyRow(t.tbody, 7, 'Loading…');
  // the patient's name from the newest study (one row only)
  api(`${ctx.config.dicomweb}/studies${qs({ PatientID: id, limit: 1 })}`, { accept: 'application/dicom+json', quiet: true })
    .then((r) => { if (ctx.alive() && r && r[0]) head.querySelector('h1').textContent = `${personName((r[0]['00100010'] && r[0]['00100010'].Value || [''])[0]) || '(no name)'} — ${id}`; })
    .catch(() => {});
  let tracks;
  try {
    tracks = await api(`/api/patients/${encodeURIComponent(id)}/measurements`);
  } catch {
    t.tbody.replaceChildren();
    emptyRow(t.tbody, 7, 'The measurements could not be read.');
    return undefined;
  }
  if (!ctx.alive()) return undefined;
  t.tbody.replaceChildren();
  if (!tracks.length) {
    emptyRow(t.tbody, 7, 'No measurement of this patient is indexed (the SRs with measurements are).');
    charts.append(h('p', { class: 'muted' }, 'No trend to show.'));
  }
  const plots = [];
  tracks.forEach((track, i) => {
    const name = trackName(track, i);
    const unit = track.unit || '';
    const box = h('div', { class: 'chart', dataset: { chart: 'trend', trackingUid: track.tracking_uid || track.tracking_id || '' } });
    charts.append(h('div', { class: 'panel' }, h('h3', {}, name, unit ? h('span', { class: 'muted' }, ` (${unit})`) : null), box));
    const points = track.points.filter((p) => dayOf(p.study_date) !== null);
    plots.push(() => plot(box, {
      data: [points.map((p) => dayOf(p.study_date)), points.map((p) => p.value)],
      series: [{ label: `${name}${unit ? ` [${unit}]` : ''}`, value: (u, v) => (v === null || v === undefined ? '—' : `${Number(v).toFixed(2)} ${unit}`) }],
      yLabel: unit,
      height: 200,
    }));
    for (const p of track.points) {
      t.tbody.append(h('tr', { dataset: { point: '', trackingUid: track.tracking_uid || '', studyUid: p.study_uid } },
        h('td', {}, name), h('td', {}, fmtDate(p.study_date)), h('td', { class: 'num' }, Number(p.value).toFixed(2)), h('td', {}, unit),
        h('td', { class: `num ${p.change > 0 ? 'warn' : ''}` }, num(p.change)),
        h('td', { class: 'num' }, p.change_percent === null || p.change_percent === undefined ? '—' : `${num(p.change_percent, 1)} %`),
        h('td', {}, h('a', { href: `/ui/studies/${encodeURIComponent(p.study_uid)}` }, 'open'))));
    }
  });
  // the charts measure their container: draw once the page is laid out
  requestAnimationFrame(() => { for (const draw of plots) { try { draw(); } catch (e) { charts.append(h('p', { class: 'bad' }, `chart: ${e.message}`)); } } });
  return undefined;
}

