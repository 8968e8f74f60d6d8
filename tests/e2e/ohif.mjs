// The OHIF viewer (the prebuilt @ohif/app package from npm) against a running pacs node, in
// headless Debian Chromium driven by playwright-core.
//
//   node ohif.mjs prepare VIEWER_DIR DICOMWEB_ROOT
//       copies node_modules/@ohif/app/dist to VIEWER_DIR and writes an app-config.js whose
//       only data source is the node's DICOMweb at DICOMWEB_ROOT; the node then serves
//       VIEWER_DIR with `pacs serve --viewer-dir VIEWER_DIR`.
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
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import {
  TAG,
  artifactsDir,
  check,
  checkEqual,
  checkError,
  dicomFacts,
  dicomFiles,
  dicomwebRoot,
  indent,
  requireEnv,
  runChecks,
} from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

// OHIF 3.13's DOM: a viewport pane holds the cornerstone canvas and the overlay texts.
const VIEWPORT_PANE = '[data-cy="viewport-pane"]';
const VIEWPORT_CANVAS = '.cornerstone-viewport-element canvas, [data-viewport-uid] canvas, canvas.cornerstone-canvas';

function appConfig(root) {
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
  return (
    '// Written by tests/e2e/ohif.mjs: OHIF against the pacs node under test.\n' +
    `window.config = ${JSON.stringify(config, null, 2)};\n`
  );
}

function prepare(viewerDir, root) {
  const dist = path.join(here, 'node_modules', '@ohif', 'app', 'dist');
  check(
    fs.existsSync(path.join(dist, 'index.html')),
    `${dist}/index.html missing: run \`npm ci\` in ${here} first`,
  );
  fs.rmSync(viewerDir, { recursive: true, force: true });
  fs.cpSync(dist, viewerDir, { recursive: true });
  fs.writeFileSync(path.join(viewerDir, 'app-config.js'), appConfig(root));
  console.log(`OHIF ${readVersion()} prepared in ${viewerDir} for ${root}`);
}

function readVersion() {
  const pkg = JSON.parse(
    fs.readFileSync(path.join(here, 'node_modules', '@ohif', 'app', 'package.json'), 'utf8'),
  );
  return pkg.version;
}

/** Chromium flags: software WebGL, headless, and nothing that talks to the internet. */
function chromiumArgs() {
  const args = [
    '--headless',
    '--disable-gpu',
    '--use-gl=angle',
    '--use-angle=swiftshader',
    '--enable-unsafe-swiftshader',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-quic',
    '--disable-domain-reliability',
    '--disable-client-side-phishing-detection',
    '--metrics-recording-only',
    // no DNS lookups at all: everything the test loads is on 127.0.0.1
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
  ];
  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    args.push('--no-sandbox');
  }
  return args;
}

/**
 * Pixel statistics of an image, computed in the page: a data URL (a screenshot) or, when
 * `selector` is given, the largest visible element matching it (a viewport canvas).
 */
async function pixelStats(page, { selector, dataUrl }) {
  return page.evaluate(
    async ({ selector, dataUrl }) => {
      let source;
      if (dataUrl) {
        source = new Image();
        source.src = dataUrl;
        await source.decode();
      } else {
        const candidates = [...document.querySelectorAll(selector)].filter(
          c => c.width > 0 && c.height > 0 && c.getBoundingClientRect().width > 0,
        );
        candidates.sort((a, b) => b.width * b.height - a.width * a.height);
        source = candidates[0];
        if (!source) {
          return null;
        }
      }
      const w = source.naturalWidth || source.width;
      const h = source.naturalHeight || source.height;
      const tmp = document.createElement('canvas');
      tmp.width = w;
      tmp.height = h;
      const ctx = tmp.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(source, 0, 0);
      const data = ctx.getImageData(0, 0, w, h).data;
      const histogram = new Map();
      let sum = 0;
      let sum2 = 0;
      let bright = 0;
      const n = w * h;
      for (let i = 0; i < data.length; i += 4) {
        const y = (data[i] * 299 + data[i + 1] * 587 + data[i + 2] * 114) / 1000;
        sum += y;
        sum2 += y * y;
        if (y > 32) {
          bright += 1;
        }
        const key = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
        histogram.set(key, (histogram.get(key) || 0) + 1);
      }
      const mean = sum / n;
      return {
        width: w,
        height: h,
        mean,
        stddev: Math.sqrt(Math.max(0, sum2 / n - mean * mean)),
        brightFraction: bright / n,
        distinctColours: histogram.size,
      };
    },
    { selector, dataUrl },
  );
}

/** A short digest of the pixels of the largest canvas matching `selector`. */
async function canvasSignature(page, selector) {
  return page.evaluate(async selector => {
    const canvases = [...document.querySelectorAll(selector)].filter(c => c.width > 0 && c.height > 0);
    canvases.sort((a, b) => b.width * b.height - a.width * a.height);
    if (!canvases[0]) {
      return '';
    }
    const tmp = document.createElement('canvas');
    tmp.width = canvases[0].width;
    tmp.height = canvases[0].height;
    const ctx = tmp.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(canvases[0], 0, 0);
    const data = ctx.getImageData(0, 0, tmp.width, tmp.height).data;
    const digest = await crypto.subtle.digest('SHA-256', data);
    return [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('');
  }, selector);
}

/** A rendered CT slice: a fair part of the canvas lit, many grey levels, real contrast. */
function looksRendered(stats) {
  return (
    stats &&
    stats.width >= 64 &&
    stats.height >= 64 &&
    stats.brightFraction > 0.02 &&
    stats.distinctColours >= 16 &&
    stats.stddev > 8
  );
}

function describeStats(stats) {
  if (!stats) {
    return 'no canvas';
  }
  return (
    `${stats.width}x${stats.height}, mean ${stats.mean.toFixed(1)}, stddev ${stats.stddev.toFixed(1)}, ` +
    `${(stats.brightFraction * 100).toFixed(1)}% lit, ${stats.distinctColours} colours`
  );
}

/** "3 QIDO studies, 40 frames, ..." from request URLs under the DICOMweb root. */
function summarise(urls, root) {
  const kinds = new Map();
  for (const url of urls) {
    const p = new URL(url).pathname.slice(new URL(root).pathname.length);
    const kind = p
      .replace(/\/studies\/[^/]+/, '/studies/{s}')
      .replace(/\/series\/[^/]+/, '/series/{s}')
      .replace(/\/instances\/[^/]+/, '/instances/{i}')
      .replace(/\/frames\/[^/]+/, '/frames/{n}')
      .replace(/\/bulkdata\/.*/, '/bulkdata/...');
    kinds.set(kind, (kinds.get(kind) || 0) + 1);
  }
  return [...kinds].map(([kind, n]) => `${n} x ${kind}`).join(', ') || 'none';
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function poll(what, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) {
      return last;
    }
    if (Date.now() > deadline) {
      throw checkError(`${what}: not reached within ${timeoutMs} ms (last: ${last.detail})`);
    }
    await new Promise(resolve => setTimeout(resolve, 500));
  }
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
  const [family, given] = patientName.split('^');
  const familyRe = new RegExp(escapeRegExp(family), 'i');
  const givenRe = new RegExp(escapeRegExp(given || family), 'i');
  const timeoutMs = Number(process.env.E2E_TIMEOUT_MS || 120000);
  const outDir = artifactsDir();
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

  const log = [];
  const note = line => log.push(`${new Date().toISOString()} ${line}`);
  const badResponses = [];
  const blocked = [];
  const dicomwebRequests = [];

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pacs-e2e-chromium-'));
  let context;
  let page;
  let viewerRendered = false;
  const needViewer = () => check(viewerRendered, 'not run: the viewer did not render');

  const checks = [
    [
      'launch Chromium',
      async () => {
        context = await chromium.launchPersistentContext(profile, {
          executablePath,
          headless: true,
          args: chromiumArgs(),
          viewport: { width: 1440, height: 900 },
          deviceScaleFactor: 1,
          serviceWorkers: 'block',
          timeout: 60000,
        });
        // Only the node on the loopback address may be reached.
        await context.route('**/*', route => {
          const url = route.request().url();
          if (url.startsWith(`${origin}/`) || url.startsWith('data:') || url.startsWith('blob:')) {
            return route.continue();
          }
          blocked.push(url);
          note(`[blocked] ${url}`);
          return route.abort('blockedbyclient');
        });
        // A user who has seen OHIF's onboarding tour: its pop-up would cover the viewport.
        await context.addInitScript(() => {
          try {
            localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
          } catch {
            // storage unavailable: the tour is only cosmetic
          }
        });
        page = context.pages()[0] || (await context.newPage());
        page.on('console', msg => note(`[console.${msg.type()}] ${msg.text()}`));
        page.on('pageerror', err => note(`[pageerror] ${err.stack || err}`));
        page.on('request', req => {
          if (req.url().startsWith(root)) {
            dicomwebRequests.push(req.url());
            note(`[dicomweb] ${req.method()} ${req.url().slice(root.length)} (Accept: ${req.headers().accept})`);
          }
        });
        page.on('requestfailed', req => {
          if (!blocked.includes(req.url())) {
            note(`[requestfailed] ${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
          }
        });
        page.on('response', async res => {
          if (res.status() >= 400) {
            let body = '';
            try {
              body = (await res.text()).slice(0, 500);
            } catch {
              // body not available (e.g. navigation away)
            }
            const req = res.request();
            const entry = {
              method: req.method(),
              url: res.url(),
              status: res.status(),
              accept: req.headers().accept,
              body,
            };
            badResponses.push(entry);
            note(`[http ${entry.status}] ${entry.method} ${entry.url} (Accept: ${entry.accept}) -> ${body}`);
          }
        });
        note(`browser ${context.browser()?.version() ?? '(persistent context)'}`);
      },
      { fatal: true },
    ],
    [
      'study list shows the synthetic study',
      async () => {
        await page.goto(`${origin}/`, { waitUntil: 'domcontentloaded', timeout: 60000 });
        // OHIF prints person names in its own format (e.g. "JOHANSSON, JAMES"): look for a
        // row with both the family and the given name, in any format.
        const row = page
          .locator('tr, [role="row"], [data-cy^="studyRow"]')
          .filter({ hasText: familyRe })
          .filter({ hasText: givenRe });
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
        let result;
        try {
          result = await poll('a viewport canvas with a rendered image', timeoutMs, async () => {
            const stats = await pixelStats(page, {
              selector: VIEWPORT_CANVAS,
            });
            return { ok: looksRendered(stats), detail: describeStats(stats), stats };
          });
        } finally {
          // let the overlays and thumbnails settle before the picture is taken
          await page.waitForTimeout(result ? 2000 : 0);
          await page.screenshot({ path: path.join(outDir, 'viewer.png') });
        }
        viewerRendered = true;
        note(`viewport canvas: ${describeStats(result.stats)}`);
        console.log(`     viewport canvas: ${describeStats(result.stats)}`);
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
        const png = fs.readFileSync(path.join(outDir, 'viewer.png'));
        const stats = await pixelStats(page, { dataUrl: `data:image/png;base64,${png.toString('base64')}` });
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
        const dicomweb = badResponses.filter(r => r.url.startsWith(root));
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
    console.log(`ohif: ${dicomwebRequests.length} DICOMweb requests: ${summarise(dicomwebRequests, root)}`);
    if (blocked.length > 0) {
      console.log(`note: the viewer tried to reach ${blocked.length} URL(s) off the node (blocked): ${[...new Set(blocked)].slice(0, 5).join(', ')}`);
    }
    if (context) {
      await context.close().catch(() => {});
    }
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

const [command, ...rest] = process.argv.slice(2);
if (command === 'prepare') {
  const [viewerDir, root] = rest;
  if (!viewerDir || !root) {
    console.error('usage: node ohif.mjs prepare VIEWER_DIR DICOMWEB_ROOT');
    process.exit(2);
  }
  prepare(path.resolve(viewerDir), root.replace(/\/+$/, ''));
} else if (command === undefined) {
  await run();
} else {
  console.error(`unknown command ${command}; usage: node ohif.mjs [prepare VIEWER_DIR DICOMWEB_ROOT]`);
  process.exit(2);
}
