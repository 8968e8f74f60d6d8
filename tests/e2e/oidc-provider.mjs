// An OpenID Provider for the tests: the npm package oidc-provider (OpenID Certified) with fixed
// users, a login page of its own, and JWT access tokens for the pacs node.
//
//   node oidc-provider.mjs PORT NODE_BASE_URL
//
// Listens on 127.0.0.1:PORT with the issuer http://127.0.0.1:PORT and prints one line
// `oidc-provider ready http://127.0.0.1:PORT` when it accepts connections. NODE_BASE_URL
// (e.g. http://127.0.0.1:8080) is where the pacs node serves OHIF: the redirect URIs of the
// viewer's client are registered under it. Keys are generated at every start and kept in
// memory only; so are sessions, grants and tokens (oidc-provider's in-memory adapter).
//
// Clients:
//   ohif   public (token_endpoint_auth_method none), authorization code with PKCE (S256);
//          redirect URIs NODE_BASE_URL/callback and NODE_BASE_URL/silent-refresh.html
//          (OHIF 3.13's defaults), post-logout redirect NODE_BASE_URL/logout-redirect.html;
//          a refresh token with every access token (OHIF renews with it).
//   pacs-console  the node's web console: public, authorization code with PKCE (S256);
//          redirect URI NODE_BASE_URL/ui/callback; CORS for the node's origin, as ohif.
//   tests  confidential (secret `tests-secret`, HTTP Basic authentication), client
//          credentials only: a test without a browser asks for the roles it wants as scopes,
//            POST /token  grant_type=client_credentials&scope=viewer
//          and gets a JWT access token whose `roles` claim holds them (`sub` is `tests`).
//
// Users (login page /interaction/UID, fields `login` and `password`):
//   alice / alice-password   roles [viewer]
//   tara  / tara-password    roles [technologist]
//   adam  / adam-password    roles [admin]
//   bob   / bob-password     roles []
//
// Access tokens: RFC 9068 JWTs (header typ at+jwt), signed RS256 with the generated RSA key
// (or OIDC_ACCESS_TOKEN_ALG=ES256 / EdDSA), for the resource `urn:pacs` (the default one,
// audience `pacs`), with the claims iss, sub, aud, iat, exp, jti, client_id, scope,
// `roles` (the user's roles) and the same list as `realm_access.roles` (the Keycloak layout,
// for --oidc-roles-claim realm_access.roles). A token for the resource `urn:other` has the
// audience `other` (for tests of a foreign audience). Lifetime OIDC_ACCESS_TOKEN_TTL seconds
// (default 3600). Each HTTP request is logged on stdout.

import crypto from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import Provider, { errors } from 'oidc-provider';

/** Role names the pacs node knows; they double as the scopes the `tests` client may ask for. */
export const ROLES = ['viewer', 'technologist', 'radiologist', 'admin', 'ai-worker'];

export const USERS = {
  alice: { password: 'alice-password', name: 'Alice Viewer', roles: ['viewer'] },
  tara: { password: 'tara-password', name: 'Tara Technologist', roles: ['technologist'] },
  adam: { password: 'adam-password', name: 'Adam Admin', roles: ['admin'] },
  bob: { password: 'bob-password', name: 'Bob Nobody', roles: [] },
};

export const TEST_CLIENT = { id: 'tests', secret: 'tests-secret' };
export const VIEWER_CLIENT_ID = 'ohif';
// the node's web console (/ui), --console-oidc-client-id's default
export const CONSOLE_CLIENT_ID = 'pacs-console';

/** Resource indicator (RFC 8707) to audience: tokens for the node, and for somebody else. */
const RESOURCES = {
  'urn:pacs': 'pacs',
  'urn:other': 'other',
};
const DEFAULT_RESOURCE = 'urn:pacs';

function usage(message) {
  console.error(`${message}\nusage: node oidc-provider.mjs PORT NODE_BASE_URL`);
  process.exit(2);
}

/** One signing key per algorithm the node accepts; the access token algorithm comes first. */
function generateKeys(accessTokenAlg) {
  const pairs = {
    RS256: () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }),
    ES256: () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    EdDSA: () => crypto.generateKeyPairSync('ed25519'),
  };
  if (!(accessTokenAlg in pairs)) {
    usage(`OIDC_ACCESS_TOKEN_ALG must be one of ${Object.keys(pairs).join(', ')}, not ${accessTokenAlg}`);
  }
  // RS256 first in any case: ID tokens are signed with it (the OIDC default).
  return ['RS256', 'ES256', 'EdDSA'].map(alg => {
    const { privateKey } = pairs[alg]();
    const jwk = privateKey.export({ format: 'jwk' });
    return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}` };
  });
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, { login = '', error = '' } = {}) {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in (test identity provider)</title></head>
<body>
  <h1>Sign in</h1>
  <p>to <code>${escapeHtml(clientId)}</code></p>
  ${error ? `<p id="login-error" role="alert">${escapeHtml(error)}</p>` : ''}
  <form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
    <label>User <input name="login" id="login" value="${escapeHtml(login)}" autofocus></label>
    <label>Password <input name="password" id="password" type="password"></label>
    <button type="submit" id="sign-in">Sign in</button>
  </form>
</body>
</html>
`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) {
      throw new Error('form too large');
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

/**
 * The interaction pages: the login form and its submission; the consent prompt is answered
 * without a page (both clients are the operator's own), granting what was asked for.
 */
async function interaction(provider, req, res, url) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  const submitted = url.pathname === `/interaction/${uid}/login` && req.method === 'POST';

  if (prompt.name === 'login') {
    if (!submitted) {
      return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id));
    }
    const form = await readForm(req);
    const login = form.get('login') || '';
    const user = Object.hasOwn(USERS, login) ? USERS[login] : undefined;
    const password = Buffer.from(form.get('password') || '');
    const expected = Buffer.from(user ? user.password : '');
    if (!user || password.length !== expected.length || !crypto.timingSafeEqual(password, expected)) {
      console.log(`login refused for ${JSON.stringify(login)}`);
      return send(
        res,
        200,
        'text/html; charset=utf-8',
        loginPage(uid, params.client_id, { login, error: 'Unknown user or wrong password.' }),
      );
    }
    console.log(`login ${login}`);
    return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }

  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) {
      grant.addOIDCScope(missingOIDCScope.join(' '));
    }
    if (missingOIDCClaims) {
      grant.addOIDCClaims(missingOIDCClaims);
    }
    for (const [indicator, scopes] of Object.entries(missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  return send(res, 400, 'text/plain; charset=utf-8', `unexpected prompt ${prompt.name}`);
}

function configuration(nodeBase, { accessTokenAlg, accessTokenTTL }) {
  return {
    clients: [
      {
        client_id: VIEWER_CLIENT_ID,
        client_name: 'OHIF viewer served by the pacs node',
        application_type: 'web',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: [`${nodeBase}/callback`, `${nodeBase}/silent-refresh.html`],
        post_logout_redirect_uris: [`${nodeBase}/logout-redirect.html`],
      },
      {
        client_id: CONSOLE_CLIENT_ID,
        client_name: 'the pacs node\'s web console',
        application_type: 'web',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [`${nodeBase}/ui/callback`],
      },
      {
        client_id: TEST_CLIENT.id,
        client_secret: TEST_CLIENT.secret,
        client_name: 'tests without a browser',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: ROLES.join(' '),
      },
    ],
    clientAuthMethods: ['none', 'client_secret_basic'],
    // the viewer renews its access token with a refresh token (oidc-client-ts's silent renew
    // prefers it to a hidden iframe), without asking for offline_access
    async issueRefreshToken(_ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    jwks: { keys: generateKeys(accessTokenAlg) },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    pkce: { required: () => true },
    scopes: ['openid', 'profile', 'offline_access', ...ROLES],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
    },
    async findAccount(_ctx, id) {
      const user = Object.hasOwn(USERS, id) ? USERS[id] : undefined;
      if (!user) {
        return undefined;
      }
      return {
        accountId: id,
        async claims() {
          return { sub: id, name: user.name, preferred_username: id };
        },
      };
    },
    // The roles go into the access token, which is what the node reads.
    async extraTokenClaims(_ctx, token) {
      let roles;
      if (token.kind === 'ClientCredentials') {
        roles = (token.scope || '').split(' ').filter(s => ROLES.includes(s));
      } else if (token.accountId && Object.hasOwn(USERS, token.accountId)) {
        roles = USERS[token.accountId].roles;
      } else {
        return undefined;
      }
      const extra = { roles: [...roles], realm_access: { roles: [...roles] } };
      if (token.accountId) {
        extra.preferred_username = token.accountId;
      }
      return extra;
    },
    clientBasedCORS(_ctx, origin, client) {
      return [VIEWER_CLIENT_ID, CONSOLE_CLIENT_ID].includes(client.clientId) && origin === new URL(nodeBase).origin;
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        async defaultResource(_ctx, _client, oneOf) {
          return oneOf || DEFAULT_RESOURCE;
        },
        // the token request of the authorization code flow names no resource: use the granted one
        async useGrantedResource() {
          return true;
        },
        async getResourceServerInfo(_ctx, indicator) {
          if (!Object.hasOwn(RESOURCES, indicator)) {
            throw new errors.InvalidTarget();
          }
          return {
            audience: RESOURCES[indicator],
            scope: ROLES.join(' '),
            accessTokenFormat: 'jwt',
            accessTokenTTL,
            jwt: { sign: { alg: accessTokenAlg } },
          };
        },
      },
    },
    interactions: {
      url: (_ctx, i) => `/interaction/${i.uid}`,
    },
    ttl: {
      AccessToken: accessTokenTTL,
      ClientCredentials: accessTokenTTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>oidc-provider error</title><h1>${escapeHtml(out.error)}</h1><p>${escapeHtml(out.error_description || '')}</p>`;
    },
  };
}

async function main() {
  const [portText, nodeBaseText] = process.argv.slice(2);
  const port = Number(portText);
  if (!Number.isInteger(port) || port <= 0 || port > 65535 || !nodeBaseText) {
    usage('PORT and NODE_BASE_URL are required');
  }
  const nodeBase = new URL(nodeBaseText).href.replace(/\/+$/, '');
  const issuer = `http://127.0.0.1:${port}`;
  const accessTokenAlg = process.env.OIDC_ACCESS_TOKEN_ALG || 'RS256';
  const accessTokenTTL = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 3600);

  const provider = new Provider(issuer, configuration(nodeBase, { accessTokenAlg, accessTokenTTL }));
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'introspection.error', 'revocation.error']) {
    provider.on(event, (_ctx, err) => console.log(`${event}: ${err.name}: ${err.message} ${err.error_description || ''}`));
  }
  provider.on('grant.success', ctx => {
    const body = ctx.body || {};
    const token = typeof body.access_token === 'string' ? body.access_token : '';
    let claims = '';
    try {
      const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
      claims = ` sub=${payload.sub} aud=${payload.aud} roles=${JSON.stringify(payload.roles)}`;
    } catch {
      claims = ' (opaque access token)';
    }
    console.log(`token issued to ${ctx.oidc.client?.clientId}:${claims}`);
  });

  const handle = provider.callback();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, issuer);
    res.on('finish', () => console.log(`${req.method} ${url.pathname} ${res.statusCode}`));
    if (url.pathname.startsWith('/interaction/')) {
      interaction(provider, req, res, url).catch(err => {
        console.log(`interaction ${url.pathname}: ${err.name}: ${err.message}`);
        if (!res.headersSent) {
          send(res, err.statusCode || 500, 'text/plain; charset=utf-8', `${err.name}: ${err.message}\n`);
        }
      });
      return;
    }
    handle(req, res);
  });
  server.on('error', err => {
    console.error(`oidc-provider: cannot listen on 127.0.0.1:${port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, '127.0.0.1', () => {
    console.log(`oidc-provider ready ${issuer}`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
