// The console's shell: who the caller is (GET /api/whoami), the router over /ui/... with
// history.pushState, the permission-aware navigation, and the error banner.

import { api, onError, CONSOLE_HEADER } from './api.js';
import { h, clear } from './dom.js';

// First path segment → [page module, permission needed] ('' any identity); as the server's
// shell answers (docs/console.md).
const ROUTES = {
  '': ['home', null],
  studies: ['studies', 'read'],
  patients: ['patient', 'read'],
  aes: ['aes', 'admin'],
  ai: ['ai', 'admin'],
  audit: ['audit', 'audit'],
  users: ['users', 'admin'],
  node: ['node', 'admin'],
  login: ['login', null],
  callback: ['callback', null],
};

const NAV = [
  ['studies', 'Studies', 'read'],
  ['aes', 'AE titles', 'admin'],
  ['ai', 'AI', 'admin'],
  ['audit', 'Audit', 'audit'],
  ['users', 'Users & keys', 'admin'],
  ['node', 'Node', 'admin'],
];

const state = {
  identity: null, // {principal, authenticated, permissions}
  config: { oidc: null, dicomweb: '/dicom-web', viewer: null, version: '' },
  cleanup: null,
  renderId: 0,
};

const errorBox = document.querySelector('[data-role="error"]');
const errorList = errorBox.querySelector('ul');
errorBox.querySelector('[data-action="dismiss-error"]').addEventListener('click', clearErrors);

function showError(message) {
  // the same message twice (a refresh loop failing) is listed once
  if ([...errorList.children].some((li) => li.textContent === message)) return;
  if (errorList.children.length >= 5) errorList.firstElementChild.remove();
  errorList.append(h('li', {}, message));
  errorBox.hidden = false;
}
function clearErrors() {
  errorList.replaceChildren();
  errorBox.hidden = true;
}
onError(showError);
window.addEventListener('unhandledrejection', (e) => {
  const r = e.reason;
  if (r && r.name === 'AbortError') return;
  // ApiErrors were shown already
  if (r && r.constructor && r.constructor.name === 'ApiError') return;
  showError(String((r && r.message) || r));
});

function can(permission) {
  return !permission || (state.identity && state.identity.permissions.includes(permission));
}
function signedIn() {
  const id = state.identity;
  return !!id && (id.authenticated || id.permissions.length > 0);
}

export async function loadIdentity() {
  const who = await api('/api/whoami');
  state.identity = { principal: who.principal, authenticated: !!who.authenticated, permissions: who.permissions || [] };
  return state.identity;
}

function renderHeader(active) {
  const header = document.querySelector('header.top');
  header.hidden = !signedIn();
  if (header.hidden) return;
  const nav = header.querySelector('nav');
  clear(nav, NAV.filter(([, , p]) => can(p)).map(([seg, text]) =>
    h('a', { href: `/ui/${seg}`, dataset: { nav: seg }, class: seg === active ? 'active' : '' }, text)));
  header.querySelector('[data-user]').textContent = state.identity.principal;
  header.querySelector('[data-action="logout"]').hidden = !state.identity.authenticated;
}

function parsePath() {
  let path = location.pathname.replace(/^\/ui\/?/, '');
  path = path.replace(/\/+$/, '');
  const segs = path === '' ? [] : path.split('/').map((s) => decodeURIComponent(s));
  return segs;
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
}

async function render() {
  const id = ++state.renderId;
  if (state.cleanup) {
    try { state.cleanup(); } catch { /* ignore */ }
    state.cleanup = null;
  }
  clearErrors();
  const segs = parsePath();
  const first = segs[0] || '';
  let name;
  let permission = null;
  if (first in ROUTES) {
    [name, permission] = ROUTES[first];
    if (first === 'studies' && segs.length > 1) name = 'study';
  } else {
    name = 'notfound';
  }
  if (!signedIn() && name !== 'callback') {
    name = 'login';
  } else if (name === 'login' && signedIn()) {
    name = 'home';
  } else if (!can(permission)) {
    name = 'forbidden';
  }
  renderHeader(name === 'study' ? 'studies' : (name === 'patient' ? 'studies' : first));
  const main = h('main', { dataset: { page: name } });
  document.querySelector('main').replaceWith(main);
  document.title = `PACS console — ${name}`;
  const ctx = {
    segs,
    query: new URLSearchParams(location.search),
    identity: state.identity,
    config: state.config,
    can,
    navigate,
    alive: () => id === state.renderId,
    signedIn: async (returnTo) => {
      await loadIdentity();
      navigate(returnTo || '/ui/', { replace: true });
    },
  };
  try {
    const page = await import(`./pages/${name}.js`);
    if (id !== state.renderId) return;
    const cleanup = await page.default(main, ctx);
    if (id !== state.renderId) {
      if (typeof cleanup === 'function') cleanup();
      return;
    }
    if (typeof cleanup === 'function') state.cleanup = cleanup;
  } catch (e) {
    if (id !== state.renderId) return;
    if (!(e && e.status !== undefined)) showError(`page ${name}: ${e.message || e}`);
  }
}

// links inside the console navigate without reloading
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !/^\/ui(\/|$)/.test(url.pathname) || url.pathname.startsWith('/ui/assets/')) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', render);

document.querySelector('[data-action="logout"]').addEventListener('click', async () => {
  try {
    await fetch('/ui/session', { method: 'DELETE', headers: CONSOLE_HEADER, credentials: 'same-origin' });
  } finally {
    state.identity = { principal: 'anonymous', authenticated: false, permissions: [] };
    try { await loadIdentity(); } catch { /* the login page shows */ }
    navigate('/ui/login', { replace: true });
  }
});

async function start() {
  try {
    state.config = { ...state.config, ...(await api('/ui/config.json', { quiet: true })) };
  } catch { /* defaults: no OpenID Connect */ }
  try {
    await loadIdentity();
  } catch {
    state.identity = { principal: 'anonymous', authenticated: false, permissions: [] };
  }
  render();
}
start();
