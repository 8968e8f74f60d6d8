// The OpenID Connect redirect: the code is exchanged for tokens at the issuer's token
// endpoint (with the PKCE verifier), then POST /ui/session with the access token as Bearer
// turns it into the console's session cookie.

import { api, reportError } from '../api.js';
import { h } from '../dom.js';
import { discovery } from './login.js';

export default async function render(main, ctx) {
  main.append(h('p', { class: 'muted center' }, 'Signing in…'));
  const q = ctx.query;
  const saved = JSON.parse(sessionStorage.getItem('pacs-console-oidc') || 'null');
  sessionStorage.removeItem('pacs-console-oidc');
  const fail = (m) => {
    reportError(`OpenID Connect: ${m}`);
    main.replaceChildren(h('div', { class: 'center' }, h('p', {}, 'Sign-in failed.'), h('a', { href: '/ui/login' }, 'Back to sign in')));
  };
  if (q.get('error')) return fail(`${q.get('error')} ${q.get('error_description') || ''}`);
  if (!saved || !q.get('code') || q.get('state') !== saved.state) return fail('unexpected callback (state does not match)');
  const oidc = ctx.config.oidc;
  if (!oidc) return fail('the node has no OpenID provider configured');
  try {
    const meta = await discovery(oidc.issuer);
    const r = await fetch(meta.token_endpoint, {
      method: 'POST',
      credentials: 'omit',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: q.get('code'),
        redirect_uri: `${location.origin}/ui/callback`,
        client_id: oidc.client_id,
        code_verifier: saved.verifier,
      }),
    });
    const tokens = await r.json().catch(() => ({}));
    if (!r.ok || !tokens.access_token) return fail(`token endpoint: HTTP ${r.status} ${tokens.error || ''}`);
    await api('/ui/session', { method: 'POST', headers: { Authorization: `Bearer ${tokens.access_token}` } });
    await ctx.signedIn(saved.returnTo && saved.returnTo.startsWith('/ui') && !saved.returnTo.startsWith('/ui/callback') ? saved.returnTo : '/ui/');
  } catch (e) {
    fail(e.message);
  }
  return undefined;
}
