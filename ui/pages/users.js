// Local users (GET/POST/PUT/DELETE /api/users) and API keys (GET/POST /api/keys, DELETE to
// revoke). A key's secret is in the creation answer only: shown once, never stored here.

import { api, post, put, del } from '../api.js';
import { h, table, emptyRow, badge, confirmDialog, checkboxes, checked, field, fmtTs, ROLES } from '../dom.js';

export default async function render(main, ctx) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Users and API keys')));
  const users = table('users', ['User', 'Roles', 'Created', 'Changed', '']);
  const userMessage = h('p', { class: 'small', hidden: true });
  const userForm = h('form', { dataset: { form: 'user' } },
    h('h3', {}, 'Add a user, or change one (roles, password)'),
    h('div', { class: 'toolbar' },
      field('User name', h('input', { name: 'username', required: true, autocomplete: 'off' })),
      field('Password', h('input', { name: 'password', type: 'password', autocomplete: 'new-password' }))),
    h('fieldset', {}, h('legend', {}, 'Roles'), checkboxes('roles', ROLES, ['viewer'])),
    h('div', { class: 'toolbar' }, h('button', { type: 'submit', dataset: { action: 'save-user' } }, 'Save user'),
      h('button', { type: 'reset', class: 'secondary' }, 'Clear')),
    userMessage);
  main.append(h('div', { class: 'row' },
    h('div', { class: 'panel', style: { flex: '2 1 520px' } }, users.wrap),
    h('div', { class: 'panel' }, userForm)));

  const keys = table('keys', ['Key', 'Roles', 'Created', 'Revoked', '']);
  const newKey = h('div', { dataset: { result: 'new-key' } });
  const keyForm = h('form', { dataset: { form: 'key' } },
    h('h3', {}, 'Create an API key'),
    field('Name', h('input', { name: 'name', required: true, autocomplete: 'off' })),
    h('fieldset', { style: { marginTop: '8px' } }, h('legend', {}, 'Roles'), checkboxes('roles', ROLES, [])),
    h('div', { class: 'toolbar' }, h('button', { type: 'submit', dataset: { action: 'create-key' } }, 'Create key')),
    newKey);
  main.append(h('h2', {}, 'API keys'), h('div', { class: 'row' },
    h('div', { class: 'panel', style: { flex: '2 1 520px' } }, keys.wrap),
    h('div', { class: 'panel' }, keyForm)));

  let userList = [];
  async function loadUsers() {
    try { userList = await api('/api/users'); } catch { return; }
    if (!ctx.alive()) return;
    users.tbody.replaceChildren();
    if (!userList.length) emptyRow(users.tbody, 5, 'No local user.');
    for (const u of userList) {
      const edit = h('button', { class: 'secondary small', dataset: { action: 'edit' } }, 'Edit');
      edit.addEventListener('click', () => {
        userForm.elements.username.value = u.name;
        userForm.elements.password.value = '';
        for (const c of userForm.querySelectorAll('input[name=roles]')) c.checked = u.roles.includes(c.value);
        userForm.elements.password.focus();
      });
      const remove = h('button', { class: 'danger small', dataset: { action: 'delete' } }, 'Delete');
      remove.addEventListener('click', async () => {
        if (!(await confirmDialog(`Delete the user ${u.name}? Their logins end.`))) return;
        try { await del(`/api/users/${encodeURIComponent(u.name)}`); } catch { /* shown */ }
        loadUsers();
      });
      users.tbody.append(h('tr', { dataset: { userName: u.name } },
        h('td', {}, u.name, u.name === ctx.identity.principal.replace(/^user:/, '') ? h('span', { class: 'muted small' }, ' (you)') : null),
        h('td', {}, u.roles.map((r) => badge(r))), h('td', {}, fmtTs(u.created_at_ms)), h('td', {}, fmtTs(u.updated_at_ms)),
        h('td', { class: 'actions' }, edit, remove)));
    }
  }

  userForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = userForm.elements.username.value.trim();
    const password = userForm.elements.password.value;
    const roles = checked(userForm, 'roles');
    const exists = userList.some((u) => u.name === name);
    userMessage.hidden = true;
    try {
      if (exists) {
        await put(`/api/users/${encodeURIComponent(name)}`, password ? { roles, password } : { roles });
      } else {
        if (!password) throw Object.assign(new Error('A new user needs a password.'), { local: true });
        await post('/api/users', { name, password, roles });
      }
      userMessage.className = 'small ok';
      userMessage.textContent = exists ? `User ${name} changed.` : `User ${name} added.`;
      userForm.reset();
      loadUsers();
    } catch (err) {
      userMessage.className = 'small bad';
      userMessage.textContent = err.message;
    }
    userMessage.hidden = false;
  });

  async function loadKeys() {
    let list;
    try { list = await api('/api/keys'); } catch { return; }
    if (!ctx.alive()) return;
    keys.tbody.replaceChildren();
    if (!list.length) emptyRow(keys.tbody, 5, 'No API key.');
    for (const k of list) {
      const cell = h('td', { class: 'actions' });
      if (!k.revoked_at_ms) {
        const revoke = h('button', { class: 'danger small', dataset: { action: 'revoke' } }, 'Revoke');
        revoke.addEventListener('click', async () => {
          if (!(await confirmDialog(`Revoke the API key ${k.name}? Whatever uses it stops working.`, 'Revoke'))) return;
          try { await del(`/api/keys/${encodeURIComponent(k.name)}`); } catch { /* shown */ }
          loadKeys();
        });
        cell.append(revoke);
      }
      keys.tbody.append(h('tr', { dataset: { keyName: k.name, revoked: String(!!k.revoked_at_ms) }, class: k.revoked_at_ms ? 'muted' : '' },
        h('td', { class: 'mono' }, k.name), h('td', {}, k.roles.map((r) => badge(r))), h('td', {}, fmtTs(k.created_at_ms)),
        h('td', {}, k.revoked_at_ms ? badge(`revoked ${fmtTs(k.revoked_at_ms)}`, 'state-cancelled') : ''), cell));
    }
  }

  keyForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    newKey.replaceChildren();
    try {
      const r = await post('/api/keys', { name: keyForm.elements.name.value.trim(), roles: checked(keyForm, 'roles') });
      const code = h('code', { dataset: { secret: '' } }, r.key);
      const copy = h('button', { type: 'button', class: 'secondary small', dataset: { action: 'copy-key' } }, 'Copy');
      copy.addEventListener('click', async () => {
        try { await navigator.clipboard.writeText(r.key); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select and copy'; }
      });
      newKey.append(h('div', { class: 'secret' }, code, copy),
        h('p', { class: 'warn small' }, `The key ${r.name} is shown this once: store it now. Send it as "Authorization: Bearer <key>".`));
      keyForm.reset();
      loadKeys();
    } catch (err) {
      newKey.append(h('p', { class: 'bad small' }, err.message));
    }
  });

  await Promise.all([loadUsers(), loadKeys()]);
}
