// Shared helpers of the browser scripts (ohif.mjs, ohif-login.mjs): headless Debian Chromium
// driven by playwright-core with every request off the allowed origins blocked and logged,
// OHIF 3.13's DOM, and pixel checks of what the viewer drew.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { checkError } from './lib.mjs';

// OHIF 3.13's DOM: a viewport pane holds the cornerstone canvas and the overlay texts.
export const VIEWPORT_PANE = '[data-cy="viewport-pane"]';
export const VIEWPORT_CANVAS = '.cornerstone-viewport-element canvas, [data-viewport-uid] canvas, canvas.cornerstone-canvas';

/** Chromium's PDF viewer: its extension (a fixed ID) and the browser's own resources. */
const PDF_VIEWER_URLS = ['chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai/', 'chrome://resources/'];

/** Chromium flags: software WebGL, headless, and nothing that talks to the internet. */
export function chromiumArgs() {
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
  // HTTPS to a node whose certificate a test CA signed: that one key is accepted (by its
  // SubjectPublicKeyInfo hash), no other certificate error is
  if (process.env.E2E_SPKI) {
    args.push(`--ignore-certificate-errors-spki-list=${process.env.E2E_SPKI}`);
  }
  return args;
}

/**
 * A fresh Chromium profile with one page. Only URLs on `origins` (and data:/blob:) may be
 * loaded; anything else is aborted and listed in `blocked`. Console messages, page errors,
 * failed requests and every answer >= 400 go to `note` and `badResponses`; each request under
 * `root` (the DICOMweb root) is passed to `onDicomweb(request)` and counted in `dicomwebRequests`.
 * `pdfViewer`: Chromium's built-in PDF viewer (an extension inside the browser) may load too.
 */
export async function openBrowser({ origins, root, note, onDicomweb, pdfViewer = false }) {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pacs-e2e-chromium-'));
  const session = { profile, context: undefined, page: undefined, badResponses: [], blocked: [], dicomwebRequests: [] };
  try {
    session.context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: chromiumArgs(),
      viewport: { width: 1440, height: 900 },
      deviceScaleFactor: 1,
      serviceWorkers: 'block',
      timeout: 60000,
    });
  } catch (err) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  const { context, badResponses, blocked, dicomwebRequests } = session;
  await context.route('**/*', route => {
    const url = route.request().url();
    const local = pdfViewer && PDF_VIEWER_URLS.some(prefix => url.startsWith(prefix));
    if (origins.some(origin => url.startsWith(`${origin}/`)) || url.startsWith('data:') || url.startsWith('blob:') || local) {
      return route.continue();
    }
    blocked.push(url);
    note(`[blocked] ${url}`);
    return route.abort('blockedbyclient');
  });
  // A user who has seen OHIF's onboarding tour and its "investigational use" notice: both
  // would cover parts of the pages.
  await context.addInitScript(() => {
    try {
      localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
      sessionStorage.setItem('investigationalUseDialog', 'hidden');
    } catch {
      // storage unavailable: both are only cosmetic
    }
  });
  const page = context.pages()[0] || (await context.newPage());
  session.page = page;
  page.on('console', msg => note(`[console.${msg.type()}] ${msg.text()}`));
  page.on('pageerror', err => note(`[pageerror] ${err.stack || err}`));
  page.on('request', req => {
    if (root && req.url().startsWith(root)) {
      dicomwebRequests.push(req.url());
      note(`[dicomweb] ${req.method()} ${req.url().slice(root.length)} (Accept: ${req.headers().accept})`);
      if (onDicomweb) {
        onDicomweb(req);
      }
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
  let closed;
  session.close = () => {
    closed ||= context
      .close()
      .catch(() => {})
      .then(() => fs.rmSync(profile, { recursive: true, force: true }));
    return closed;
  };
  return session;
}

/**
 * Pixel statistics of an image, computed in the page: a data URL (a screenshot) or, when
 * `selector` is given, the largest visible element matching it (a viewport canvas).
 */
export async function pixelStats(page, { selector, dataUrl }) {
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
export async function canvasSignature(page, selector) {
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
export function looksRendered(stats) {
  return (
    stats &&
    stats.width >= 64 &&
    stats.height >= 64 &&
    stats.brightFraction > 0.02 &&
    stats.distinctColours >= 16 &&
    stats.stddev > 8
  );
}

export function describeStats(stats) {
  if (!stats) {
    return 'no canvas';
  }
  return (
    `${stats.width}x${stats.height}, mean ${stats.mean.toFixed(1)}, stddev ${stats.stddev.toFixed(1)}, ` +
    `${(stats.brightFraction * 100).toFixed(1)}% lit, ${stats.distinctColours} colours`
  );
}

/** "3 QIDO studies, 40 frames, ..." from request URLs under the DICOMweb root. */
export function summarise(urls, root) {
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

export function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Calls `fn` every 500 ms until it answers `{ ok: true }`; fails with its last `detail`. */
export async function poll(what, timeoutMs, fn) {
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

/**
 * Regular expressions for a DICOM person name (FAMILY^GIVEN) as OHIF prints it, in any
 * format (e.g. "JOHANSSON, JAMES"), and a locator for the study list row showing it.
 */
export function studyRow(page, patientName) {
  const [family, given] = patientName.split('^');
  const familyRe = new RegExp(escapeRegExp(family), 'i');
  const givenRe = new RegExp(escapeRegExp(given || family), 'i');
  const row = page
    .locator('tr, [role="row"], [data-cy^="studyRow"]')
    .filter({ hasText: familyRe })
    .filter({ hasText: givenRe });
  return { family, familyRe, givenRe, row };
}

/**
 * Waits until the largest viewport canvas shows a rendered image, then takes a screenshot to
 * `screenshot` (also when it never does). Returns the canvas statistics.
 */
export async function waitForRenderedViewport(page, { timeoutMs, screenshot }) {
  let result;
  try {
    result = await poll('a viewport canvas with a rendered image', timeoutMs, async () => {
      const stats = await pixelStats(page, { selector: VIEWPORT_CANVAS });
      return { ok: looksRendered(stats), detail: describeStats(stats), stats };
    });
  } finally {
    // let the overlays and thumbnails settle before the picture is taken
    await page.waitForTimeout(result ? 2000 : 0);
    await page.screenshot({ path: screenshot });
  }
  return result.stats;
}

/** Checks that a screenshot file is not blank (a rendered image somewhere on it). */
export async function screenshotStats(page, file) {
  const png = fs.readFileSync(file);
  return pixelStats(page, { dataUrl: `data:image/png;base64,${png.toString('base64')}` });
}

/**
 * Puts the display set of series `seriesUid` of the open study into OHIF's active viewport
 * (displaySetService, viewportGridService.setDisplaySetsForViewport), as a user dragging its
 * thumbnail does; returns the display set's UID.
 */
export async function showDisplaySet(page, seriesUid, timeoutMs) {
  const { displaySetUid } = await poll(`a display set for series ${seriesUid}`, timeoutMs, async () => {
    const found = await page.evaluate(uid => {
      const s = window.services;
      const all = s?.displaySetService?.getActiveDisplaySets?.() || [];
      const ds = all.find(d => d.SeriesInstanceUID === uid);
      return {
        uid: ds?.displaySetInstanceUID,
        all: all.map(d => `${d.Modality} ${d.SeriesDescription || ''} ${d.SeriesInstanceUID}`),
      };
    }, seriesUid);
    return { ok: Boolean(found.uid), detail: JSON.stringify(found.all), displaySetUid: found.uid };
  });
  await page.evaluate(uid => {
    const grid = window.services.viewportGridService;
    grid.setDisplaySetsForViewport({
      viewportId: grid.getActiveViewportId(),
      displaySetInstanceUIDs: [uid],
    });
  }, displaySetUid);
  return displaySetUid;
}
