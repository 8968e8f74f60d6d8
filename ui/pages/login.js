// Sign in: a local user's name and password (POST /ui/session sets the session cookie), or
// OpenID Connect (authorization code + PKCE, RFC 7636) when the node is configured with an
// issuer; the callback page finishes that flow.

import { api } from '../api.js';
import { h } from '../dom.js';

export default function render(main, ctx) {
  const here = location.pathname.startsWith('/ui/login') ? '/ui/' : location.pathname + location.search;
  const message = h('p', { class: 'bad small', hidden: true });
  const form = h('form', { dataset: { form: 'login' } },
    h('label', { for: 'login-user' }, 'User name'),
    h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true }),
    h('label', { for: 'login-password' }, 'Password'),
    h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit' }, 'Sign in'),
    message);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    message.hidden = true;
    try {
      await api('/ui/session', { method: 'POST', json: { username: form.username.value, password: form.password.value } });
      await ctx.signedIn(here);
    } catch (err) {
      message.textContent = err.status === 401 ? 'Wrong user name or password.' : err.message;
      message.hidden = false;
      button.disabled = false;
    }
  });
  const box = h('div', { class: 'login-box' }, h('h1', {}, 'PACS console'), form);
  const oidc = ctx.config.oidc;
  if (oidc && oidc.issuer) {
    let issuerName = oidc.issuer;
    try { issuerName = new URL(oidc.issuer).host; } catch { /* as given */ }
    box.append(h('div', { class: 'or' }, 'or'),
      h('button', { class: 'secondary', dataset: { action: 'login-oidc' }, onclick: () => startOidc(oidc, here) }, `Sign in with ${issuerName}`));
  }
  if (ctx.config.version) box.append(h('p', { class: 'muted small', style: { textAlign: 'center', marginTop: '18px' } }, `node ${ctx.config.version}`));
  main.append(box);
  form.username.focus();
}

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
function random(n) {
  const a = new Uint8Array(n);
  crypto.getRandomValues(a);
  return b64url(a);
}

export async function discovery(issuer) {
  const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const r = await fetch(url, { credentials: 'omit' });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function startOidc(oidc, returnTo) {
  const { reportError } = await import('../api.js');
  try {
    const meta = await discovery(oidc.issuer);
    const verifier = random(32);
    const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
    const stateValue = random(16);
    sessionStorage.setItem('pacs-console-oidc', JSON.stringify({ verifier, state: stateValue, returnTo }));
    const url = new URL(meta.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: oidc.client_id,
      redirect_uri: `${location.origin}/ui/callback`,
      scope: oidc.scope || 'openid',
      state: stateValue,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }).toString();
    location.assign(url.toString());
  } catch (e) {
    reportError(`OpenID Connect: ${e.message}`);
  }
}
