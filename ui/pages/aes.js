// The AE registry (GET/POST/PUT/DELETE /api/aes), C-ECHO with the round-trip time, and the
// associations refused in the last 24 hours (from the audit trail).

import { api, post, put, del, qs } from '../api.js';
import { h, table, emptyRow, badge, confirmDialog, modal, checkboxes, checked, field, fmtTs, fmtInt, ROLES } from '../dom.js';

const OPERATIONS = ['echo', 'store', 'find', 'move', 'get'];

export default async function render(main, ctx) {
  const add = h('button', { dataset: { action: 'add-ae' } }, '+ Add AE');
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'AE titles'), h('div', { class: 'actions' }, add)));
  const t = table('aes', ['AE title', 'Host', 'Port', 'Description', 'Allowed', 'Roles', 'TLS', 'Move dest.', 'Check host', 'C-ECHO', '']);
  main.append(h('div', { class: 'panel' }, t.wrap));
  const refused = table('refused', ['Calling AE', 'Address', 'Reason', { text: 'Count', class: 'num' }, 'Last']);
  main.append(h('h2', {}, 'Associations refused in the last 24 hours'), h('div', { class: 'panel' }, refused.wrap));
  add.addEventListener('click', () => editAe(null, load));

  async function load() {
    let aes;
    try {
      aes = await api('/api/aes');
    } catch {
      return;
    }
    if (!ctx.alive()) return;
    t.tbody.replaceChildren();
    if (!aes.length) emptyRow(t.tbody, 11, 'No AE is registered.');
    for (const ae of aes.sort((a, b) => a.title.localeCompare(b.title))) {
      const echoResult = h('span', { dataset: { result: 'echo' }, class: 'small' });
      const echo = h('button', { class: 'secondary small', dataset: { action: 'echo' }, disabled: !(ae.host && ae.port) }, 'C-ECHO');
      echo.addEventListener('click', async () => {
        echo.disabled = true;
        echoResult.className = 'small muted';
        echoResult.textContent = 'echoing…';
        try {
          const r = await post(`/api/aes/${encodeURIComponent(ae.title)}/echo`, undefined, { okStatuses: [502] });
          if (r.success) {
            echoResult.className = 'small ok';
            echoResult.textContent = `Success, ${Number(r.round_trip_ms).toFixed(1)} ms`;
          } else {
            echoResult.className = 'small bad';
            echoResult.textContent = `Failed: ${r.error || `status 0x${Number(r.status || 0).toString(16).padStart(4, '0')}`}`;
          }
        } catch (e) {
          echoResult.className = 'small bad';
          echoResult.textContent = `Failed: ${e.message}`;
        } finally {
          echo.disabled = false;
        }
      });
      const edit = h('button', { class: 'secondary small', dataset: { action: 'edit' }, onclick: () => editAe(ae, load) }, 'Edit');
      const remove = h('button', { class: 'danger small', dataset: { action: 'delete' } }, 'Delete');
      remove.addEventListener('click', async () => {
        if (!(await confirmDialog(`Remove the AE ${ae.title} from the registry?`))) return;
        try {
          await del(`/api/aes/${encodeURIComponent(ae.title)}`);
          load();
        } catch { /* shown */ }
      });
      t.tbody.append(h('tr', { dataset: { ae: ae.title } },
        h('td', { class: 'mono' }, ae.title), h('td', {}, ae.host || '—'), h('td', {}, ae.port ? String(ae.port) : '—'),
        h('td', {}, ae.description || ''), h('td', {}, (ae.allow || []).map((a) => badge(a))), h('td', {}, (ae.roles || []).map((r) => badge(r))),
        h('td', {}, ae.tls ? badge('TLS', 'ok') : ''), h('td', {}, ae.move_destination ? 'yes' : ''), h('td', {}, ae.check_host ? 'yes' : ''),
        h('td', {}, echo, ' ', echoResult), h('td', { class: 'actions' }, edit, remove)));
    }
  }

  async function loadRefused() {
    let rows;
    try {
      rows = await api(`/api/aes/refused${qs({ hours: 24 })}`);
    } catch {
      refused.tbody.replaceChildren();
      emptyRow(refused.tbody, 5, 'Not available.');
      return;
    }
    if (!ctx.alive()) return;
    refused.tbody.replaceChildren();
    if (!rows.length) emptyRow(refused.tbody, 5, 'No association was refused.');
    for (const r of rows) {
      refused.tbody.append(h('tr', { dataset: { refusedAe: r.calling_ae || '' } },
        h('td', { class: 'mono' }, r.calling_ae || '—'), h('td', {}, r.address || ''), h('td', { class: 'wrap' }, r.reason || ''),
        h('td', { class: 'num' }, fmtInt(r.count)), h('td', {}, fmtTs(r.last))));
    }
  }
  await Promise.all([load(), loadRefused()]);
}

/** The add/edit form (fields named as the AE API's JSON fields). */
function editAe(ae, done) {
  const isNew = !ae;
  const a = ae || { title: '', host: '', port: 104, description: '', allow: ['echo', 'store'], roles: [], tls: false, move_destination: false, check_host: false };
  const message = h('p', { class: 'bad small', hidden: true });
  const form = h('form', { dataset: { form: 'ae' } },
    h('h2', {}, isNew ? 'Add an AE' : `Edit ${a.title}`),
    h('div', { class: 'form grid', style: { display: 'grid', gridTemplateColumns: '1fr 1fr', gap: '10px' } },
      field('AE title', h('input', { name: 'title', value: a.title, required: true, maxlength: 16, readonly: !isNew })),
      field('Description', h('input', { name: 'description', value: a.description || '' })),
      field('Host', h('input', { name: 'host', value: a.host || '' })),
      field('Port', h('input', { name: 'port', type: 'number', min: 1, max: 65535, value: a.port || '' }))),
    h('fieldset', { style: { marginTop: '10px' } }, h('legend', {}, 'Allowed DIMSE operations'), checkboxes('allow', OPERATIONS, a.allow || [])),
    h('fieldset', { style: { marginTop: '8px' } }, h('legend', {}, 'Roles (their permissions allow further operations)'), checkboxes('roles', ROLES, a.roles || [])),
    h('div', { class: 'checks', style: { marginTop: '8px' } },
      h('label', {}, h('input', { type: 'checkbox', name: 'tls', checked: !!a.tls }), 'TLS (accept and connect over TLS only)'),
      h('label', {}, h('input', { type: 'checkbox', name: 'move_destination', checked: !!a.move_destination }), 'C-MOVE destination'),
      h('label', {}, h('input', { type: 'checkbox', name: 'check_host', checked: !!a.check_host }), 'Accept only from its host')),
    message,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'secondary', onclick: () => close() }, 'Cancel'),
      h('button', { type: 'submit', dataset: { action: 'save' } }, 'Save')));
  const close = modal(form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {
      title: form.elements.title.value.trim(),
      host: form.elements.host.value.trim() || null,
      port: form.elements.port.value ? Number(form.elements.port.value) : null,
      description: form.elements.description.value,
      allow: checked(form, 'allow'),
      roles: checked(form, 'roles'),
      tls: form.elements.tls.checked,
      move_destination: form.elements.move_destination.checked,
      check_host: form.elements.check_host.checked,
    };
    try {
      if (isNew) await post('/api/aes', body);
      else await put(`/api/aes/${encodeURIComponent(a.title)}`, body);
      close();
      done();
    } catch (err) {
      message.textContent = err.message;
      message.hidden = false;
    }
  });
}
