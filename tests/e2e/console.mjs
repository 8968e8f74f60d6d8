// The web console (/ui) end to end: HTTP-level checks (status per page and identity, assets,
// the session cookie, admin APIs refused to a viewer), then headless Chromium logged in through
// the console's login form as an administrator, walking every page and doing each action once,
// and as a viewer, who must not see or reach the admin pages. Every action is checked by its
// effect, read back through the node's API, the DICOM receiver or the downloaded files.
//
// Set up by console.sh, which passes (environment):
//   E2E_CONSOLE_BASE             the node, http://127.0.0.1:PORT
//   E2E_CONSOLE_OIDC_ISSUER      its --oidc-issuer: oidc-provider.mjs, client pacs-console
//   E2E_CONSOLE_ADMIN_PASSWORD   local user `admin` (role admin)
//   E2E_CONSOLE_VIEWER_PASSWORD  local user `viewer` (role viewer)
//   E2E_CONSOLE_CT_DIR           the CT series stored with storescu as E2E-CT
//   E2E_CONSOLE_UPLOAD_FILE      a new series of that study, to upload through the study page
//   E2E_CONSOLE_TREND_DIRS       the three studies of the trend patient (':'-separated series dirs)
//   E2E_CONSOLE_TREND_VALUES     their lung volumes in mL ('100:120:150')
//   E2E_CONSOLE_TRACKING_UID     the reports' Tracking Unique Identifier
//   E2E_CONSOLE_JOB_ID           the CT series' AI job, cancelled (the console retries it)
//   E2E_CONSOLE_SCP_PORT         DCMTK storescp, AE E2E-SCP on 127.0.0.1
//   E2E_CONSOLE_SCP_DIR          where it writes what it receives
// Screenshots: E2E_ARTIFACTS/console-<page>.png; the browsers' log: console-browser.log.

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { openBrowser, pixelStats } from './browser.mjs';
import { TAG, artifactsDir, check, checkEqual, checkError, dicomFacts, dicomFiles, requireEnv, runChecks } from './lib.mjs';

const base = requireEnv('E2E_CONSOLE_BASE', 'the node under test, http://127.0.0.1:PORT').replace(/\/+$/, '');
const issuer = requireEnv('E2E_CONSOLE_OIDC_ISSUER', "the node's --oidc-issuer (oidc-provider.mjs)").replace(/\/+$/, '');
// oidc-provider.mjs's users (roles admin and viewer)
const OIDC_USERS = { adam: 'adam-password', alice: 'alice-password' };
const users = {
  admin: requireEnv('E2E_CONSOLE_ADMIN_PASSWORD', "local user admin's password"),
  viewer: requireEnv('E2E_CONSOLE_VIEWER_PASSWORD', "local user viewer's password"),
};
const ctDir = requireEnv('E2E_CONSOLE_CT_DIR', 'the CT series stored in the node');
const uploadFile = requireEnv('E2E_CONSOLE_UPLOAD_FILE', 'a DICOM file to upload');
const trendDirs = requireEnv('E2E_CONSOLE_TREND_DIRS', 'series dirs of the trend studies').split(':');
const trendValues = requireEnv('E2E_CONSOLE_TREND_VALUES', 'lung volumes').split(':').map(Number);
const trackingUid = requireEnv('E2E_CONSOLE_TRACKING_UID', 'the Tracking UID of the reports');
const jobId = requireEnv('E2E_CONSOLE_JOB_ID', 'the cancelled AI job');
const scpPort = Number(requireEnv('E2E_CONSOLE_SCP_PORT', 'the storescp port'));
const scpDir = requireEnv('E2E_CONSOLE_SCP_DIR', "storescp's output directory");
const artifacts = artifactsDir();
const SCP_AE = 'E2E-SCP';
const TIMEOUT = Number(process.env.E2E_CONSOLE_TIMEOUT_MS || 15000);

// --- what was stored (read from the files with dcmdump) -------------------------------------
const ctFacts = dicomFiles(ctDir).map(f =>
  dicomFacts(f, [TAG.SOPInstanceUID, TAG.StudyInstanceUID, TAG.SeriesInstanceUID, TAG.PatientID, TAG.PatientName]),
);
const ct = {
  study: ctFacts[0][TAG.StudyInstanceUID],
  series: ctFacts[0][TAG.SeriesInstanceUID],
  patient: ctFacts[0][TAG.PatientID],
  instances: ctFacts.map(f => f[TAG.SOPInstanceUID]),
};
const uploadFacts = dicomFacts(uploadFile, [TAG.SOPInstanceUID, TAG.SeriesInstanceUID, TAG.StudyInstanceUID]);
const upload = { sop: uploadFacts[TAG.SOPInstanceUID], series: uploadFacts[TAG.SeriesInstanceUID] };
const trend = trendDirs.map((dir, n) => {
  const f = dicomFacts(dicomFiles(dir)[0], [TAG.StudyInstanceUID, TAG.StudyDate, TAG.PatientID]);
  return { study: f[TAG.StudyInstanceUID], date: f[TAG.StudyDate], patient: f[TAG.PatientID], value: trendValues[n] };
});
const trendPatient = trend[0].patient;
const allStudies = [ct.study, ...trend.map(t => t.study)];

// --- HTTP -------------------------------------------------------------------------------------
const basic = name => 'Basic ' + Buffer.from(`${name}:${users[name]}`).toString('base64');

/**
 * One request to the node. `as`: 'admin' | 'viewer' (HTTP Basic), { bearer }, { cookie }, or
 * nothing (anonymous). Answers { status, headers, text, json }.
 */
async function http(pathname, { as, method = 'GET', headers = {}, body } = {}) {
  const h = { ...headers };
  if (as === 'admin' || as === 'viewer') {
    h.Authorization = basic(as);
  } else if (as && as.bearer) {
    h.Authorization = `Bearer ${as.bearer}`;
  } else if (as && as.cookie) {
    h.Cookie = as.cookie;
  }
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    body = JSON.stringify(body);
    h['Content-Type'] ||= 'application/json';
  }
  const res = await fetch(base + pathname, { method, headers: h, body, redirect: 'manual' });
  const buf = Buffer.from(await res.arrayBuffer());
  const text = buf.toString('utf8');
  return {
    status: res.status,
    headers: res.headers,
    text,
    buffer: buf,
    json() {
      try {
        return JSON.parse(text);
      } catch {
        throw checkError(`${method} ${pathname}: not JSON (HTTP ${res.status}): ${text.slice(0, 200)}`);
      }
    },
  };
}

/** The admin's view through the API: GET `pathname` as admin, 200 expected, parsed JSON. */
async function api(pathname, opts = {}) {
  const res = await http(pathname, { as: 'admin', ...opts });
  check(res.status >= 200 && res.status < 300, `${opts.method || 'GET'} ${pathname} as admin: HTTP ${res.status}: ${res.text.slice(0, 300)}`);
  return res.status === 204 ? null : res.json();
}

async function loginToken(name) {
  const res = await http('/api/login', { method: 'POST', body: { username: name, password: users[name] } });
  checkEqual(res.status, 200, 'POST /api/login status');
  return res.json().access_token;
}

// Every page of the console, with the permission its first path segment needs.
const PAGES = [
  ['/ui', 'any'],
  ['/ui/', 'any'],
  ['/ui/studies', 'read'],
  [`/ui/studies/${ct.study}`, 'read'],
  [`/ui/patients/${encodeURIComponent(trendPatient)}`, 'read'],
  ['/ui/aes', 'admin'],
  ['/ui/ai', 'admin'],
  ['/ui/audit', 'audit'],
  ['/ui/users', 'admin'],
  ['/ui/node', 'admin'],
];

function checkShell(res, what, status) {
  checkEqual(res.status, status, `${what}: status`);
  const type = res.headers.get('content-type') || '';
  check(type.startsWith('text/html'), `${what}: Content-Type ${type}, expected text/html`);
  check(res.text.includes('data-pacs-console'), `${what}: not the console's shell (no data-pacs-console)`);
}

function checkShellHeaders(res, what) {
  const csp = res.headers.get('content-security-policy') || '';
  for (const part of ["default-src 'self'", "img-src 'self' data: blob:", "style-src 'self' 'unsafe-inline'", `connect-src 'self' ${issuer}`, "frame-ancestors 'none'"]) {
    check(csp.includes(part), `${what}: Content-Security-Policy lacks "${part}": ${csp}`);
  }
  checkEqual(res.headers.get('x-content-type-options'), 'nosniff', `${what}: X-Content-Type-Options`);
}

/** `name=value` of a Set-Cookie header and its attributes, lower-cased names. */
function parseSetCookie(header) {
  const [pair, ...attrs] = header.split(';').map(s => s.trim());
  const eq = pair.indexOf('=');
  const cookie = { name: pair.slice(0, eq), value: pair.slice(eq + 1), attrs: {} };
  for (const a of attrs) {
    const i = a.indexOf('=');
    cookie.attrs[(i < 0 ? a : a.slice(0, i)).toLowerCase()] = i < 0 ? true : a.slice(i + 1);
  }
  return cookie;
}

function sessionCookie(res) {
  const all = res.headers.getSetCookie ? res.headers.getSetCookie() : [res.headers.get('set-cookie')].filter(Boolean);
  const found = all.map(parseSetCookie).find(c => c.name === 'pacs_session');
  check(found, `no pacs_session cookie set (Set-Cookie: ${JSON.stringify(all)})`);
  return found;
}

const ADMIN_APIS = [
  ['GET', '/api/aes'],
  ['GET', '/api/aes/refused?hours=24'],
  ['GET', '/api/ai/models'],
  ['GET', '/api/ai/routes'],
  ['GET', '/api/ai/jobs'],
  ['GET', '/api/users'],
  ['GET', '/api/keys'],
  ['GET', '/api/nodes'],
  ['GET', '/api/audit'],
  ['POST', '/api/audit/verify'],
];

const httpChecks = [
  [
    'http: every page answers the shell with 200 to admin over HTTP Basic, with CSP and nosniff',
    async () => {
      for (const [p] of PAGES) {
        const res = await http(p, { as: 'admin' });
        checkShell(res, `GET ${p} as admin (Basic)`, 200);
        checkShellHeaders(res, `GET ${p}`);
      }
    },
  ],
  [
    'http: every page answers 200 to admin with a login token (Bearer from /api/login)',
    async () => {
      const token = await loginToken('admin');
      for (const [p] of PAGES) {
        checkShell(await http(p, { as: { bearer: token } }), `GET ${p} as admin (login token)`, 200);
      }
    },
  ],
  [
    'http: anonymous gets the shell with 401 and no WWW-Authenticate (no browser dialog)',
    async () => {
      for (const [p] of PAGES) {
        const res = await http(p);
        checkShell(res, `GET ${p} anonymous`, 401);
        checkEqual(res.headers.get('www-authenticate'), null, `GET ${p} anonymous: WWW-Authenticate`);
      }
      const bad = await http('/ui/studies', { headers: { Authorization: 'Basic ' + Buffer.from('admin:wrong').toString('base64') } });
      checkEqual(bad.status, 401, 'GET /ui/studies with a wrong password: status');
    },
  ],
  [
    'http: viewer gets 200 on home, studies and patients, 403 on the admin and audit pages',
    async () => {
      for (const [p, need] of PAGES) {
        const expected = need === 'any' || need === 'read' ? 200 : 403;
        checkShell(await http(p, { as: 'viewer' }), `GET ${p} as viewer`, expected);
      }
    },
  ],
  [
    'http: /ui/login and /ui/callback are public, an unknown page is 404',
    async () => {
      checkShell(await http('/ui/login'), 'GET /ui/login anonymous', 200);
      checkShell(await http('/ui/callback'), 'GET /ui/callback anonymous', 200);
      checkShell(await http('/ui/no-such-page', { as: 'admin' }), 'GET /ui/no-such-page as admin', 404);
    },
  ],
  [
    'http: assets are public, typed, with ETag and Cache-Control no-cache; unknown asset 404',
    async () => {
      const assets = [
        ['/ui/assets/app.js', /javascript/],
        ['/ui/assets/api.js', /javascript/],
        ['/ui/assets/pages/aes.js', /javascript/],
        ['/ui/assets/style.css', /^text\/css/],
        ['/ui/assets/vendor/uPlot.iife.min.js', /javascript/],
        ['/ui/assets/vendor/uPlot.min.css', /^text\/css/],
      ];
      for (const [p, type] of assets) {
        const res = await http(p);
        checkEqual(res.status, 200, `GET ${p} anonymous: status`);
        check(type.test(res.headers.get('content-type') || ''), `GET ${p}: Content-Type ${res.headers.get('content-type')}`);
        check(res.headers.get('etag'), `GET ${p}: no ETag`);
        check(/no-cache/.test(res.headers.get('cache-control') || ''), `GET ${p}: Cache-Control ${res.headers.get('cache-control')}`);
        check(res.buffer.length > 0, `GET ${p}: empty`);
      }
      const shell = await http('/ui/', { as: 'admin' });
      for (const asset of ['/ui/assets/style.css', '/ui/assets/vendor/uPlot.min.css', '/ui/assets/vendor/uPlot.iife.min.js', '/ui/assets/app.js']) {
        check(shell.text.includes(asset), `the shell does not load ${asset}`);
      }
      checkEqual((await http('/ui/assets/no-such-file.js')).status, 404, 'GET /ui/assets/no-such-file.js: status');
    },
  ],
  [
    'http: /ui/config.json is public (OIDC issuer and client, DICOMweb root, viewer, version)',
    async () => {
      const res = await http('/ui/config.json');
      checkEqual(res.status, 200, 'GET /ui/config.json: status');
      const c = res.json();
      checkEqual(c.oidc?.issuer, issuer, 'config.oidc.issuer');
      checkEqual(c.oidc?.client_id, 'pacs-console', 'config.oidc.client_id (the default)');
      check(typeof c.oidc?.scope === 'string' && c.oidc.scope.split(' ').includes('openid'), `config.oidc.scope: ${JSON.stringify(c.oidc)}`);
      checkEqual(c.dicomweb, '/dicom-web', 'config.dicomweb');
      checkEqual(c.viewer, '/', 'config.viewer (the node has --viewer-dir)');
      check(typeof c.version === 'string' && c.version.length > 0, `config.version: ${JSON.stringify(c.version)}`);
    },
  ],
  [
    'http: the admin and audit APIs answer 403 to the viewer, 200 to admin',
    async () => {
      for (const [method, p] of ADMIN_APIS) {
        const v = await http(p, { as: 'viewer', method });
        checkEqual(v.status, 403, `${method} ${p} as viewer: status`);
        check(v.json().error, `${method} ${p} as viewer: no JSON error`);
        const a = await http(p, { as: 'admin', method });
        checkEqual(a.status, 200, `${method} ${p} as admin: status (${a.text.slice(0, 200)})`);
      }
    },
  ],
  [
    'http: session cookie: POST /ui/session, cookie credential, CSRF header, DELETE ends it',
    async () => {
      const bad = await http('/ui/session', { method: 'POST', body: { username: 'admin', password: 'wrong' } });
      checkEqual(bad.status, 401, 'POST /ui/session with a wrong password: status');
      check(bad.json().error, 'POST /ui/session with a wrong password: no JSON error');

      const res = await http('/ui/session', { method: 'POST', body: { username: 'admin', password: users.admin } });
      checkEqual(res.status, 200, 'POST /ui/session: status');
      const s = res.json();
      checkEqual(s.principal, 'user:admin', 'session principal');
      check(Array.isArray(s.permissions) && s.permissions.includes('admin'), `session permissions: ${JSON.stringify(s.permissions)}`);
      check(s.expires_in > 0, `expires_in: ${s.expires_in}`);
      const c = sessionCookie(res);
      check(c.attrs.httponly, 'pacs_session: not HttpOnly');
      checkEqual(String(c.attrs.samesite).toLowerCase(), 'strict', 'pacs_session SameSite');
      checkEqual(c.attrs.path, '/', 'pacs_session Path');
      checkEqual(Number(c.attrs['max-age']), s.expires_in, 'pacs_session Max-Age');
      check(!c.attrs.secure, 'pacs_session is Secure over plain HTTP (the browser would drop it)');
      const cookie = `pacs_session=${c.value}`;

      checkEqual((await http('/api/whoami', { as: { cookie } })).json().principal, 'user:admin', 'whoami with the cookie');
      checkEqual((await http('/ui/aes', { as: { cookie } })).status, 200, 'GET /ui/aes with the cookie');
      // a cookie alone must not authorise a state change (CSRF)
      // (an AE without a title: the handler refuses it with 400, changing nothing)
      const csrf = await http('/api/aes', { as: { cookie }, method: 'POST', body: {} });
      checkEqual(csrf.status, 403, 'POST /api/aes with the cookie, without X-PACS-Console');
      check(csrf.json().error, 'the CSRF refusal has no JSON error');
      const ok = await http('/api/aes', { as: { cookie }, method: 'POST', body: {}, headers: { 'X-PACS-Console': '1' } });
      checkEqual(ok.status, 400, 'POST /api/aes {} with the cookie and X-PACS-Console: 1 (reaches the handler)');

      const del = await http('/ui/session', { as: { cookie }, method: 'DELETE', headers: { 'X-PACS-Console': '1' } });
      checkEqual(del.status, 204, 'DELETE /ui/session: status');
      checkEqual(Number(sessionCookie(del).attrs['max-age']), 0, 'DELETE /ui/session: cookie Max-Age');
      const after = await http('/api/whoami', { as: { cookie } });
      check(
        after.status === 401 || (after.status === 200 && after.json().principal !== 'user:admin'),
        `the ended session still works: whoami HTTP ${after.status} ${after.text.slice(0, 200)}`,
      );
      checkEqual((await http('/ui/aes', { as: { cookie } })).status, 401, 'GET /ui/aes with the ended cookie');

      const viewer = await http('/ui/session', { method: 'POST', headers: { Authorization: basic('viewer') } });
      checkEqual(viewer.status, 200, 'POST /ui/session with HTTP Basic (viewer): status');
      checkEqual(JSON.stringify(viewer.json().permissions), '["read"]', 'viewer session permissions');
    },
  ],
];

// --- the browser ------------------------------------------------------------------------------
const logFile = path.join(artifacts, 'console-browser.log');
fs.writeFileSync(logFile, '');
const note = line => fs.appendFileSync(logFile, `${new Date().toISOString()} ${line}\n`);
const shots = [];

async function shot(page, name) {
  const file = path.join(artifacts, `console-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  shots.push(file);
  return file;
}

/** A browser session; `errors` collects uncaught page errors. */
async function browser(who) {
  const errors = [];
  const session = await openBrowser({
    origins: [base, issuer],
    root: `${base}/dicom-web`,
    note: line => {
      note(`[${who}] ${line}`);
      if (line.startsWith('[pageerror]')) {
        errors.push(line);
      }
    },
  });
  session.errors = errors;
  session.page.setDefaultTimeout(TIMEOUT);
  return session;
}

async function waitPage(page, name) {
  try {
    await page.locator(`main[data-page="${name}"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
  } catch {
    const shown = await page.locator('main[data-page]').getAttribute('data-page', { timeout: 1000 }).catch(() => 'none');
    throw checkError(`main[data-page="${name}"] not shown at ${page.url()} (shown: ${shown})`);
  }
}

/** No API error shown, no script error raised since the last call. */
async function healthy(session, where) {
  const shown = await session.page.locator('[data-role="error"]:visible').allInnerTexts();
  const texts = shown.map(t => t.trim()).filter(Boolean);
  check(texts.length === 0, `${where}: the page shows an error: ${texts.join(' | ')}`);
  const errors = session.errors.splice(0);
  check(errors.length === 0, `${where}: script errors: ${errors.join('\n')}`);
}

/** Fills a form field by name whatever it is (input, select). */
async function fill(form, name, value) {
  const field = form.locator(`[name="${name}"]`).first();
  const tag = await field.evaluate(e => e.tagName.toLowerCase());
  if (tag === 'select') {
    await field.selectOption(String(value));
  } else {
    await field.fill(String(value));
  }
}

async function submit(form) {
  const button = form.locator('button[type="submit"], input[type="submit"], button:not([type])').first();
  if (await button.count()) {
    await button.click();
  } else {
    await form.evaluate(f => f.requestSubmit());
  }
}

async function until(what, fn, timeoutMs = TIMEOUT) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) {
      return last;
    }
    if (Date.now() > deadline) {
      throw checkError(`${what}: not within ${timeoutMs} ms (last: ${last.detail})`);
    }
    await new Promise(r => setTimeout(r, 250));
  }
}

async function login(session, name) {
  const { page } = session;
  const res = await page.goto(`${base}/ui/`);
  checkEqual(res.status(), 401, 'GET /ui/ before logging in: status');
  await waitPage(page, 'login');
  const form = page.locator('form[data-form="login"]');
  // the page may be attached before its last render: wait for the button, then count it
  await page.locator('button[data-action="login-oidc"]').first().waitFor({ state: 'visible', timeout: 10000 }).catch(() => {});
  checkEqual(await page.locator('button[data-action="login-oidc"]').count(), 1, 'the OIDC button (the node has --oidc-issuer)');
  await shot(page, name === 'admin' ? 'login' : 'viewer-login');
  await form.locator('input[name="username"]').fill(name);
  await form.locator('input[name="password"]').fill(users[name]);
  await submit(form);
  await waitPage(page, 'home');
  await page.locator('[data-user]').filter({ hasText: name }).first().waitFor();
  const cookies = await session.context.cookies(base);
  const c = cookies.find(x => x.name === 'pacs_session');
  check(c, `no pacs_session cookie after logging in (cookies: ${cookies.map(x => x.name).join(', ')})`);
  check(c.httpOnly, 'pacs_session is not HttpOnly');
  checkEqual(c.sameSite, 'Strict', 'pacs_session SameSite');
  // the cookie is the session: the node names the user on it
  const who = await page.evaluate(async () => (await fetch('/api/whoami')).json());
  checkEqual(who.principal, `user:${name}`, 'whoami from the page');
}

const NAV = ['studies', 'aes', 'ai', 'audit', 'users', 'node'];

async function navTo(page, name) {
  await page.locator(`nav a[data-nav="${name}"]`).click();
  await waitPage(page, name);
  checkEqual(new URL(page.url()).pathname, `/ui/${name}`, `URL after following the ${name} link`);
}

async function rowTexts(locator) {
  return (await locator.allInnerTexts()).map(t => t.replace(/\s+/g, ' ').trim());
}

function unzipList(zip) {
  const out = spawnSync('unzip', ['-Z1', zip], { encoding: 'utf8' });
  check(out.status === 0, `unzip -Z1 ${zip}: ${out.stderr}`);
  return out.stdout.split('\n').filter(Boolean);
}

function receivedByScp() {
  return fs
    .readdirSync(scpDir)
    .map(f => path.join(scpDir, f))
    .filter(f => fs.statSync(f).isFile())
    .map(f => dicomFacts(f, [TAG.SOPInstanceUID, TAG.StudyInstanceUID])[TAG.SOPInstanceUID]);
}

let admin;
let viewer;
let exported;
const sha256 = buf => crypto.createHash('sha256').update(buf).digest('hex');
const studyInstances = [...ct.instances, upload.sop].sort();

const adminChecks = [
  [
    'admin: logs in through the login form; nav shows every page',
    async () => {
      admin = await browser('admin');
      await login(admin, 'admin');
      const { page } = admin;
      for (const name of NAV) {
        checkEqual(await page.locator(`nav a[data-nav="${name}"]`).count(), 1, `nav link ${name}`);
      }
      check(await page.locator('button[data-action="logout"]').isVisible(), 'no logout button');
      await shot(page, 'home');
      await healthy(admin, 'home');
    },
    { fatal: true },
  ],
  [
    'admin: studies: two pages of 25, search by patient ID, date range and modality (QIDO-RS)',
    async () => {
      const { page } = admin;
      const qido = [];
      const onRequest = req => {
        const u = new URL(req.url());
        if (u.pathname === '/dicom-web/studies' && req.method() === 'GET') {
          qido.push(u);
        }
      };
      page.on('request', onRequest);
      const uidsShown = () => page.locator('table[data-table="studies"] tr[data-study-uid]').evaluateAll(rs => rs.map(r => r.dataset.studyUid));
      const same = (a, b) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
      try {
        const everything = (await api('/dicom-web/studies?limit=1000')).map(s => s['0020000D'].Value[0]);
        check(everything.length === 30 && allStudies.every(u => everything.includes(u)), `QIDO-RS: ${everything.length} studies, expected 30`);
        await navTo(page, 'studies');
        const first = await until('a first page of 25', async () => {
          const uids = await uidsShown();
          return { ok: uids.length === 25, detail: `${uids.length} rows`, uids };
        });
        const info = page.locator('[data-role="page-info"]');
        check((await info.innerText()).trim(), 'no page info on the first page');
        check(await page.locator('button[data-action="prev-page"]').isDisabled(), 'prev-page enabled on the first page');
        await shot(page, 'studies');
        await page.locator('button[data-action="next-page"]').click();
        const second = await until('a second page of 5', async () => {
          const uids = await uidsShown();
          return { ok: uids.length === 5, detail: `${uids.length} rows`, uids };
        });
        check(same([...first.uids, ...second.uids], everything), 'the two pages do not hold every study once');
        check(qido.some(u => u.searchParams.get('offset') === '25'), `no QIDO request with offset=25: ${qido.map(u => u.search).join(' ')}`);
        await page.locator('button[data-action="prev-page"]').click();
        await until('the first page again', async () => {
          const uids = await uidsShown();
          return { ok: same(uids, first.uids), detail: `${uids.length} rows` };
        });

        const form = page.locator('form[data-form="study-search"]');
        await fill(form, 'PatientID', trendPatient);
        await submit(form);
        await until("the trend patient's 3 studies", async () => {
          const uids = await uidsShown();
          return { ok: same(uids, trend.map(t => t.study)), detail: JSON.stringify(uids) };
        });
        check(qido.some(u => u.searchParams.get('PatientID') === trendPatient), 'no QIDO request with PatientID');
        // 2023-07-01..2023-12-31 holds the second visit only
        const form2 = page.locator('form[data-form="study-search"]');
        await fill(form2, 'StudyDateFrom', '2023-07-01');
        await fill(form2, 'StudyDateTo', '2023-12-31');
        await submit(form2);
        await until('the second visit alone', async () => {
          const uids = await uidsShown();
          return { ok: uids.length === 1 && uids[0] === trend[1].study, detail: JSON.stringify(uids) };
        });
        check(
          qido.some(u => u.searchParams.get('StudyDate') === '20230701-20231231'),
          `no QIDO request with StudyDate=20230701-20231231: ${qido.map(u => u.search).join(' ')}`,
        );
        const form3 = page.locator('form[data-form="study-search"]');
        for (const f of ['PatientID', 'StudyDateFrom', 'StudyDateTo']) {
          await fill(form3, f, '');
        }
        await fill(form3, 'ModalitiesInStudy', 'CT');
        await submit(form3);
        await until('the 4 CT studies', async () => {
          const uids = await uidsShown();
          return { ok: same(uids, allStudies), detail: JSON.stringify(uids) };
        });
        await healthy(admin, 'studies');
      } finally {
        page.off('request', onRequest);
      }
    },
  ],
  [
    'admin: AEs: add the storescp through the form (read back from /api/aes)',
    async () => {
      const { page } = admin;
      await navTo(page, 'aes');
      await page.locator('table[data-table="aes"]').waitFor();
      // the association console.sh had refused, as /api/aes/refused groups it
      const refused = (await api('/api/aes/refused?hours=24')).filter(r => r.calling_ae === 'E2E-ELSEWHERE');
      check(refused.length === 1 && refused[0].count >= 1 && refused[0].reason, `/api/aes/refused for E2E-ELSEWHERE: ${JSON.stringify(refused)}`);
      const refusedRow = page.locator('table[data-table="refused"] tr').filter({ hasText: 'E2E-ELSEWHERE' });
      await refusedRow.first().waitFor();
      const refusedText = (await refusedRow.first().innerText()).replace(/\s+/g, ' ');
      check(refusedText.includes(refused[0].reason) && refusedText.includes(String(refused[0].count)), `the refused row: ${refusedText} (API: ${JSON.stringify(refused[0])})`);
      await page.locator('button[data-action="add-ae"]').click();
      const form = page.locator('form[data-form="ae"]');
      await form.waitFor({ state: 'visible' });
      await fill(form, 'title', SCP_AE);
      await fill(form, 'host', '127.0.0.1');
      await fill(form, 'port', scpPort);
      await submit(form);
      await page.locator(`table[data-table="aes"] tr[data-ae="${SCP_AE}"]`).waitFor();
      const ae = await api(`/api/aes/${SCP_AE}`);
      checkEqual(ae.title, SCP_AE, 'the AE title');
      checkEqual(ae.host, '127.0.0.1', 'the AE host');
      checkEqual(ae.port, scpPort, 'the AE port');
      await healthy(admin, 'aes after adding');
    },
  ],
  [
    'admin: AEs: C-ECHO the storescp shows success and the round-trip time',
    async () => {
      const { page } = admin;
      const row = page.locator(`tr[data-ae="${SCP_AE}"]`);
      const before = fs.readFileSync(path.join(artifacts, 'console-storescp.log'), 'utf8').split('Received Echo Request').length;
      await row.locator('[data-action="echo"]').click();
      const result = row.locator('[data-result="echo"]');
      const { detail } = await until('the echo result', async () => {
        const text = (await result.innerText()).trim();
        return { ok: /success/i.test(text) && /\d+(\.\d+)?\s*ms/.test(text), detail: text };
      });
      note(`echo result: ${detail}`);
      const after = fs.readFileSync(path.join(artifacts, 'console-storescp.log'), 'utf8').split('Received Echo Request').length;
      check(after > before, 'storescp logged no new Echo Request');
    },
  ],
  [
    'admin: AEs: a refused change shows the node\'s error; edit and delete (in-page confirm)',
    async () => {
      const { page } = admin;
      // the same title again: the node refuses, the page says why
      await page.locator('button[data-action="add-ae"]').click();
      let form = page.locator('form[data-form="ae"]');
      await form.waitFor({ state: 'visible' });
      await fill(form, 'title', SCP_AE);
      await fill(form, 'host', '127.0.0.1');
      await fill(form, 'port', scpPort);
      await submit(form);
      const error = page.locator('[data-role="error"]:visible');
      await error.first().waitFor();
      check((await error.first().innerText()).trim().length > 0, 'the error element is empty');
      await page.goto(`${base}/ui/aes`);
      await waitPage(page, 'aes');

      await page.locator('button[data-action="add-ae"]').click();
      form = page.locator('form[data-form="ae"]');
      await form.waitFor({ state: 'visible' });
      await fill(form, 'title', 'E2E-TMP');
      await fill(form, 'host', '127.0.0.1');
      await fill(form, 'port', 104);
      await submit(form);
      const row = page.locator('tr[data-ae="E2E-TMP"]');
      await row.waitFor();
      checkEqual((await api('/api/aes/E2E-TMP')).port, 104, 'E2E-TMP port');
      await row.locator('[data-action="edit"]').click();
      form = page.locator('form[data-form="ae"]');
      await form.waitFor({ state: 'visible' });
      checkEqual(await form.locator('[name="host"]').inputValue(), '127.0.0.1', 'the edit form shows the host');
      await fill(form, 'port', 11113);
      await submit(form);
      await until('E2E-TMP saved with port 11113', async () => {
        const ae = await api('/api/aes/E2E-TMP');
        return { ok: ae.port === 11113, detail: JSON.stringify(ae) };
      });
      await shot(page, 'aes');
      let dialogs = 0;
      const onDialog = d => {
        dialogs += 1;
        d.dismiss();
      };
      page.on('dialog', onDialog);
      try {
        await page.locator('tr[data-ae="E2E-TMP"] [data-action="delete"]').click();
        await page.locator('button[data-action="confirm"]').click();
        await page.locator('tr[data-ae="E2E-TMP"]').waitFor({ state: 'detached' });
      } finally {
        page.off('dialog', onDialog);
      }
      checkEqual(dialogs, 0, 'window dialogs (the confirm must be in the page)');
      checkEqual((await http('/api/aes/E2E-TMP', { as: 'admin' })).status, 404, 'GET /api/aes/E2E-TMP after deleting');
      checkEqual((await api(`/api/aes/${SCP_AE}`)).title, SCP_AE, `${SCP_AE} is still there`);
      await healthy(admin, 'aes');
    },
  ],
  [
    'admin: study page: series with a thumbnail, OHIF, download and patient links, AI jobs',
    async () => {
      const { page } = admin;
      await navTo(page, 'studies');
      const search = page.locator('form[data-form="study-search"]');
      await fill(search, 'PatientID', ct.patient);
      await submit(search);
      const row = page.locator(`table[data-table="studies"] tr[data-study-uid="${ct.study}"]`);
      await row.click();
      await waitPage(page, 'study');
      checkEqual(new URL(page.url()).pathname, `/ui/studies/${ct.study}`, 'URL of the study page');
      const series = page.locator(`table[data-table="series"] tr[data-series-uid="${ct.series}"]`);
      await series.waitFor();
      const thumb = series.locator('img[data-thumbnail]');
      await thumb.scrollIntoViewIfNeeded();
      await until('the thumbnail loaded', async () => {
        const w = await thumb.evaluate(i => (i.complete ? i.naturalWidth : 0)).catch(() => 0);
        return { ok: w > 0, detail: `naturalWidth ${w}` };
      });
      const src = await thumb.getAttribute('src');
      check(src && src.includes(`/studies/${ct.study}/series/${ct.series}`) && src.includes('thumbnail'), `thumbnail src ${src}`);
      const ohif = await page.locator('a[data-action="open-ohif"]').getAttribute('href');
      const ohifUrl = new URL(ohif, base);
      checkEqual(ohifUrl.pathname, '/viewer', 'OHIF link path');
      checkEqual(ohifUrl.searchParams.get('StudyInstanceUIDs'), ct.study, 'OHIF link study');
      const download = new URL(await page.locator('a[data-action="download"]').getAttribute('href'), base);
      checkEqual(download.pathname, `/dicom-web/studies/${ct.study}`, 'download link');
      const patient = await page.locator('a[data-nav="patient"]').getAttribute('href');
      checkEqual(patient, `/ui/patients/${encodeURIComponent(ct.patient)}`, 'patient link');
      check(await page.locator('[data-section="ai-results"]').count(), 'no [data-section=ai-results]');
      await page.locator(`table[data-table="jobs"] tr[data-job-id="${jobId}"]`).first().waitFor();
      await shot(page, 'study');
      await healthy(admin, 'study');
    },
  ],
  [
    'admin: study page: upload a file with STOW-RS progress (stored in the study)',
    async () => {
      const { page } = admin;
      const stow = page.waitForRequest(r => r.method() === 'POST' && new URL(r.url()).pathname.startsWith('/dicom-web/studies'), { timeout: TIMEOUT });
      await page.locator('input[type="file"][data-input="upload"]').setInputFiles(uploadFile);
      await stow;
      const progress = page.locator('[data-progress="upload"]');
      await until('upload progress complete', async () => {
        const p = await progress.evaluate(e => ({ value: e.value, max: e.max }));
        return { ok: p.max > 0 && p.value >= p.max, detail: JSON.stringify(p) };
      });
      await until('an upload result', async () => {
        const t = (await page.locator('[data-result="upload"]').innerText()).trim();
        return { ok: t.length > 0, detail: t };
      });
      const found = await api(`/dicom-web/studies/${ct.study}/series/${upload.series}/instances`);
      checkEqual(found.length, 1, 'instances of the uploaded series (QIDO-RS)');
      checkEqual(found[0]['00080018'].Value[0], upload.sop, 'the uploaded SOP Instance UID');
      await healthy(admin, 'study after upload');
    },
  ],
  [
    `admin: study page: send the study to ${SCP_AE}, per-instance results (storescp received them)`,
    async () => {
      const { page } = admin;
      await page.reload();
      await waitPage(page, 'study');
      await page.locator(`select[data-input="send-ae"] option[value="${SCP_AE}"]`).waitFor({ state: 'attached' });
      await page.locator('select[data-input="send-ae"]').selectOption(SCP_AE);
      await page.locator('button[data-action="send"]').click();
      // a row per instance, naming it (in its text or, shortened, in a title) with its result
      const rows = page.locator('table[data-table="send-results"] tbody tr');
      const named = async () => {
        const all = await rows.evaluateAll(rs => rs.map(r => ({ html: r.outerHTML, text: r.innerText.replace(/\s+/g, ' ') })));
        return studyInstances.map(uid => [uid, all.find(r => r.html.includes(uid))]);
      };
      await until('a result row per instance', async () => {
        const found = (await named()).filter(([, r]) => r);
        return { ok: found.length === studyInstances.length && (await rows.count()) === studyInstances.length, detail: `${found.length} of ${studyInstances.length} instances in ${await rows.count()} rows` };
      }, 60000);
      for (const [uid, r] of await named()) {
        check(/completed|success|stored/i.test(r.text) && !/fail/i.test(r.text), `send result of ${uid}: ${r.text}`);
      }
      check(await page.locator('[data-progress="send"]').count(), 'no [data-progress=send]');
      const received = receivedByScp().sort();
      checkEqual(JSON.stringify(received), JSON.stringify(studyInstances), 'SOP Instance UIDs storescp received');
      await healthy(admin, 'study after send');
    },
  ],
  [
    'admin: study page: de-identified export with an option, progress to the end (the job and its ZIP checked)',
    async () => {
      const { page } = admin;
      const form = page.locator('form[data-form="export"]');
      const boxes = form.locator('input[type="checkbox"]');
      check((await boxes.count()) >= 7, `${await boxes.count()} option checkboxes, expected the 7 options of the export API`);
      const option = form
        .locator('input[type="checkbox"][name="retain_longitudinal_modified_dates"], input[type="checkbox"][value="retain_longitudinal_modified_dates"]')
        .first();
      check(await option.count(), 'no checkbox named or valued retain_longitudinal_modified_dates');
      await option.check();
      const before = new Set((await api('/api/exports')).map(e => e.id));
      await page.locator('button[data-action="export"]').click();
      const link = page.locator('a[data-action="download-export"]');
      await link.waitFor({ state: 'visible', timeout: 60000 });
      const p = await page.locator('[data-progress="export"]').evaluate(e => ({ value: e.value, max: e.max }));
      check(p.max > 0 && p.value >= p.max, `export progress at the end: ${JSON.stringify(p)}`);
      const exports = (await api('/api/exports')).filter(e => !before.has(e.id));
      checkEqual(exports.length, 1, 'new exports');
      const job = exports[0];
      checkEqual(job.state, 'succeeded', 'export state');
      checkEqual(job.instances_done, studyInstances.length, 'instances exported');
      check(job.request?.options?.retain_longitudinal_modified_dates === true, `the option was not sent: ${JSON.stringify(job.request)}`);
      const href = new URL(await link.getAttribute('href'), base);
      checkEqual(href.pathname, `/api/exports/${job.id}/archive`, 'the download link');
      // the archive as the API serves it (uncompressed: see the download check)
      const res = await http(href.pathname, { as: 'admin', headers: { 'Accept-Encoding': 'identity' } });
      checkEqual(res.status, 200, `GET ${href.pathname}`);
      const zip = path.join(artifacts, 'console-export.zip');
      fs.writeFileSync(zip, res.buffer);
      exported = { id: job.id, sha256: sha256(res.buffer), bytes: res.buffer.length };
      const entries = unzipList(zip).filter(e => e.endsWith('.dcm'));
      checkEqual(entries.length, studyInstances.length, 'files in the exported ZIP');
      const dir = fs.mkdtempSync(path.join(artifacts, 'console-export-'));
      try {
        const x = spawnSync('unzip', ['-q', zip, '-d', dir], { encoding: 'utf8' });
        check(x.status === 0, `unzip ${zip}: ${x.stderr}`);
        const sops = [];
        for (const entry of entries) {
          const f = dicomFacts(path.join(dir, entry), ['0012,0062', '0028,0303', TAG.PatientID, TAG.StudyInstanceUID, TAG.SOPInstanceUID]);
          checkEqual(f['0012,0062'], 'YES', `${entry}: Patient Identity Removed`);
          checkEqual(f['0028,0303'], 'MODIFIED', `${entry}: Longitudinal Temporal Information Modified (the option)`);
          check(f[TAG.PatientID] !== ct.patient && /^PSN/.test(f[TAG.PatientID]), `${entry}: exported Patient ID ${f[TAG.PatientID]}`);
          check(f[TAG.StudyInstanceUID] !== ct.study, `${entry}: the Study Instance UID was kept`);
          sops.push(f[TAG.SOPInstanceUID]);
        }
        check(!sops.some(uid => studyInstances.includes(uid)), 'an exported SOP Instance UID was kept');
        checkEqual(new Set(sops).size, studyInstances.length, 'distinct exported SOP Instance UIDs');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      await shot(page, 'study-actions');
      await healthy(admin, 'study after export');
    },
  ],
  [
    'admin: study page: the export\'s download link saves that ZIP',
    async () => {
      const { page } = admin;
      check(exported, 'no export to download (the check before failed)');
      const link = page.locator('a[data-action="download-export"]');
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      const file = path.join(artifacts, 'console-export-download.zip');
      try {
        await download.saveAs(file);
      } catch (err) {
        throw checkError(`the browser's download of /api/exports/${exported.id}/archive failed (${err.message}; ${download.url()}); see console-node.log`);
      }
      const got = fs.readFileSync(file);
      checkEqual(got.length, exported.bytes, 'bytes downloaded');
      checkEqual(sha256(got), exported.sha256, 'SHA-256 of the download');
    },
  ],
  [
    'admin: patient page (from a study\'s patient link): trend chart and table of 3 points with changes',
    async () => {
      const { page } = admin;
      await page.goto(`${base}/ui/studies/${trend[0].study}`);
      await waitPage(page, 'study');
      // its measurement report is listed among the study's results
      await page.locator('[data-section="ai-results"] tr[data-ai-result="SR"]').waitFor();
      await page.locator('a[data-nav="patient"]').click();
      await waitPage(page, 'patient');
      checkEqual(new URL(page.url()).pathname, `/ui/patients/${encodeURIComponent(trendPatient)}`, 'URL of the patient page');
      const charts = page.locator('[data-chart="trend"]');
      const chart = page.locator(`[data-chart="trend"][data-tracking-uid="${trackingUid}"]`);
      await chart.waitFor();
      checkEqual(await charts.count(), 1, 'trend charts (one track)');
      await chart.locator('canvas').first().waitFor();
      const stats = await pixelStats(page, { selector: `[data-chart="trend"][data-tracking-uid="${trackingUid}"] canvas` });
      check(stats && stats.distinctColours >= 3, `the trend canvas looks empty: ${JSON.stringify(stats)}`);
      const rows = page.locator('table[data-table="measurements"] tr[data-point]');
      await until('3 points', async () => ({ ok: (await rows.count()) === 3, detail: `${await rows.count()} rows` }));
      const texts = await rowTexts(rows);
      const tracks = await api(`/api/patients/${encodeURIComponent(trendPatient)}/measurements`);
      checkEqual(tracks.length, 1, 'tracks from the API');
      const points = tracks[0].points;
      checkEqual(JSON.stringify(points.map(pt => pt.value)), JSON.stringify(trendValues), 'values from the API');
      const num = v => `(^|[^0-9.])${String(v).replace('.', '\\.')}(\\.0+)?([^0-9]|$)`;
      for (const [n, t] of texts.entries()) {
        const d = trend[n].date;
        check(t.includes(d) || t.includes(`${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}`), `row ${n}: no date ${d}: ${t}`);
        check(new RegExp(num(trendValues[n])).test(t), `row ${n}: no value ${trendValues[n]}: ${t}`);
        check(/mL|ml/.test(t), `row ${n}: no unit: ${t}`);
        if (n > 0) {
          const change = points[n].change;
          const pct = points[n].change_percent;
          check(new RegExp(num(change)).test(t), `row ${n}: no change ${change}: ${t}`);
          check(new RegExp(num(pct)).test(t), `row ${n}: no change_percent ${pct}: ${t}`);
        }
      }
      await shot(page, 'patient');
      await healthy(admin, 'patient');
    },
  ],
  [
    'admin: AI: models, a route disabled with its toggle (saved), the cancelled job retried',
    async () => {
      const { page } = admin;
      await navTo(page, 'ai');
      await page.locator('table[data-table="models"]').filter({ hasText: 'ct-classical' }).waitFor();
      const routeRows = page.locator('table[data-table="routes"] tr[data-route]');
      await until('2 routes', async () => ({ ok: (await routeRows.count()) === 2, detail: `${await routeRows.count()}` }));
      const before = await api('/api/ai/routes');
      checkEqual(before[1].enabled, true, 'route 1 enabled before');
      await page.locator('table[data-table="routes"] tr[data-route="1"] button[data-action="toggle-route"]').click();
      await until('route 1 disabled in /api/ai/routes', async () => {
        const r = await api('/api/ai/routes');
        return { ok: r[1].enabled === false && r[0].enabled === true && r[1].model === 'deepbrain', detail: JSON.stringify(r) };
      });
      check(await page.locator('button[data-action="edit-route"]').count(), 'no edit-route button');

      const jobRow = page.locator(`table[data-table="jobs"] tr[data-job-id="${jobId}"]`);
      await jobRow.waitFor();
      checkEqual(await jobRow.getAttribute('data-state'), 'cancelled', 'job row state');
      checkEqual(await jobRow.locator('button[data-action="cancel"]').count(), 0, 'a cancel button on a cancelled job');
      await jobRow.locator('button[data-action="retry"]').click();
      await until('the job queued again', async () => {
        const j = await api(`/api/ai/jobs/${jobId}`);
        return { ok: j.state === 'queued' && j.attempts === 0, detail: JSON.stringify({ state: j.state, attempts: j.attempts }) };
      });
      await until('the row shows it queued', async () => {
        const s = await jobRow.getAttribute('data-state');
        return { ok: s === 'queued', detail: s };
      }, 12000);
      await page.locator('select[data-input="job-state"]').selectOption('queued');
      await until('the state filter', async () => {
        const states = await page.locator('table[data-table="jobs"] tr[data-job-id]').evaluateAll(rs => rs.map(r => r.dataset.state));
        return { ok: states.length > 0 && states.every(s => s === 'queued'), detail: JSON.stringify(states) };
      });
      await shot(page, 'ai');
      await healthy(admin, 'ai');
    },
  ],
  [
    'admin: audit: search finds the export\'s Data Export event; the chain verifies',
    async () => {
      const { page } = admin;
      await navTo(page, 'audit');
      const form = page.locator('form[data-form="audit-search"]');
      await fill(form, 'event', 'export');
      await submit(form);
      const rows = page.locator('table[data-table="audit"] tr[data-audit-id]');
      const expected = (await api('/api/audit?event=export')).records;
      check(expected.length >= 1, 'no export record in /api/audit');
      await until('the export records', async () => {
        const got = await rows.evaluateAll(rs => rs.map(r => [r.dataset.auditId, r.dataset.eventType]));
        const ok = got.length === expected.length && got.every(([id, t]) => t === 'export') && got.some(([id]) => Number(id) === expected[0].seq);
        return { ok, detail: JSON.stringify(got) };
      });
      await page.locator('button[data-action="verify"]').click();
      const result = page.locator('[data-result="verify"]');
      await until('the verification', async () => {
        const t = (await result.innerText()).trim();
        return { ok: t.startsWith('Chain intact'), detail: t };
      });
      const v = await api('/api/audit/verify', { method: 'POST' });
      check(v.ok === true && v.records > 0 && v.first_bad === null, `POST /api/audit/verify: ${JSON.stringify(v)}`);
      await shot(page, 'audit');
      await healthy(admin, 'audit');
    },
  ],
  [
    'admin: users: users listed, a user added and removed, an API key shown once and revoked',
    async () => {
      const { page } = admin;
      await navTo(page, 'users');
      for (const name of ['admin', 'viewer']) {
        await page.locator(`table[data-table="users"] tr[data-user-name="${name}"]`).waitFor();
      }
      const userForm = page.locator('form[data-form="user"]');
      await fill(userForm, 'username', 'e2e-tech');
      await fill(userForm, 'password', 'e2e-tech-password-1');
      for (const box of await userForm.locator('input[type="checkbox"]').all()) {
        await box.setChecked((await box.getAttribute('value')) === 'technologist');
      }
      await submit(userForm);
      await page.locator('tr[data-user-name="e2e-tech"]').waitFor();
      const u = await api('/api/users/e2e-tech');
      check(JSON.stringify(u.roles) === '["technologist"]', `e2e-tech's roles: ${JSON.stringify(u)}`);

      const keyForm = page.locator('form[data-form="key"]');
      await fill(keyForm, 'name', 'e2e-console-key');
      for (const box of await keyForm.locator('input[type="checkbox"]').all()) {
        await box.setChecked((await box.getAttribute('value')) === 'viewer');
      }
      await submit(keyForm);
      const shown = page.locator('[data-result="new-key"]');
      const { detail } = await until('the new key shown', async () => {
        const m = /pacs_[A-Za-z0-9_-]{20,}/.exec(await shown.innerText().catch(() => ''));
        return { ok: !!m, detail: m ? m[0] : '' };
      });
      const key = detail;
      await page.locator('tr[data-key-name="e2e-console-key"]').waitFor();
      checkEqual((await http('/api/whoami', { as: { bearer: key } })).json().principal, 'key:e2e-console-key', 'whoami with the new key');
      checkEqual((await http('/dicom-web/studies', { as: { bearer: key } })).status, 200, 'QIDO-RS with the new key (viewer)');
      const listed = JSON.stringify(await api('/api/keys'));
      check(!listed.includes(key), 'GET /api/keys shows the secret');
      check(!(await page.locator('table[data-table="keys"]').innerText()).includes(key), 'the keys table shows the secret');
      await shot(page, 'users');

      const confirmIfAsked = async () => {
        const c = page.locator('button[data-action="confirm"]');
        if (await c.isVisible().catch(() => false)) {
          await c.click();
        } else {
          await c.click({ timeout: 2000 }).catch(() => {});
        }
      };
      await page.locator('tr[data-key-name="e2e-console-key"] button[data-action="revoke"]').click();
      await confirmIfAsked();
      await until('the key refused', async () => {
        const s = (await http('/dicom-web/studies', { as: { bearer: key } })).status;
        return { ok: s === 401, detail: `HTTP ${s}` };
      });
      await page.locator('tr[data-user-name="e2e-tech"] button[data-action="delete"]').click();
      await confirmIfAsked();
      await page.locator('tr[data-user-name="e2e-tech"]').waitFor({ state: 'detached' });
      checkEqual((await http('/api/users/e2e-tech', { as: 'admin' })).status, 404, 'GET /api/users/e2e-tech after deleting');
      await healthy(admin, 'users');
    },
  ],
  [
    'admin: node: this node, storage, instances, readiness, received chart, /metrics link',
    async () => {
      const { page } = admin;
      await navTo(page, 'node');
      const nodes = await api('/api/nodes');
      check(nodes.length >= 1 && nodes.some(n => n.self), `GET /api/nodes: ${JSON.stringify(nodes)}`);
      for (const n of nodes) {
        await page.locator(`table[data-table="nodes"] tr[data-node-id="${n.node_id}"]`).waitFor();
      }
      const stats = await api('/api/statistics');
      await until('the instance count', async () => {
        const t = (await page.locator('[data-stat="instances"]').innerText()).replace(/[\s,.'\u202f\u00a0]/g, '');
        return { ok: t.includes(String(stats.instances)), detail: `${t} (API: ${stats.instances})` };
      });
      check((await page.locator('[data-stat="storage"]').innerText()).trim(), 'no storage figure');
      check(/ready|yes|ok/i.test(await page.locator('[data-stat="ready"]').innerText()), 'readiness not shown as ready');
      const hourly = stats.received_per_hour || [];
      const received = hourly.reduce((n, h) => n + h.instances, 0);
      checkEqual(received, stats.instances, 'instances received in the last 24 h (everything was stored just now)');
      await page.locator('[data-chart="received"] canvas').first().waitFor();
      const drawn = await pixelStats(page, { selector: '[data-chart="received"] canvas' });
      check(drawn && drawn.distinctColours >= 3, `the received chart looks empty: ${JSON.stringify(drawn)}`);
      checkEqual(await page.locator('a[href="/metrics"]').count() > 0, true, 'a link to /metrics');
      await shot(page, 'node');
      await healthy(admin, 'node');
    },
  ],
  [
    'admin: an unknown page is the notfound page (404); logging out ends the session',
    async () => {
      const { page } = admin;
      const res = await page.goto(`${base}/ui/no-such-page`);
      checkEqual(res.status(), 404, 'GET /ui/no-such-page status');
      await waitPage(page, 'notfound');
      await shot(page, 'notfound');
      await page.locator('button[data-action="logout"]').click();
      await waitPage(page, 'login');
      const cookies = await admin.context.cookies(base);
      check(!cookies.some(c => c.name === 'pacs_session' && c.value), 'pacs_session still set after logging out');
      const res2 = await page.goto(`${base}/ui/aes`);
      checkEqual(res2.status(), 401, 'GET /ui/aes after logging out');
      await waitPage(page, 'login');
      await healthy(admin, 'after logout');
    },
  ],
];

const viewerChecks = [
  [
    'viewer: logs in through the login form; no admin nav links',
    async () => {
      if (admin) {
        await admin.close();
      }
      viewer = await browser('viewer');
      await login(viewer, 'viewer');
      const { page } = viewer;
      checkEqual(await page.locator('nav a[data-nav="studies"]').count(), 1, 'studies link');
      for (const name of ['aes', 'ai', 'audit', 'users', 'node']) {
        checkEqual(await page.locator(`nav a[data-nav="${name}"]`).count(), 0, `nav link ${name} for a viewer`);
      }
      await shot(page, 'viewer-home');
      await healthy(viewer, 'viewer home');
    },
    { fatal: true },
  ],
  [
    'viewer: /ui/aes (and the other admin pages) show the forbidden page with 403',
    async () => {
      const { page } = viewer;
      for (const p of ['aes', 'ai', 'users', 'node', 'audit']) {
        const res = await page.goto(`${base}/ui/${p}`);
        checkEqual(res.status(), 403, `GET /ui/${p} as viewer`);
        await waitPage(page, 'forbidden');
        if (p === 'aes') {
          await shot(page, 'forbidden');
        }
      }
    },
  ],
  [
    'viewer: fetch of /api/aes from the page\'s session gets 403',
    async () => {
      const { page } = viewer;
      const statuses = await page.evaluate(async () => {
        const get = await fetch('/api/aes', { headers: { 'X-PACS-Console': '1' } });
        const plain = await fetch('/api/aes');
        const post = await fetch('/api/aes', {
          method: 'POST',
          headers: { 'X-PACS-Console': '1', 'Content-Type': 'application/json' },
          body: JSON.stringify({ title: 'VIEWER-AE', host: '127.0.0.1', port: 104 }),
        });
        const who = await (await fetch('/api/whoami')).json();
        return { get: get.status, plain: plain.status, post: post.status, who: who.principal };
      });
      checkEqual(statuses.who, 'user:viewer', 'the page session is the viewer');
      checkEqual(statuses.get, 403, 'GET /api/aes (X-PACS-Console) from the viewer page');
      checkEqual(statuses.plain, 403, 'GET /api/aes from the viewer page');
      checkEqual(statuses.post, 403, 'POST /api/aes from the viewer page');
      checkEqual((await http('/api/aes/VIEWER-AE', { as: 'admin' })).status, 404, 'the viewer\'s AE was not made');
    },
  ],
  [
    'viewer: studies and a study page, without jobs, upload, send or export controls',
    async () => {
      const { page } = viewer;
      await page.goto(`${base}/ui/`);
      await waitPage(page, 'home');
      await navTo(page, 'studies');
      await until('a page of 25 studies', async () => ({ ok: (await page.locator('tr[data-study-uid]').count()) === 25, detail: String(await page.locator('tr[data-study-uid]').count()) }));
      await fill(page.locator('form[data-form="study-search"]'), 'PatientID', ct.patient);
      await submit(page.locator('form[data-form="study-search"]'));
      await until('the CT study', async () => ({ ok: (await page.locator('tr[data-study-uid]').count()) === 1, detail: String(await page.locator('tr[data-study-uid]').count()) }));
      await page.locator(`tr[data-study-uid="${ct.study}"]`).click();
      await waitPage(page, 'study');
      await page.locator(`tr[data-series-uid="${ct.series}"]`).waitFor();
      for (const sel of ['table[data-table="jobs"]', 'input[data-input="upload"]', 'button[data-action="send"]', 'button[data-action="export"]']) {
        checkEqual(await page.locator(sel).count(), 0, `${sel} shown to a viewer`);
      }
      await shot(page, 'viewer-study');
      await healthy(viewer, 'viewer study');
    },
  ],
];

/** The payload of a JWT (not verified: the node did that). */
function jwtPayload(token) {
  const parts = String(token).split('.');
  check(parts.length === 3, 'not a JWT');
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

/** Signs in through the provider: the console's OIDC button, the provider's form, back. */
async function oidcLogin(name) {
  const session = await browser(`oidc:${name}`);
  oidcSessions.push(session);
  session.context.setDefaultNavigationTimeout(30000);
  const { page } = session;
  await page.goto(`${base}/ui/`);
  await waitPage(page, 'login');
  await page.locator('button[data-action="login-oidc"]').click();
  await page.waitForURL(url => url.href.startsWith(`${issuer}/interaction/`), { timeout: 30000 });
  await page.locator('#login').fill(name);
  await page.locator('#password').fill(OIDC_USERS[name]);
  await page.locator('#sign-in').click();
  await page.waitForURL(url => url.href.startsWith(`${base}/ui/`), { timeout: 30000 });
  await page.locator('main[data-page="home"]').waitFor({ timeout: 30000 });
  await page.locator('[data-user]').filter({ hasText: `oidc:${name}` }).first().waitFor();
  const who = await page.evaluate(async () => (await fetch('/api/whoami')).json());
  checkEqual(who.principal, `oidc:${name}`, 'whoami from the page');
  const c = (await session.context.cookies(base)).find(x => x.name === 'pacs_session');
  check(c && c.httpOnly, 'no HttpOnly pacs_session cookie after the OpenID Connect sign-in');
  // the cookie holds the provider's access token (or a login token of the node)
  const claims = jwtPayload(c.value);
  if (claims.iss === issuer) {
    checkEqual(claims.sub, name, 'the token\'s sub');
    check([].concat(claims.aud).includes('pacs'), `the token's aud: ${JSON.stringify(claims.aud)}`);
  }
  return session;
}

const oidcSessions = [];
const oidcChecks = [
  [
    'oidc: adam (admin at the provider) signs in with the OIDC button (PKCE) and sees every page',
    async () => {
      if (viewer) {
        await viewer.close();
      }
      const session = await oidcLogin('adam');
      const { page } = session;
      for (const name of NAV) {
        checkEqual(await page.locator(`nav a[data-nav="${name}"]`).count(), 1, `nav link ${name}`);
      }
      await shot(page, 'oidc-home');
      await navTo(page, 'aes');
      await page.locator(`tr[data-ae="${SCP_AE}"]`).waitFor();
      await healthy(session, 'aes as oidc:adam');
      await session.close();
    },
  ],
  [
    'oidc: alice (viewer at the provider) signs in; no admin links, /ui/aes forbidden',
    async () => {
      const session = await oidcLogin('alice');
      const { page } = session;
      checkEqual(await page.locator('nav a[data-nav="studies"]').count(), 1, 'studies link');
      for (const name of ['aes', 'ai', 'audit', 'users', 'node']) {
        checkEqual(await page.locator(`nav a[data-nav="${name}"]`).count(), 0, `nav link ${name} for alice`);
      }
      const res = await page.goto(`${base}/ui/aes`);
      checkEqual(res.status(), 403, 'GET /ui/aes as oidc:alice');
      await waitPage(page, 'forbidden');
      const status = await page.evaluate(async () => (await fetch('/api/aes', { headers: { 'X-PACS-Console': '1' } })).status);
      checkEqual(status, 403, 'GET /api/aes from alice\'s page');
      await healthy(session, 'alice');
      await session.close();
    },
  ],
];

async function onFailure() {
  for (const s of [admin, viewer]) {
    if (s && s.page && !s.page.isClosed()) {
      await s.page.screenshot({ path: path.join(artifacts, `console-failure-${s === admin ? 'admin' : 'viewer'}.png`), fullPage: true }).catch(() => {});
    }
  }
  console.log(`(browser log: ${logFile})`);
}

try {
  await runChecks('console', [...httpChecks, ...adminChecks, ...viewerChecks, ...oidcChecks], { onFailure });
} finally {
  for (const s of [admin, viewer, ...oidcSessions]) {
    if (s) {
      await s.close();
    }
  }
}
