// The OHIF viewer (the prebuilt @ohif/app package from npm) against a running pacs node, in
// headless Debian Chromium driven by playwright-core.
//
//   node ohif.mjs prepare VIEWER_DIR DICOMWEB_ROOT [--oidc ISSUER [--oidc-client-id ID]] [--hydrate]
//       copies node_modules/@ohif/app/dist to VIEWER_DIR and writes an app-config.js whose
//       only data source is the node's DICOMweb at DICOMWEB_ROOT; the node then serves
//       VIEWER_DIR with `pacs serve --viewer-dir VIEWER_DIR`. Without --oidc the viewer is
//       anonymous; with it, app-config.js is the shipped conf/ohif/app-config.js (login at
//       ISSUER as the public client ID, default `ohif`, bearer token on every request) with
//       its constants filled in. --hydrate (for ohif-ai.mjs): a SEG or SR put in a viewport
//       is loaded onto its source images without asking (disableConfirmationPrompts,
//       measurementTrackingMode "simplified").
//
//   node ohif.mjs
//       runs the checks. Environment:
//         PACS_DICOMWEB   the node's DICOMweb root (http://127.0.0.1:PORT/dicom-web); the
//                         viewer is expected at / on the same origin
//         E2E_SERIES_DIR  directory of the CT series stored in the node (the expected
//                         patient name and Study Instance UID are read from its files)
//         E2E_ARTIFACTS   where study-list.png, viewer.png and ohif-console.log go
//                         (default target/e2e-artifacts)
//         CHROMIUM        browser executable (default /usr/bin/chromium)
//         E2E_TIMEOUT_MS  how long the viewer may take to render (default 120000)

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  VIEWPORT_CANVAS,
  VIEWPORT_PANE,
  canvasSignature,
  describeStats,
  looksRendered,
  openBrowser,
  pixelStats,
  poll,
  screenshotStats,
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
  dicomwebRoot,
  indent,
  requireEnv,
  runChecks,
} from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

function appConfig(root, { hydrate = false } = {}) {
  const config = {
    routerBasename: '/',
    showStudyList: true,
    extensions: [],
    modes: [],
    customizationService: {},
    // Worker count and request concurrency kept small: CI machines have 2 cores.
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: false,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    // No "investigational use" dialog over the pages (the onboarding tour: see addInitScript).
    investigationalUseDialog: { option: 'never' },
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
    showErrorDetails: 'always',
    defaultDataSourceName: 'pacs',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'pacs',
        configuration: {
          friendlyName: 'pacs node under test',
          name: 'pacs',
          qidoRoot: root,
          wadoRoot: root,
          wadoUriRoot: root,
          qidoSupportsIncludeField: true,
          supportsReject: false,
          dicomUploadEnabled: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: true,
          supportsWildcard: true,
          staticWado: false,
          omitQuotationForMultipartRequest: true,
          bulkDataURI: { enabled: true },
        },
      },
    ],
  };
  if (hydrate) {
    config.disableConfirmationPrompts = true;
    config.measurementTrackingMode = 'simplified';
  }
  return (
    '// Written by tests/e2e/ohif.mjs: OHIF against the pacs node under test.\n' +
    `window.config = ${JSON.stringify(config, null, 2)};\n`
  );
}

/**
 * The shipped OIDC configuration (conf/ohif/app-config.js) with its constants set: the
 * issuer, the client id and the DICOMweb root. Each constant must be found exactly once.
 */
function oidcAppConfig(root, { issuer, clientId }) {
  const shipped = path.join(here, '..', '..', 'conf', 'ohif', 'app-config.js');
  let text = fs.readFileSync(shipped, 'utf8');
  const values = { OIDC_AUTHORITY: issuer, OIDC_CLIENT_ID: clientId, DICOMWEB_ROOT: root };
  for (const [name, value] of Object.entries(values)) {
    const line = new RegExp(`^const ${name} = .*;$`, 'gm');
    const found = text.match(line) || [];
    check(found.length === 1, `${shipped}: expected one line \`const ${name} = ...;\`, found ${found.length}`);
    text = text.replace(line, `const ${name} = ${JSON.stringify(value)};`);
  }
  return (
    `// Written by tests/e2e/ohif.mjs from ${path.relative(path.join(here, '..', '..'), shipped)}: OHIF against the pacs node under test.\n` +
    text +
    '\n// The test machines have 2 cores.\nwindow.config.maxNumberOfWebWorkers = 2;\n'
  );
}

function prepare(viewerDir, root, oidc, { hydrate = false } = {}) {
  const dist = path.join(here, 'node_modules', '@ohif', 'app', 'dist');
  check(
    fs.existsSync(path.join(dist, 'index.html')),
    `${dist}/index.html missing: run \`npm ci\` in ${here} first`,
  );
  fs.rmSync(viewerDir, { recursive: true, force: true });
  fs.cpSync(dist, viewerDir, { recursive: true });
  fs.writeFileSync(path.join(viewerDir, 'app-config.js'), oidc ? oidcAppConfig(root, oidc) : appConfig(root, { hydrate }));
  const login = oidc ? `, login at ${oidc.issuer} as client ${oidc.clientId}` : '';
  console.log(`OHIF ${readVersion()} prepared in ${viewerDir} for ${root}${login}`);
}

function readVersion() {
  const pkg = JSON.parse(
    fs.readFileSync(path.join(here, 'node_modules', '@ohif', 'app', 'package.json'), 'utf8'),
  );
  return pkg.version;
}

async function run() {
  const root = dicomwebRoot();
  const origin = new URL(root).origin;
  const seriesDir = requireEnv('E2E_SERIES_DIR', 'directory of the CT series stored in the node');
  const files = dicomFiles(seriesDir);
  check(files.length > 0, `no .dcm files in ${seriesDir}`);
  const facts = dicomFacts(files[0], [
    TAG.PatientName,
    TAG.StudyInstanceUID,
    TAG.WindowCenter,
    TAG.WindowWidth,
  ]);
  const studyUid = facts[TAG.StudyInstanceUID];
  const patientName = facts[TAG.PatientName];
  const timeoutMs = Number(process.env.E2E_TIMEOUT_MS || 120000);
  const outDir = artifactsDir();

  const log = [];
  const note = line => log.push(`${new Date().toISOString()} ${line}`);

  let browser;
  let page;
  let viewerRendered = false;
  const needViewer = () => check(viewerRendered, 'not run: the viewer did not render');

  const checks = [
    [
      'launch Chromium',
      async () => {
        // Only the node on the loopback address may be reached.
        browser = await openBrowser({ origins: [origin], root, note });
        page = browser.page;
      },
      { fatal: true },
    ],
    [
      'study list shows the synthetic study',
      async () => {
        await page.goto(`${origin}/`, { waitUntil: 'domcontentloaded', timeout: 60000 });
        // OHIF prints person names in its own format (e.g. "JOHANSSON, JAMES"): look for a
        // row with both the family and the given name, in any format.
        const { row } = studyRow(page, patientName);
        try {
          await row.first().waitFor({ state: 'visible', timeout: timeoutMs });
        } finally {
          await page.screenshot({ path: path.join(outDir, 'study-list.png') });
        }
        const text = (await row.first().innerText()).replace(/\s+/g, ' ');
        note(`study row: ${text}`);
        console.log(`     study row: ${text}`);
        check(new RegExp(`\\b${files.length}\\b`).test(text), `the row does not show ${files.length} instances: ${text}`);
        check(/\bCT\b/.test(text), `the row does not show modality CT: ${text}`);
      },
    ],
    [
      'study list filter by patient name (lower case, partial)',
      async () => {
        const { family, familyRe } = studyRow(page, patientName);
        // what a user types: a lower-case prefix of the family name; OHIF sends it to the
        // node as a QIDO-RS PatientName query (wildcard, fuzzymatching)
        const typed = family.slice(0, 5).toLowerCase();
        const input = page.locator('tr[data-filter-row] input').first();
        const answered = page.waitForResponse(
          r => r.url().startsWith(`${root}/studies?`) && /[?&](PatientName|00100010)=/.test(r.url()),
          { timeout: 30000 },
        );
        await input.fill(typed);
        const response = await answered;
        checkEqual(response.status(), 200, `status of ${response.url()}`);
        const studies = await response.json();
        const names = studies.map(st => st['00100010']?.Value?.[0]?.Alphabetic);
        note(`filter "${typed}": ${response.url()} -> ${JSON.stringify(names)}`);
        check(
          names.length > 0 && names.every(n => familyRe.test(n || '')),
          `the node answered ${response.url()} with ${JSON.stringify(names)}`,
        );
        const rows = page.locator('tbody tr[aria-selected]');
        await poll(`only ${family}'s study listed after typing "${typed}"`, 30000, async () => {
          const texts = await rows.allInnerTexts().catch(() => []);
          const ok = texts.length === names.length && texts.every(t => familyRe.test(t));
          return { ok, detail: JSON.stringify(texts.map(t => t.replace(/\s+/g, ' '))) };
        });
      },
    ],
    [
      'viewer renders the CT series',
      async () => {
        const url = `${origin}/viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`;
        await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60000 });
        const stats = await waitForRenderedViewport(page, {
          timeoutMs,
          screenshot: path.join(outDir, 'viewer.png'),
        });
        viewerRendered = true;
        note(`viewport canvas: ${describeStats(stats)}`);
        console.log(`     viewport canvas: ${describeStats(stats)}`);
      },
    ],
    [
      'viewport overlay shows the window and the image count',
      async () => {
        needViewer();
        // e.g. "W: 400 L: 40" and "I:1 (1/40)" in the corners of the viewport
        const viewport = page.locator(VIEWPORT_PANE).first();
        const wl = new RegExp(`W:\\s*${Number(facts[TAG.WindowWidth])}\\s*L:\\s*${Number(facts[TAG.WindowCenter])}\\b`);
        const count = new RegExp(`\\(1/${files.length}\\)`);
        await poll('overlay text', 30000, async () => {
          const text = (await viewport.innerText().catch(() => '')).replace(/\s+/g, ' ');
          return { ok: wl.test(text) && count.test(text), detail: JSON.stringify(text) };
        });
      },
    ],
    [
      'viewer.png is not uniform',
      async () => {
        const stats = await screenshotStats(page, path.join(outDir, 'viewer.png'));
        check(looksRendered(stats), `viewer.png looks blank: ${describeStats(stats)}`);
      },
    ],
    [
      'scrolling shows other slices',
      async () => {
        needViewer();
        const canvasSelector = VIEWPORT_CANVAS;
        const before = await canvasSignature(page, canvasSelector);
        const box = await page.locator(VIEWPORT_PANE).first().boundingBox();
        check(box, 'no viewport element to scroll in');
        await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
        const target = Math.ceil(files.length / 2);
        const position = new RegExp(`\\((\\d+)/${files.length}\\)`);
        const viewport = page.locator(VIEWPORT_PANE).first();
        await poll(`scrolling to slice ${target}`, timeoutMs, async () => {
          const text = (await viewport.innerText().catch(() => '')).replace(/\s+/g, ' ');
          const at = Number(position.exec(text)?.[1] ?? 0);
          if (at < target) {
            await page.mouse.wheel(0, 120);
          }
          return { ok: at >= target, detail: `overlay ${JSON.stringify(text)}` };
        });
        const after = await poll('the new slice on the canvas', timeoutMs, async () => {
          const signature = await canvasSignature(page, canvasSelector);
          return { ok: signature !== before, detail: 'canvas unchanged', signature };
        });
        const stats = await pixelStats(page, { selector: canvasSelector });
        check(looksRendered(stats), `the scrolled-to slice looks blank: ${describeStats(stats)}`);
        await page.waitForTimeout(1000);
        await page.screenshot({ path: path.join(outDir, 'viewer-scrolled.png') });
        note(`scrolled canvas ${after.signature.slice(0, 16)}: ${describeStats(stats)}`);
      },
    ],
    [
      'no DICOMweb request failed',
      async () => {
        const dicomweb = browser.badResponses.filter(r => r.url.startsWith(root));
        check(
          dicomweb.length === 0,
          'requests to the node failed:\n' +
            dicomweb
              .map(r => `${r.status} ${r.method} ${r.url}\n  Accept: ${r.accept}\n  body: ${r.body}`)
              .join('\n'),
        );
      },
    ],
  ];

  try {
    await runChecks('ohif', checks, {
      onFailure: async () => {
        console.log('--- browser console and network log ---');
        console.log(indent(log.join('\n') || '(empty)', '  '));
        console.log('--- end of browser log ---');
      },
    });
  } finally {
    fs.writeFileSync(path.join(outDir, 'ohif-console.log'), log.join('\n') + '\n');
    if (browser) {
      const { dicomwebRequests, blocked } = browser;
      console.log(`ohif: ${dicomwebRequests.length} DICOMweb requests: ${summarise(dicomwebRequests, root)}`);
      if (blocked.length > 0) {
        console.log(`note: the viewer tried to reach ${blocked.length} URL(s) off the node (blocked): ${[...new Set(blocked)].slice(0, 5).join(', ')}`);
      }
      await browser.close();
    }
  }
}

const USAGE = 'usage: node ohif.mjs [prepare VIEWER_DIR DICOMWEB_ROOT [--oidc ISSUER [--oidc-client-id ID]] [--hydrate]]';
const [command, ...rest] = process.argv.slice(2);
if (command === 'prepare') {
  const [viewerDir, root, ...options] = rest;
  let oidc;
  let clientId = 'ohif';
  let hydrate = false;
  for (let i = 0; i < options.length; i += 2) {
    const [option, value] = [options[i], options[i + 1]];
    if (option === '--hydrate') {
      hydrate = true;
      i -= 1;
    } else if (option === '--oidc' && value) {
      oidc = { issuer: value.replace(/\/+$/, '') };
    } else if (option === '--oidc-client-id' && value) {
      clientId = value;
    } else {
      console.error(`unknown or incomplete option ${option}\n${USAGE}`);
      process.exit(2);
    }
  }
  if (!viewerDir || !root) {
    console.error(USAGE);
    process.exit(2);
  }
  prepare(path.resolve(viewerDir), root.replace(/\/+$/, ''), oidc && { ...oidc, clientId }, { hydrate });
} else if (command === undefined) {
  await run();
} else {
  console.error(`unknown command ${command}; ${USAGE}`);
  process.exit(2);
}
