// OHIF with OpenID Connect login against a pacs node that requires bearer tokens, in headless
// Chromium: the node was started with --oidc-issuer (the test provider, oidc-provider.mjs)
// and --oidc-audience pacs, and serves a viewer prepared with
// `node ohif.mjs prepare DIR ROOT --oidc ISSUER` (the shipped conf/ohif/app-config.js).
//
//   node ohif-login.mjs
//
// alice (role viewer) logs in on the provider's page, sees the stored study in the study
// list, opens it and sees the CT images, then puts the study's SEG and TID 1500 SR (written by
// highdicom, not by the node) into the viewport and OHIF retrieves both; every DICOMweb request
// carries her access token, those for the SEG's and the SR's series included.
// bob (no role) logs in, the node answers the study list request with 403 and OHIF shows its
// "Data Source Connection Error". Finally the node's log must show that no request under the
// DICOMweb root was answered 2xx to an anonymous caller.
//
// Environment:
//   PACS_OIDC_DICOMWEB  the node's DICOMweb root (http://127.0.0.1:PORT/dicom-web); the
//                       viewer is at / on the same origin
//   OIDC_ISSUER         the provider's issuer (http://127.0.0.1:PORT)
//   E2E_SERIES_DIR      directory of the CT series stored in the node
//   E2E_OIDC_SEG_SERIES Series Instance UID of the SEG of that series stored in the node
//   E2E_OIDC_SR_SERIES  Series Instance UID of the TID 1500 SR of that series stored in the node
//   E2E_OIDC_NODE_LOG   the node's log (run with RUST_LOG=info,pacs_dicomweb=debug)
//   E2E_ARTIFACTS       screenshots and ohif-login-console.log (default target/e2e-artifacts)
//   CHROMIUM, E2E_TIMEOUT_MS  as for ohif.mjs

import fs from 'node:fs';
import path from 'node:path';
import {
  VIEWPORT_CANVAS,
  describeStats,
  looksRendered,
  openBrowser,
  pixelStats,
  poll,
  screenshotStats,
  showDisplaySet,
  studyRow,
  summarise,
  waitForRenderedViewport,
} from './browser.mjs';
import {
  TAG,
  artifactsDir,
  check,
  checkEqual,
  dicomFacts,
  dicomFiles,
  indent,
  requireEnv,
  runChecks,
} from './lib.mjs';

// The provider's users (oidc-provider.mjs): one with the role viewer, one without roles.
const ALICE = { login: 'alice', password: 'alice-password', roles: ['viewer'] };
const BOB = { login: 'bob', password: 'bob-password', roles: [] };
const AUDIENCE = 'pacs';

/** The payload of a JWT, not verified (the node does that); undefined if it is none. */
function jwtPayload(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) {
    return undefined;
  }
  try {
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

/** The requests whose URL path names the series `seriesUid` (QIDO, metadata, frames, ...). */
function requestsForSeries(requests, seriesUid) {
  return requests.filter(r => new URL(r.url).pathname.split('/').includes(seriesUid));
}

/** A WADO-RS metadata request. */
function isMetadata(request) {
  return /\/metadata$/.test(new URL(request.url).pathname);
}

/** A request that retrieves a series' data, not its metadata: frames, bulk data, an instance. */
function isRetrieval(request) {
  const p = new URL(request.url).pathname;
  return /\/instances\/[^/]+(\/frames\/[^/]+|\/bulkdata\/.+)?$/.test(p) || /\/bulkdata\//.test(p);
}

/**
 * The node's answers as its log reports them: one record per request (the last line of each
 * request id) with the fields path, status and principal. Reads tracing's text format
 * (`key=value` in the span and the event) and, should the node log JSON, JSON lines.
 */
function answeredRequests(logText) {
  const byRequest = new Map();
  let n = 0;
  for (const raw of logText.split('\n')) {
    // eslint-disable-next-line no-control-regex
    const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
    if (!line.includes('pacs_dicomweb')) {
      continue;
    }
    let fields = {};
    if (line.trimStart().startsWith('{')) {
      try {
        const entry = JSON.parse(line);
        fields = { ...entry.span, ...Object.assign({}, ...(entry.spans || [])), ...entry.fields };
      } catch {
        continue;
      }
    } else {
      for (const m of line.matchAll(/([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|[^\s{}:,]+)/g)) {
        fields[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
      }
    }
    if (fields.path === undefined || fields.status === undefined) {
      continue;
    }
    byRequest.set(fields.request_id ?? `line ${n++}`, { ...fields, status: Number(fields.status), line });
  }
  return [...byRequest.values()];
}

async function run() {
  const root = requireEnv('PACS_OIDC_DICOMWEB', "the OIDC node's DICOMweb root URL").replace(/\/+$/, '');
  const origin = new URL(root).origin;
  const rootPath = new URL(root).pathname;
  const issuer = requireEnv('OIDC_ISSUER', "the OpenID provider's issuer URL").replace(/\/+$/, '');
  const nodeLog = requireEnv('E2E_OIDC_NODE_LOG', "the OIDC node's log file");
  const seriesDir = requireEnv('E2E_SERIES_DIR', 'directory of the CT series stored in the node');
  const segSeries = requireEnv('E2E_OIDC_SEG_SERIES', "the Series Instance UID of the CT's SEG in the node");
  const srSeries = requireEnv('E2E_OIDC_SR_SERIES', "the Series Instance UID of the CT's SR in the node");
  const files = dicomFiles(seriesDir);
  check(files.length > 0, `no .dcm files in ${seriesDir}`);
  const facts = dicomFacts(files[0], [TAG.PatientName, TAG.StudyInstanceUID]);
  const studyUid = facts[TAG.StudyInstanceUID];
  const patientName = facts[TAG.PatientName];
  const timeoutMs = Number(process.env.E2E_TIMEOUT_MS || 120000);
  const outDir = artifactsDir();

  const log = [];
  const note = line => log.push(`${new Date().toISOString()} ${line}`);
  // the Authorization header of each DICOMweb request, by user
  const authorizations = { alice: [], bob: [] };
  let who = 'alice';
  const onDicomweb = req => {
    const entry = { url: req.url(), authorization: undefined, status: undefined };
    authorizations[who].push(entry);
    req
      .allHeaders()
      .then(headers => {
        entry.authorization = headers.authorization;
      })
      .catch(() => {});
    req
      .response()
      .then(res => {
        entry.status = res ? res.status() : 'no response';
      })
      .catch(() => {});
  };
  // waits until one of alice's requests for `series` is `wanted` and answered 200: those requests
  const retrievedByAlice = (what, series, wanted) =>
    poll(`${what} retrieved (series ${series})`, timeoutMs, async () => {
      const reqs = requestsForSeries(authorizations.alice, series);
      const got = reqs.filter(r => wanted(r) && r.status === 200);
      return { ok: got.length > 0, detail: JSON.stringify(reqs.map(r => `${r.status} ${r.url}`)), got };
    });
  const browsers = {};
  let page;
  let aliceIn = false;
  let aliceViewer = false;
  // the study: the CT series, its SEG and its SR (one instance each)
  const instances = files.length + 2;

  // logIn(user): from the study list URL to the provider's page and back, logged in.
  async function logIn(user, screenshot) {
    await page.goto(`${origin}/`, { waitUntil: 'domcontentloaded', timeout: 60000 });
    const form = page.locator('form input[name="login"]');
    try {
      await form.waitFor({ state: 'visible', timeout: 60000 });
    } finally {
      if (screenshot) {
        await page.screenshot({ path: path.join(outDir, screenshot) });
      }
    }
    check(page.url().startsWith(`${issuer}/interaction/`), `the login form is not the provider's: ${page.url()}`);
    await form.fill(user.login);
    await page.locator('form input[name="password"]').fill(user.password);
    await Promise.all([
      page.waitForURL(url => url.href.startsWith(`${origin}/`) && !url.pathname.startsWith('/callback'), {
        timeout: 60000,
      }),
      page.locator('form button[type="submit"]').click(),
    ]);
    note(`${user.login} logged in, at ${page.url()}`);
  }

  const checks = [
    [
      'launch Chromium',
      async () => {
        // Only the node and the identity provider, both on the loopback address.
        browsers.alice = await openBrowser({ origins: [origin, issuer], root, note, onDicomweb });
        page = browsers.alice.page;
      },
      { fatal: true },
    ],
    [
      'the node answers DICOMweb without a token with 401, and serves the viewer',
      async () => {
        const anonymous = await fetch(`${root}/studies`, { headers: { accept: 'application/dicom+json' } });
        const body = await anonymous.text();
        checkEqual(anonymous.status, 401, `status of GET ${root}/studies without a token (body ${body})`);
        const challenge = anonymous.headers.get('www-authenticate') || '';
        check(/^Bearer\b/i.test(challenge), `WWW-Authenticate of the 401: ${JSON.stringify(challenge)}`);
        let error;
        try {
          error = JSON.parse(body).error;
        } catch {
          // checked below
        }
        check(typeof error === 'string' && error.length > 0, `the 401's body is not {"error": "..."}: ${body}`);
        for (const file of ['/', '/app-config.js']) {
          const res = await fetch(`${origin}${file}`);
          await res.arrayBuffer();
          checkEqual(res.status, 200, `status of GET ${origin}${file} without a token`);
        }
      },
    ],
    [
      "the viewer sends alice to the provider's login page, and she logs in",
      async () => {
        await logIn(ALICE, 'login-page.png');
      },
      { fatal: true },
    ],
    [
      'alice sees the synthetic study in the study list',
      async () => {
        const { row } = studyRow(page, patientName);
        try {
          await row.first().waitFor({ state: 'visible', timeout: timeoutMs });
        } finally {
          await page.screenshot({ path: path.join(outDir, 'login-study-list.png') });
        }
        const text = (await row.first().innerText()).replace(/\s+/g, ' ');
        note(`study row: ${text}`);
        console.log(`     study row: ${text}`);
        check(new RegExp(`\\b${instances}\\b`).test(text), `the row does not show ${instances} instances (CT, SEG, SR): ${text}`);
        check(/\bCT\b/.test(text), `the row does not show modality CT: ${text}`);
        aliceIn = true;
      },
    ],
    [
      'alice opens the study and sees the CT images',
      async () => {
        check(aliceIn, 'not run: the study list did not show the study');
        // as a user does it: select the row, then launch the basic viewer for it
        await studyRow(page, patientName).row.first().click();
        await page.getByRole('button', { name: 'Basic Viewer' }).first().click({ timeout: 30000 });
        await page.waitForURL(url => url.pathname.startsWith('/viewer'), { timeout: 60000 });
        const url = new URL(page.url());
        check(
          (url.searchParams.get('StudyInstanceUIDs') || '').split(',').includes(studyUid),
          `the viewer opened ${page.url()}, not the study ${studyUid}`,
        );
        const stats = await waitForRenderedViewport(page, {
          timeoutMs,
          screenshot: path.join(outDir, 'login-viewer.png'),
        });
        note(`viewport canvas: ${describeStats(stats)}`);
        console.log(`     viewport canvas: ${describeStats(stats)}`);
        const shot = await screenshotStats(page, path.join(outDir, 'login-viewer.png'));
        check(looksRendered(shot), `login-viewer.png looks blank: ${describeStats(shot)}`);
        aliceViewer = true;
      },
    ],
    [
      'alice puts the SEG into the viewport and OHIF retrieves it and loads it onto the CT',
      async () => {
        check(aliceViewer, 'not run: the viewer did not show the study');
        await showDisplaySet(page, segSeries, timeoutMs);
        // OHIF 3.13 retrieves the SEG instance with WADO-RS (.../series/SEG/instances/SOP,
        // application/dicom; other versions read its frames or its Pixel Data's bulk data)
        const fetched = await retrievedByAlice("the SEG's data", segSeries, isRetrieval);
        try {
          await poll('the segmentation loaded onto the CT images', timeoutMs, async () => {
            const state = await page.evaluate(uid => {
              const s = window.services;
              const id = s.viewportGridService.getActiveViewportId();
              const ds = s.displaySetService.getActiveDisplaySets().find(d => d.SeriesInstanceUID === uid);
              const segs = s.segmentationService.getSegmentations?.() || [];
              const reps = s.segmentationService.getSegmentationRepresentations?.(id) || [];
              return {
                loaded: Boolean(ds?.isLoaded),
                segments: Object.keys(ds?.segments || {}).length,
                segmentations: segs.map(g => g.segmentationId),
                representations: reps.length,
                dialogs: [...document.querySelectorAll('[role="dialog"]')].map(d => d.innerText.replace(/\s+/g, ' ')),
              };
            }, segSeries);
            return {
              ok: state.segmentations.length > 0 && state.representations > 0,
              detail: JSON.stringify(state),
            };
          });
        } finally {
          await page.waitForTimeout(1000);
          await page.screenshot({ path: path.join(outDir, 'login-seg.png') });
        }
        const kinds = summarise(fetched.got.map(r => r.url), root);
        note(`SEG retrieved: ${kinds}`);
        console.log(`     SEG retrieved: ${kinds}`);
      },
    ],
    [
      'alice puts the SR into the viewport and OHIF retrieves it',
      async () => {
        check(aliceViewer, 'not run: the viewer did not show the study');
        await showDisplaySet(page, srSeries, timeoutMs);
        // OHIF reads an SR's content tree from its series metadata (WADO-RS
        // .../series/SR/metadata; bulk data it names would be retrieved too)
        const fetched = await retrievedByAlice("the SR's metadata", srSeries, isMetadata);
        // OHIF reads the SR's planar ROI (TID 1410, a POLYLINE on one CT slice) and shows that
        // slice with the ROI drawn, the SR's measurement loaded onto it
        let shown;
        try {
          shown = await poll("the SR's ROI on its CT slice in the viewport", timeoutMs, async () => {
            const state = await page.evaluate(uid => {
              const s = window.services;
              const id = s.viewportGridService.getActiveViewportId();
              const ds = s.displaySetService.getActiveDisplaySets().find(d => d.SeriesInstanceUID === uid);
              const vp = s.cornerstoneViewportService.getCornerstoneViewport(id);
              return {
                shown: (s.viewportGridService.getDisplaySetsUIDsForViewport?.(id) || []).includes(ds?.displaySetInstanceUID),
                loaded: Boolean(ds?.isLoaded),
                measurements: (ds?.measurements || []).map(m => ({
                  tracking: m.TrackingIdentifier,
                  loaded: Boolean(m.loaded),
                  sop: m.ReferencedSOPInstanceUID || null,
                  graphic: m.coords?.[0]?.GraphicType || null,
                })),
                image: vp?.getCurrentImageId?.() || null,
                error: /Something went wrong/.test(document.body.innerText),
              };
            }, srSeries);
            const ok =
              state.shown &&
              state.loaded &&
              !state.error &&
              state.measurements.length === 1 &&
              state.measurements.every(m => m.loaded && m.sop && (state.image || '').includes(m.sop));
            return { ok, detail: JSON.stringify(state), state };
          });
          const stats = await pixelStats(page, { selector: VIEWPORT_CANVAS });
          check(looksRendered(stats), `the SR's viewport looks blank: ${describeStats(stats)}`);
        } finally {
          await page.waitForTimeout(1000);
          await page.screenshot({ path: path.join(outDir, 'login-sr.png') });
        }
        note(`SR shown: ${JSON.stringify(shown.state)}`);
        console.log(`     SR's ${shown.state.measurements.map(m => `${m.graphic} "${m.tracking}"`).join(', ')} on ${shown.state.image.replace(/.*\/instances\//, 'instance ')}`);
        note(`SR retrieved: ${summarise(fetched.got.map(r => r.url), root)}`);
      },
    ],
    [
      "every DICOMweb request of alice's viewer carried her access token",
      async () => {
        const requests = authorizations.alice;
        // the header promises resolve shortly after the requests were sent
        await poll('the request headers', 10000, async () => ({
          ok: requests.every(r => r.authorization !== undefined),
          detail: `${requests.filter(r => r.authorization === undefined).length} without a header`,
        })).catch(() => {});
        const kinds = summarise(requests.map(r => r.url), root);
        console.log(`     ${requests.length} requests: ${kinds}`);
        check(requests.length > 0, 'the viewer made no DICOMweb request');
        for (const kind of ['/studies', '/metadata', '/frames/']) {
          check(requests.some(r => new URL(r.url).pathname.includes(kind)), `no ${kind} request among: ${kinds}`);
        }
        // the SEG's and the SR's series: retrieved, each request with a bearer JWT
        for (const [what, uid, retrieved] of [
          ['SEG', segSeries, isRetrieval],
          ['SR', srSeries, isMetadata],
        ]) {
          const reqs = requestsForSeries(requests, uid);
          console.log(`     ${what} series: ${reqs.length} requests: ${summarise(reqs.map(r => r.url), root)}`);
          check(reqs.some(retrieved), `no request retrieving the ${what} (series ${uid}) among: ${kinds}`);
          const bare = reqs.filter(r => !/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/.test(r.authorization || ''));
          check(
            bare.length === 0,
            `${bare.length} request(s) for the ${what}'s series without a bearer JWT, e.g. ${bare.slice(0, 3).map(r => `${r.url} (${r.authorization})`).join(', ')}`,
          );
        }
        const without = requests.filter(r => !/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/.test(r.authorization || ''));
        check(
          without.length === 0,
          `${without.length} request(s) without a bearer JWT, e.g. ${without.slice(0, 3).map(r => `${r.url} (${r.authorization})`).join(', ')}`,
        );
        const tokens = new Set(requests.map(r => r.authorization.slice('Bearer '.length)));
        for (const token of tokens) {
          const claims = jwtPayload(token);
          check(claims, 'an access token is not a JWT');
          note(`alice's access token: ${JSON.stringify(claims)}`);
          checkEqual(claims.iss, issuer, 'iss of the access token');
          checkEqual(claims.sub, ALICE.login, 'sub of the access token');
          check([].concat(claims.aud).includes(AUDIENCE), `aud of the access token: ${JSON.stringify(claims.aud)}`);
          checkEqual(JSON.stringify(claims.roles), JSON.stringify(ALICE.roles), 'roles of the access token');
          check(claims.exp * 1000 > Date.now(), `the access token expired at ${new Date(claims.exp * 1000).toISOString()}`);
        }
      },
    ],
    [
      'no DICOMweb request of alice failed',
      async () => {
        const failed = browsers.alice.badResponses.filter(r => r.url.startsWith(root));
        check(
          failed.length === 0,
          'requests to the node failed:\n' + failed.map(r => `${r.status} ${r.method} ${r.url}\n  body: ${r.body}`).join('\n'),
        );
      },
    ],
    [
      'bob (no role) logs in and the study list request gets 403',
      async () => {
        await browsers.alice.close();
        who = 'bob';
        browsers.bob = await openBrowser({ origins: [origin, issuer], root, note, onDicomweb });
        page = browsers.bob.page;
        const answered = page.waitForResponse(r => r.url().startsWith(`${root}/studies?`), { timeout: 90000 });
        await logIn(BOB);
        const response = await answered;
        const body = await response.text();
        note(`bob's study list: ${response.status()} ${body}`);
        checkEqual(response.status(), 403, `status of ${response.url()} for bob (body ${body})`);
        let error;
        try {
          error = JSON.parse(body).error;
        } catch {
          // checked below
        }
        check(typeof error === 'string' && error.length > 0, `the 403's body is not {"error": "..."}: ${body}`);
        const authorization = (await response.request().allHeaders()).authorization || '';
        const claims = jwtPayload(authorization.replace(/^Bearer /, ''));
        check(claims && claims.sub === BOB.login, `the refused request did not carry bob's token: ${authorization.slice(0, 40)}`);
        checkEqual(JSON.stringify(claims.roles), JSON.stringify(BOB.roles), "roles of bob's access token");
      },
    ],
    [
      'OHIF shows bob the data source error and no study',
      async () => {
        // OHIF 3.13 (useStudyListQuery): a failed study search opens this modal
        const dialog = page.getByRole('dialog').filter({ hasText: 'Data Source Connection Error' });
        try {
          await dialog.first().waitFor({ state: 'visible', timeout: 30000 });
        } finally {
          await page.screenshot({ path: path.join(outDir, 'login-refused.png') });
        }
        const text = (await dialog.first().innerText()).replace(/\s+/g, ' ');
        console.log(`     dialog: ${text}`);
        check(/Error: request failed/.test(text), `the dialog does not report the failed request: ${text}`);
        check(await page.getByText('No studies available').isVisible(), 'the study list does not say "No studies available"');
        checkEqual(await studyRow(page, patientName).row.count(), 0, "rows with the study's patient");
      },
    ],
    [
      "the node's log: no 2xx answer under the DICOMweb root without a principal",
      async () => {
        // the node writes its log as it answers; give the last lines a moment
        await new Promise(resolve => setTimeout(resolve, 500));
        const answers = answeredRequests(fs.readFileSync(nodeLog, 'utf8')).filter(
          a => a.path === rootPath || a.path.startsWith(`${rootPath}/`),
        );
        const ok = answers.filter(a => a.status >= 200 && a.status < 300);
        const principals = [...new Set(answers.map(a => `${a.principal}: ${a.status}`))];
        console.log(`     ${answers.length} DICOMweb answers logged (${ok.length} 2xx); principal: status seen: ${principals.join(', ')}`);
        check(answers.length > 0, `no answered request under ${rootPath} with path and status in ${nodeLog} (is pacs_dicomweb at debug level?)`);
        check(ok.length >= 3, `only ${ok.length} 2xx answers under ${rootPath} in ${nodeLog}`);
        const unnamed = answers.filter(a => a.principal === undefined);
        check(unnamed.length === 0, `${unnamed.length} logged answer(s) without a principal field, e.g.\n${unnamed[0]?.line}`);
        const anonymous = ok.filter(a => a.principal === 'anonymous' || a.principal === '');
        check(
          anonymous.length === 0,
          `${anonymous.length} 2xx answer(s) to an anonymous caller:\n${anonymous.slice(0, 5).map(a => a.line).join('\n')}`,
        );
        check(
          answers.some(a => a.status === 401 && a.principal === 'anonymous'),
          'the 401 to the request without a token is not logged with principal anonymous',
        );
        check(
          answers.some(a => a.status === 403 && a.principal !== 'anonymous'),
          "bob's 403 is not logged with his principal",
        );
      },
    ],
  ];

  try {
    await runChecks('ohif-login', checks, {
      onFailure: async () => {
        console.log('--- browser console and network log ---');
        console.log(indent(log.join('\n') || '(empty)', '  '));
        console.log('--- end of browser log ---');
      },
    });
  } finally {
    fs.writeFileSync(path.join(outDir, 'ohif-login-console.log'), log.join('\n') + '\n');
    for (const [user, browser] of Object.entries(browsers)) {
      if (browser.blocked.length > 0) {
        console.log(`note: ${user}'s viewer tried to reach ${browser.blocked.length} URL(s) off the node and the provider (blocked): ${[...new Set(browser.blocked)].slice(0, 5).join(', ')}`);
      }
      await browser.close();
    }
  }
}

await run();
