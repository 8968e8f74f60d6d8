// AI: the models with their versions, job counts and latencies (GET /api/ai/models), the
// routing rules (GET/PUT /api/ai/routes: edit, enable, disable, add, remove), and the job
// queue of every node sharing the index (GET /api/ai/jobs, paged; retry and cancel). The
// models and jobs refresh every 5 s.

import { api, put, post, qs } from '../api.js';
import { h, table, emptyRow, badge, fmtTs, fmtInt, fmtMs, shortUid, ts, modal, field, confirmDialog } from '../dom.js';

const PAGE = 50;
const STATES = ['', 'queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled'];
const LIST_FIELDS = ['modality', 'body_part', 'sop_class', 'calling_ae'];

export default async function render(main, ctx) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'AI')));
  const models = table('models', ['Model', 'Versions', { text: 'Routes on', class: 'num' }, { text: 'Queued', class: 'num' }, { text: 'Running', class: 'num' },
    { text: 'Done', class: 'num' }, { text: 'Failed', class: 'num' }, { text: 'Cancelled', class: 'num' }, { text: 'p50', class: 'num' }, { text: 'p95', class: 'num' }, { text: 'Runs (24 h)', class: 'num' }]);
  main.append(h('h2', {}, 'Models'), h('div', { class: 'panel' }, models.wrap));

  const routes = table('routes', ['#', 'Model', 'Modality', 'Body part', 'Series description', 'SOP classes', 'Calling AE', 'Enabled', '']);
  const addRoute = h('button', { class: 'secondary small', dataset: { action: 'add-route' } }, '+ Add rule');
  main.append(h('h2', {}, 'Routing rules'), h('div', { class: 'panel' }, routes.wrap, h('div', { class: 'toolbar' }, addRoute)));

  const stateSel = h('select', { dataset: { input: 'job-state' } }, STATES.map((s) => h('option', { value: s, selected: s === (ctx.query.get('state') || '') }, s || 'all states')));
  const jobs = table('jobs', ['Job', 'Model', 'Version', 'State', { text: 'Attempts', class: 'num' }, 'Study', 'Series', 'Queued', 'Started', 'Finished', { text: 'Took', class: 'num' }, 'Worker', 'Error', '']);
  const info = h('span', { dataset: { role: 'page-info' } });
  const prev = h('button', { class: 'secondary', dataset: { action: 'prev-page' }, disabled: true }, '‹ Previous');
  const next = h('button', { class: 'secondary', dataset: { action: 'next-page' }, disabled: true }, 'Next ›');
  main.append(h('h2', {}, 'Job queue (all nodes)'),
    h('div', { class: 'panel' }, h('div', { class: 'toolbar' }, h('label', {}, 'State '), stateSel, h('span', { class: 'muted small' }, 'refreshed every 5 s')),
      jobs.wrap, h('div', { class: 'pager' }, info, prev, next)));

  let offset = 0;
  let modelNames = [];
  let routeList = [];

  async function loadModels() {
    let list;
    try { list = await api('/api/ai/models'); } catch { return; }
    if (!ctx.alive()) return;
    modelNames = list.map((m) => m.name);
    models.tbody.replaceChildren();
    if (!list.length) emptyRow(models.tbody, 11, 'No model is installed.');
    for (const m of list) {
      const j = m.jobs || {};
      const l = m.latency_ms || {};
      models.tbody.append(h('tr', { dataset: { model: m.name } },
        h('td', {}, m.name), h('td', {}, (m.versions || []).map((v) => badge(v, v === m.version ? 'ok' : ''))), h('td', { class: 'num' }, fmtInt(m.enabled_routes)),
        ...['queued', 'running', 'done', 'failed', 'cancelled'].map((k) => h('td', { class: `num ${k === 'failed' && j[k] ? 'bad' : ''}` }, fmtInt(j[k] || 0))),
        h('td', { class: 'num' }, fmtMs(l.p50)), h('td', { class: 'num' }, fmtMs(l.p95)), h('td', { class: 'num' }, fmtInt(l.count || 0))));
    }
  }

  async function saveRoutes(list) {
    const saved = await put('/api/ai/routes', list);
    routeList = Array.isArray(saved) ? saved : list;
    drawRoutes();
  }

  function drawRoutes() {
    routes.tbody.replaceChildren();
    if (!routeList.length) emptyRow(routes.tbody, 9, 'No routing rule: no series is analysed.');
    routeList.forEach((r, i) => {
      const enabled = r.enabled !== false;
      const toggle = h('button', { class: 'secondary small', dataset: { action: 'toggle-route' } }, enabled ? 'Disable' : 'Enable');
      toggle.addEventListener('click', async () => {
        toggle.disabled = true;
        const list = routeList.map((x, k) => (k === i ? { ...x, enabled: !enabled } : x));
        try { await saveRoutes(list); } catch { toggle.disabled = false; }
      });
      const edit = h('button', { class: 'secondary small', dataset: { action: 'edit-route' }, onclick: () => editRoute(i) }, 'Edit');
      const remove = h('button', { class: 'danger small', dataset: { action: 'delete-route' } }, 'Remove');
      remove.addEventListener('click', async () => {
        if (!(await confirmDialog(`Remove routing rule ${i + 1} (${r.model})?`, 'Remove'))) return;
        try { await saveRoutes(routeList.filter((_, k) => k !== i)); } catch { /* shown */ }
      });
      routes.tbody.append(h('tr', { dataset: { route: String(i), enabled: String(enabled) }, class: enabled ? '' : 'muted' },
        h('td', {}, String(i + 1)), h('td', {}, r.model),
        h('td', {}, (r.modality || []).join(', ')), h('td', {}, (r.body_part || []).join(', ')), h('td', { class: 'mono wrap' }, r.series_description || ''),
        h('td', { class: 'wrap small' }, (r.sop_class || []).join(', ')), h('td', {}, (r.calling_ae || []).join(', ')),
        h('td', {}, enabled ? badge('enabled', 'ok') : badge('disabled', 'state-cancelled')),
        h('td', { class: 'actions' }, toggle, edit, remove)));
    });
  }

  function editRoute(i) {
    const isNew = i === null;
    const r = isNew ? { model: modelNames[0] || '', enabled: true } : routeList[i];
    const message = h('p', { class: 'bad small', hidden: true });
    const modelInput = h('input', { name: 'model', value: r.model || '', required: true, list: 'route-models' });
    const form = h('form', { dataset: { form: 'route' } },
      h('h2', {}, isNew ? 'Add a routing rule' : `Edit routing rule ${i + 1}`),
      h('datalist', { id: 'route-models' }, modelNames.map((m) => h('option', { value: m }))),
      h('div', { style: { display: 'grid', gridTemplateColumns: '1fr 1fr', gap: '10px' } },
        field('Model', modelInput),
        field('Modality (comma-separated)', h('input', { name: 'modality', value: (r.modality || []).join(', '), placeholder: 'CT, MR' })),
        field('Body part', h('input', { name: 'body_part', value: (r.body_part || []).join(', '), placeholder: 'HEAD' })),
        field('Series description (regular expression)', h('input', { name: 'series_description', value: r.series_description || '', placeholder: '(?i)t1' })),
        field('SOP classes', h('input', { name: 'sop_class', value: (r.sop_class || []).join(', ') })),
        field('Calling AE titles', h('input', { name: 'calling_ae', value: (r.calling_ae || []).join(', ') }))),
      h('div', { class: 'checks', style: { marginTop: '10px' } }, h('label', {}, h('input', { type: 'checkbox', name: 'enabled', checked: r.enabled !== false }), 'Enabled')),
      message,
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'secondary', onclick: () => close() }, 'Cancel'),
        h('button', { type: 'submit', dataset: { action: 'save' } }, 'Save')));
    const close = modal(form);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const route = { model: form.elements.model.value.trim(), enabled: form.elements.enabled.checked };
      for (const f of LIST_FIELDS) {
        const v = form.elements[f].value.split(',').map((x) => x.trim()).filter(Boolean);
        if (v.length) route[f] = v;
      }
      const sd = form.elements.series_description.value.trim();
      if (sd) route.series_description = sd;
      const list = isNew ? [...routeList, route] : routeList.map((x, k) => (k === i ? route : x));
      try {
        await saveRoutes(list);
        close();
      } catch (err) {
        message.textContent = err.message;
        message.hidden = false;
      }
    });
  }
  addRoute.addEventListener('click', () => editRoute(null));

  async function loadRoutes() {
    try { routeList = await api('/api/ai/routes'); } catch { return; }
    if (ctx.alive()) drawRoutes();
  }

  async function loadJobs() {
    let list;
    try {
      list = await api(`/api/ai/jobs${qs({ state: stateSel.value, limit: PAGE + 1, offset: offset || '' })}`);
    } catch { return; }
    if (!ctx.alive()) return;
    const more = list.length > PAGE;
    list = list.slice(0, PAGE);
    jobs.tbody.replaceChildren();
    if (!list.length) emptyRow(jobs.tbody, 14, offset ? 'No more jobs.' : 'No job.');
    for (const j of list) {
      const started = ts(j, 'started_at');
      const finished = ts(j, 'finished_at');
      const took = started && finished ? (new Date(finished) - new Date(started)) : null;
      const act = h('td', { class: 'actions' });
      if (['failed', 'dead', 'cancelled'].includes(j.state)) {
        act.append(h('button', { class: 'secondary small', dataset: { action: 'retry' }, onclick: (e) => jobAction(e.target, j.id, 'retry') }, 'Retry'));
      }
      if (['queued', 'running'].includes(j.state)) {
        act.append(h('button', { class: 'danger small', dataset: { action: 'cancel' }, onclick: (e) => jobAction(e.target, j.id, 'cancel') }, 'Cancel'));
      }
      jobs.tbody.append(h('tr', { dataset: { jobId: String(j.id), state: j.state } },
        h('td', {}, String(j.id)), h('td', {}, j.model), h('td', {}, j.model_version), h('td', {}, badge(j.state, `state-${j.state}`)),
        h('td', { class: 'num' }, `${j.attempts}${j.max_attempts ? `/${j.max_attempts}` : ''}`),
        h('td', {}, h('a', { href: `/ui/studies/${encodeURIComponent(j.study_instance_uid)}` }, shortUid(j.study_instance_uid))),
        h('td', {}, shortUid(j.series_instance_uid)),
        h('td', {}, fmtTs(ts(j, 'created_at'))), h('td', {}, fmtTs(started)), h('td', {}, fmtTs(finished)),
        h('td', { class: 'num' }, took !== null && took >= 0 ? fmtMs(took) : ''),
        h('td', { class: 'small' }, j.worker || j.lease_owner || ''), h('td', { class: 'wrap small bad' }, j.error || ''), act));
    }
    info.textContent = list.length ? `${offset + 1}–${offset + list.length}` : '';
    prev.disabled = offset === 0;
    next.disabled = !more;
  }

  async function jobAction(button, id, what) {
    button.disabled = true;
    try {
      await post(`/api/ai/jobs/${id}/${what}`);
    } catch { /* shown */ }
    await Promise.all([loadJobs(), loadModels()]);
  }

  stateSel.addEventListener('change', () => { offset = 0; loadJobs(); });
  prev.addEventListener('click', () => { offset = Math.max(0, offset - PAGE); loadJobs(); });
  next.addEventListener('click', () => { offset += PAGE; loadJobs(); });

  await Promise.all([loadModels(), loadRoutes(), loadJobs()]);
  const timer = setInterval(() => { if (!document.hidden) { loadModels(); loadJobs(); } }, 5000);
  return () => clearInterval(timer);
}
