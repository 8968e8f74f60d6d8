// One study: its series with thumbnails (WADO-RS), the AI results stored in it (SEG, SR, the
// PDF report) with the model and version that made them and the AI jobs run on it; open in
// OHIF, download, upload, send to an AE (C-STORE through the node) and de-identified export.

import { api, post, qs } from '../api.js';
import { h, table, emptyRow, dv, fmtDate, fmtTime, fmtTs, fmtInt, badge, shortUid, ts } from '../dom.js';
import { uploadWidget } from '../upload.js';

const SERIES_INCLUDE = ['0008103E', '00200011', '00201209', '00080021', '00080031', '00080070', '00081090', '00181020'].join(',');
const AI_KINDS = { SEG: 'SEG', SR: 'SR', DOC: 'DOC' };
const SERIES_PAGE = 500;

// PS3.15 Annex E options the export API accepts (src/deid Options, named as its JSON fields)
export const EXPORT_OPTIONS = [
  ['retain_safe_private', 'Retain Safe Private Option'],
  ['retain_uids', 'Retain UIDs Option'],
  ['retain_device_identity', 'Retain Device Identity Option'],
  ['retain_institution_identity', 'Retain Institution Identity Option'],
  ['retain_patient_characteristics', 'Retain Patient Characteristics Option'],
  ['retain_longitudinal_modified_dates', 'Retain Longitudinal Temporal Information with Modified Dates Option'],
  ['clean_descriptors', 'Clean Descriptors Option'],
];

export default async function render(main, ctx) {
  const uid = ctx.segs[1];
  const dw = ctx.config.dicomweb;
  const timers = [];
  const cleanup = () => timers.forEach((t) => clearInterval(t));
  const study = await api(`${dw}/studies${qs({ StudyInstanceUID: uid, includefield: '00081030,00201206,00201208,00080090' })}`, { accept: 'application/dicom+json' });
  if (!ctx.alive()) return cleanup;
  const s = Array.isArray(study) && study[0];
  if (!s) {
    main.append(h('div', { class: 'center' }, h('h1', {}, 'No such study'), h('p', { class: 'mono' }, uid), h('a', { href: '/ui/studies' }, 'Back to the studies')));
    return cleanup;
  }
  const patientId = dv(s, '00100020');
  const viewer = ctx.config.viewer;
  const ohif = h('a', {
    class: 'button', dataset: { action: 'open-ohif' }, target: '_blank', rel: 'noopener',
    href: `${viewer || '/'}${(viewer || '/').endsWith('/') ? '' : '/'}viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`,
    'aria-disabled': viewer ? null : 'true', title: viewer ? 'Open in the OHIF viewer' : 'no viewer is served by this node (--viewer-dir)',
  }, 'Open in OHIF');
  const download = h('a', {
    class: 'button secondary', dataset: { action: 'download' }, href: `${dw}/studies/${encodeURIComponent(uid)}`,
    download: `study-${uid}.multipart`, title: 'WADO-RS: the whole study as multipart/related application/dicom',
  }, 'Download');
  main.append(h('div', { class: 'page-head' },
    h('h1', {}, dv(s, '00100010') || '(no name)'),
    h('span', { class: 'muted' }, 'Patient ID ', h('a', { href: `/ui/patients/${encodeURIComponent(patientId)}`, dataset: { nav: 'patient' } }, patientId || '(none)')),
    h('div', { class: 'actions' }, ohif, download)));
  main.append(h('div', { class: 'panel' }, h('dl', { class: 'kv' },
    h('dt', {}, 'Study date'), h('dd', {}, `${fmtDate(dv(s, '00080020'))} ${fmtTime(dv(s, '00080030'))}`),
    h('dt', {}, 'Description'), h('dd', {}, dv(s, '00081030') || '—'),
    h('dt', {}, 'Accession'), h('dd', {}, dv(s, '00080050') || '—'),
    h('dt', {}, 'Modalities'), h('dd', {}, (s['00080061'] && s['00080061'].Value || []).map((m) => badge(m, 'mod'))),
    h('dt', {}, 'Series / instances'), h('dd', {}, `${fmtInt(dv(s, '00201206') || 0)} / ${fmtInt(dv(s, '00201208') || 0)}`),
    h('dt', {}, 'Study Instance UID'), h('dd', { class: 'mono' }, uid))));

  // series
  const series = table('series', ['', '#', 'Modality', 'Description', 'Date', { text: 'Instances', class: 'num' }, 'Series Instance UID']);
  main.append(h('h2', {}, 'Series'), h('div', { class: 'panel' }, series.wrap));
  const ai = table('ai-results', ['Kind', 'Model', 'Version', 'Series', 'Created', 'Series Instance UID']);
  ai.table.removeAttribute('data-table');
  const aiSection = h('section', { dataset: { section: 'ai-results' } }, h('h2', {}, 'AI results'), h('div', { class: 'panel' }, ai.wrap));
  main.append(aiSection);
  let jobsTable = null;
  if (ctx.can('admin')) {
    jobsTable = table('jobs', ['Job', 'Model', 'Version', 'State', { text: 'Attempts', class: 'num' }, 'Series', 'Queued', 'Started', 'Finished', 'Worker', 'Error']);
    main.append(h('h2', {}, 'AI jobs on this study'), h('div', { class: 'panel' }, jobsTable.wrap));
  }
  const actions = h('div', { class: 'row' });
  main.append(actions);
  if (ctx.can('export')) actions.append(sendPanel(ctx, uid));
  if (ctx.can('deidentify')) actions.append(exportPanel(ctx, uid, timers));
  if (ctx.can('write')) main.append(uploadWidget(dw, () => loadSeries()));

  let jobs = [];
  async function loadJobs() {
    if (!jobsTable) return;
    try {
      const all = await api(`/api/ai/jobs${qs({ study: uid, limit: 200 })}`);
      jobs = (Array.isArray(all) ? all : []).filter((j) => j.study_instance_uid === uid);
    } catch { jobs = []; }
    if (!ctx.alive()) return;
    jobsTable.tbody.replaceChildren();
    if (!jobs.length) emptyRow(jobsTable.tbody, 11, 'No AI job ran on this study.');
    for (const j of jobs) {
      jobsTable.tbody.append(h('tr', { dataset: { jobId: j.id, state: j.state } },
        h('td', {}, String(j.id)), h('td', {}, j.model), h('td', {}, j.model_version),
        h('td', {}, badge(j.state, `state-${j.state}`)), h('td', { class: 'num' }, `${j.attempts}${j.max_attempts ? `/${j.max_attempts}` : ''}`),
        h('td', {}, shortUid(j.series_instance_uid)),
        h('td', {}, fmtTs(ts(j, 'created_at'))), h('td', {}, fmtTs(ts(j, 'started_at'))), h('td', {}, fmtTs(ts(j, 'finished_at'))),
        h('td', {}, j.worker || j.lease_owner || ''), h('td', { class: 'wrap small bad' }, j.error || '')));
    }
  }

  // the model and version of an AI output series: from the job that stored it, else from
  // the worker's Series Description ("AI SEG <model> <version>", "SR <model> <version>")
  function modelOf(seriesUid, description, modelName) {
    for (const j of jobs) {
      const stored = (j.result && j.result.stored) || [];
      if (stored.some((o) => o.series_instance_uid === seriesUid)) return [j.model, j.model_version];
    }
    const m = /^(?:AI )?(?:SEG|SR|Report|DOC)\s+(\S+)\s+(\S+)/.exec(description || '');
    if (m) return [m[1], m[2]];
    return [modelName || '—', ''];
  }

  async function loadSeries() {
    let list;
    try {
      list = await api(`${dw}/studies/${encodeURIComponent(uid)}/series${qs({ includefield: SERIES_INCLUDE, limit: SERIES_PAGE })}`, { accept: 'application/dicom+json' });
    } catch {
      return;
    }
    if (!ctx.alive()) return;
    list = (Array.isArray(list) ? list : []).sort((a, b) => (Number(dv(a, '00200011')) || 0) - (Number(dv(b, '00200011')) || 0));
    series.tbody.replaceChildren();
    ai.tbody.replaceChildren();
    if (!list.length) emptyRow(series.tbody, 7, 'No series.');
    let results = 0;
    for (const se of list) {
      const suid = dv(se, '0020000E');
      const modality = dv(se, '00080060');
      const img = h('img', {
        dataset: { thumbnail: '' }, loading: 'lazy', alt: '',
        src: `${dw}/studies/${encodeURIComponent(uid)}/series/${encodeURIComponent(suid)}/thumbnail`,
      });
      img.addEventListener('error', () => {
        if (img.classList.contains('broken')) return;
        img.classList.add('broken');
        img.src = placeholder(modality);
      });
      series.tbody.append(h('tr', { dataset: { seriesUid: suid } },
        h('td', {}, img), h('td', {}, dv(se, '00200011')), h('td', {}, badge(modality, 'mod')),
        h('td', { class: 'wrap' }, dv(se, '0008103E')), h('td', {}, `${fmtDate(dv(se, '00080021'))} ${fmtTime(dv(se, '00080031'))}`),
        h('td', { class: 'num' }, fmtInt(dv(se, '00201209') || 0)), h('td', {}, shortUid(suid))));
      if (AI_KINDS[modality]) {
        results += 1;
        const [model, version] = modelOf(suid, dv(se, '0008103E'), dv(se, '00081090'));
        ai.tbody.append(h('tr', { dataset: { aiResult: modality, seriesUid: suid } },
          h('td', {}, badge(modality, 'mod')), h('td', {}, model), h('td', {}, version),
          h('td', { class: 'wrap' }, dv(se, '0008103E')), h('td', {}, `${fmtDate(dv(se, '00080021'))} ${fmtTime(dv(se, '00080031'))}`),
          h('td', {}, shortUid(suid))));
      }
    }
    if (!results) emptyRow(ai.tbody, 6, 'No SEG, SR or report in this study.');
    if (list.length >= SERIES_PAGE) series.tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, `The first ${SERIES_PAGE} series are shown.`)));
  }
  emptyRow(series.tbody, 7, 'Loading…');
  await loadJobs();
  await loadSeries();
  return cleanup;
}

/** A thumbnail's stand-in where the series has no image (SR, a document): its modality. */
function placeholder(modality) {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="#041c4a"/><text x="32" y="37" font-family="sans-serif" font-size="13" fill="#5acce6" text-anchor="middle">${(modality || '?').replace(/[^A-Z0-9]/gi, '')}</text></svg>`;
  return `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

function sendPanel(ctx, uid) {
  const panel = h('div', { class: 'panel' }, h('h3', {}, 'Send to an AE (C-STORE)'));
  // listing AEs needs admin; an identity with only export types the title
  const picker = ctx.can('admin')
    ? h('select', { dataset: { input: 'send-ae' } }, h('option', { value: '' }, 'Loading…'))
    : h('input', { dataset: { input: 'send-ae' }, placeholder: 'AE title' });
  const button = h('button', { dataset: { action: 'send' } }, 'Send study');
  const progress = h('progress', { dataset: { progress: 'send' }, max: 1, value: 0 });
  const summary = h('div', { class: 'small' });
  const results = table('send-results', ['SOP Instance UID', 'Result', 'Status', { text: 'Attempts', class: 'num' }, 'Error']);
  results.wrap.hidden = true;
  results.wrap.classList.add('scroll');
  panel.append(h('div', { class: 'toolbar' }, picker, button, progress), summary, results.wrap);
  if (ctx.can('admin')) {
    api('/api/aes').then((aes) => {
      const reachable = aes.filter((a) => a.host && a.port).sort((a, b) => a.title.localeCompare(b.title));
      picker.replaceChildren(...(reachable.length ? [] : [h('option', { value: '' }, 'No AE with an address')]),
        ...reachable.map((a) => h('option', { value: a.title }, `${a.title} (${a.host}:${a.port})`)));
    }).catch(() => picker.replaceChildren(h('option', { value: '' }, 'AEs not available')));
  }
  button.addEventListener('click', async () => {
    const title = picker.value.trim();
    if (!title) return;
    button.disabled = true;
    progress.removeAttribute('value'); // indeterminate: the API answers when the send is done
    summary.textContent = `Sending to ${title}…`;
    results.wrap.hidden = true;
    try {
      const r = await post(`/api/aes/${encodeURIComponent(title)}/send`, { study: uid }, { okStatuses: [502] });
      progress.max = r.total || 1;
      progress.value = (r.completed || 0) + (r.warning || 0) + (r.failed || 0);
      summary.replaceChildren(h('span', { class: r.failed ? 'bad' : 'ok' },
        `${r.destination}: ${r.completed} completed, ${r.warning} warning, ${r.failed} failed of ${r.total} in ${Number(r.seconds || 0).toFixed(1)} s`));
      results.tbody.replaceChildren();
      const shown = (r.results || []).slice(0, 1000);
      for (const x of shown) {
        results.tbody.append(h('tr', { dataset: { result: x.result } },
          h('td', {}, shortUid(x.sop_instance_uid)), h('td', {}, badge(x.result, x.result === 'failed' ? 'bad' : 'ok')),
          h('td', {}, x.status === null || x.status === undefined ? '' : `0x${Number(x.status).toString(16).padStart(4, '0')}`),
          h('td', { class: 'num' }, String(x.attempts)), h('td', { class: 'wrap small' }, x.error || '')));
      }
      if ((r.results || []).length > shown.length) results.tbody.append(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, `${r.results.length - shown.length} more not shown`)));
      results.wrap.hidden = false;
    } catch (e) {
      progress.value = 0;
      summary.replaceChildren(h('span', { class: 'bad' }, e.message));
    } finally {
      button.disabled = false;
    }
  });
  return panel;
}

function exportPanel(ctx, uid, timers) {
  const form = h('form', { dataset: { form: 'export' } },
    h('fieldset', {}, h('legend', {}, 'PS3.15 Basic Application Confidentiality Profile, with options'),
      h('div', { style: { display: 'grid', gap: '3px' } }, EXPORT_OPTIONS.map(([name, text]) =>
        h('label', {}, h('input', { type: 'checkbox', name, value: 'true' }), text)))),
    h('div', { class: 'checks', style: { margin: '8px 0' } },
      h('label', {}, h('input', { type: 'checkbox', name: 'reidentification', value: 'true', checked: true }), 'Keep the re-identification table (original ↔ pseudonym)')),
    h('div', { class: 'toolbar' },
      h('button', { type: 'submit', dataset: { action: 'export' } }, 'Export de-identified (ZIP)')));
  const progress = h('progress', { dataset: { progress: 'export' }, max: 1, value: 0 });
  const status = h('span', { class: 'small' });
  const link = h('span');
  form.querySelector('.toolbar').append(progress, status, link);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = form.querySelector('button[data-action=export]');
    button.disabled = true;
    link.replaceChildren();
    const options = {};
    for (const [name] of EXPORT_OPTIONS) options[name] = form.elements[name].checked;
    try {
      const row = await post('/api/exports', {
        studies: [uid], options, destination: { type: 'zip' }, reidentification: form.elements.reidentification.checked,
      });
      status.textContent = `Export ${row.id} ${row.state}…`;
      const timer = setInterval(async () => {
        let r;
        try {
          r = await api(`/api/exports/${row.id}`);
        } catch {
          clearInterval(timer);
          button.disabled = false;
          return;
        }
        progress.max = Math.max(1, r.instances_total || 0);
        progress.value = (r.instances_done || 0) + (r.instances_failed || 0);
        status.textContent = `Export ${r.id}: ${r.state}, ${r.instances_done}/${r.instances_total || '?'} instances${r.instances_failed ? `, ${r.instances_failed} failed` : ''}${r.error ? ` — ${r.error}` : ''}`;
        if (!['queued', 'running'].includes(r.state)) {
          clearInterval(timer);
          button.disabled = false;
          status.className = `small ${r.state === 'failed' || r.state === 'cancelled' ? 'bad' : 'ok'}`;
          if (r.instances_done > 0 && r.state !== 'cancelled') {
            link.replaceChildren(h('a', { class: 'button small', dataset: { action: 'download-export' }, href: `/api/exports/${r.id}/archive`, download: `export-${r.id}.zip` }, 'Download ZIP'));
          }
        }
      }, 1000);
      timers.push(timer);
    } catch {
      button.disabled = false;
    }
  });
  return h('div', { class: 'panel' }, h('h3', {}, 'De-identified export'), form);
}
