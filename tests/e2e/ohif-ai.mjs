// The AI worker's results as a radiologist sees them in OHIF: for each analysed series (CTs of
// 512 x 512 and 250 x 250 and the deepbrain reference MR, so a BINARY, a FRACTIONAL and a
// LABELMAP Segmentation), after the worker has stored its SEG, TID 1500 SR and Encapsulated
// PDF report, the SEG's overlay must cover the mask on the slice with the most segments, each
// TID 1501 length of the SR must be listed in OHIF's measurement panel and drawn on its slice
// with its value, and the report must be fetched and drawn by Chromium's PDF viewer.
//
//   node ohif-ai.mjs
//       Environment:
//         PACS_DICOMWEB   the node's DICOMweb root; the viewer (prepared with
//                         `ohif.mjs prepare ... --hydrate`) is served at / on the same origin
//         E2E_AI_CASES    NAME=STUDY_UID/SOURCE_SERIES_UID, comma-separated (e.g.
//                         ct512=1.2.3/1.2.4,mr=1.2.5/1.2.6): the series the worker analysed
//         E2E_ARTIFACTS   screenshots (ai-NAME-study.png: the study opened; ai-NAME-seg.png,
//                         ai-NAME-sr.png, ai-NAME-sr-listed.png: the measurement panel,
//                         ai-NAME-sr-drawn.png: the longest length on its
//                         slice, ai-NAME-report.png), expectations (ai-NAME-expected.json) and
//                         ohif-ai-console.log
//         CHROMIUM, E2E_TIMEOUT_MS as for ohif.mjs; PYTHON (default python3)
//
// What OHIF should draw comes from the objects themselves, read by highdicom
// (tests/peers/seg_key_slice.py), not from OHIF: the chosen slice's mask is mapped to the
// canvas with the viewport's own world-to-canvas transform, and each pixel centre of the
// source grid (away from the mask's border) is sampled. The source images are greyscale, so a
// sampled pixel whose channels differ is the overlay's colour.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBrowser, poll, showDisplaySet, waitForRenderedViewport } from './browser.mjs';
import { artifactsDir, check, dicomwebRoot, indent, requireEnv, runChecks } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * A sampled pixel is the overlay's colour when its channels differ by more than this: greyscale
 * images render with equal channels (a few levels of difference from interpolation at most),
 * while the segments' colours blended at OHIF's fill opacity differ by well over it.
 */
export const TINT_THRESHOLD = 12;
/**
 * At least this share of the mask's pixels must show the overlay (pixels next to the mask's
 * border are not sampled, so a correct overlay gives 100 %; a shifted or striped one, as OHIF
 * drew mid-byte BINARY frames, falls far below) ...
 */
export const MIN_INSIDE_COVERED = 0.9;
/** ... and at most this share of the pixels outside it. */
export const MAX_OUTSIDE_COVERED = 0.05;
/** OHIF labels an SR length with the NUM's value rounded to 2 decimals (at most 0.005 off). */
export const DIAMETER_TOLERANCE_MM = 0.02;
/** The drawn line's end points are the SR's image points mapped to world (floating point). */
export const LINE_TOLERANCE_MM = 0.001;
/**
 * The PDF viewport shows the report when at least this share of it is the page's white (an A4
 * page fitted to the viewport's width covers far more; "No online PDF viewer installed" on
 * OHIF's black covers nothing) ...
 */
export const MIN_PDF_WHITE = 0.15;
/** ... and the page holds anti-aliased text and the key image, not one flat colour. */
export const MIN_PDF_COLOURS = 64;

function parseCases(text) {
  return text.split(',').map(entry => {
    const m = /^([a-z0-9-]+)=([0-9.]+)\/([0-9.]+)$/i.exec(entry.trim());
    check(m, `E2E_AI_CASES: cannot read ${JSON.stringify(entry)} (NAME=STUDY/SERIES)`);
    return { name: m[1], study: m[2], series: m[3] };
  });
}

/** tests/peers/seg_key_slice.py: the chosen slice, its mask and the study's AI series. */
function expectation(root, c, outDir) {
  const script = path.join(here, '..', 'peers', 'seg_key_slice.py');
  const out = spawnSync(process.env.PYTHON || 'python3', [script, root, c.study, c.series], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  check(out.status === 0, `seg_key_slice.py for ${c.name} failed: ${out.error || out.stderr}`);
  fs.writeFileSync(path.join(outDir, `ai-${c.name}-expected.json`), out.stdout);
  return JSON.parse(out.stdout);
}

/** Opens the study and puts the display set of `seriesUid` into the active viewport. */
async function showSeries(page, { origin, study, seriesUid, timeoutMs, screenshot }) {
  await page.goto(`${origin}/viewer?StudyInstanceUIDs=${encodeURIComponent(study)}`, {
    waitUntil: 'domcontentloaded',
    timeout: 60000,
  });
  await waitForRenderedViewport(page, { timeoutMs, screenshot });
  return showDisplaySet(page, seriesUid, timeoutMs);
}

/** Scrolls the active cornerstone viewport to the source instance `sopUid`. */
async function showInstance(page, sopUid, timeoutMs) {
  await poll(`the viewport showing instance ${sopUid}`, timeoutMs, async () => {
    const state = await page.evaluate(uid => {
      const s = window.services;
      const id = s.viewportGridService.getActiveViewportId();
      const vp = s.cornerstoneViewportService.getCornerstoneViewport(id);
      if (!vp || !vp.getCurrentImageId) {
        return { ok: false, detail: 'no cornerstone viewport' };
      }
      const current = vp.getCurrentImageId() || '';
      if (current.includes(uid)) {
        return { ok: true, detail: current };
      }
      const ids = (vp.getImageIds && vp.getImageIds()) || [];
      const index = ids.findIndex(i => i.includes(uid));
      if (index >= 0) {
        const tried = (window.__e2eTried = (window.__e2eTried || 0) + 1);
        // a volume viewport may count slices from the other end
        const imageIndex = tried % 2 === 1 ? index : ids.length - 1 - index;
        window.cornerstone.utilities.jumpToSlice(vp.element, { imageIndex });
      }
      return { ok: false, detail: `at ${current}, ${ids.length} images, index ${index}` };
    }, sopUid);
    return state;
  });
  await page.waitForTimeout(1500);
}

/**
 * Samples the active viewport's canvas at the centre of every source pixel of the expected
 * mask's slice that is not next to the mask's border: how many inside and outside the mask
 * show the overlay's colour.
 */
async function sampleOverlay(page, expected, threshold) {
  return page.evaluate(
    ({ e, threshold }) => {
      const s = window.services;
      const vp = s.cornerstoneViewportService.getCornerstoneViewport(s.viewportGridService.getActiveViewportId());
      const canvas = vp.getCanvas ? vp.getCanvas() : vp.canvas;
      const w = canvas.width;
      const h = canvas.height;
      const tmp = document.createElement('canvas');
      tmp.width = w;
      tmp.height = h;
      const ctx = tmp.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(canvas, 0, 0);
      const data = ctx.getImageData(0, 0, w, h).data;
      const sx = w / canvas.clientWidth;
      const sy = h / canvas.clientHeight;
      const ipp = e.image_position;
      const rowDir = e.image_orientation.slice(0, 3);
      const colDir = e.image_orientation.slice(3, 6);
      const [rowSpacing, colSpacing] = e.pixel_spacing;
      const at = (r, c) => r >= 0 && c >= 0 && r < e.rows && c < e.columns && e.mask[r][c] === '1';
      const counts = { inside: 0, insideCovered: 0, outside: 0, outsideCovered: 0, offCanvas: 0 };
      for (let r = 0; r < e.rows; r += 1) {
        for (let c = 0; c < e.columns; c += 1) {
          const m = at(r, c);
          let border = false;
          for (let dr = -1; dr <= 1 && !border; dr += 1) {
            for (let dc = -1; dc <= 1; dc += 1) {
              if (at(r + dr, c + dc) !== m) {
                border = true;
                break;
              }
            }
          }
          if (border) {
            continue;
          }
          const world = [0, 1, 2].map(i => ipp[i] + c * colSpacing * rowDir[i] + r * rowSpacing * colDir[i]);
          const [x, y] = vp.worldToCanvas(world);
          const px = Math.round(x * sx);
          const py = Math.round(y * sy);
          if (px < 0 || py < 0 || px >= w || py >= h) {
            counts.offCanvas += 1;
            continue;
          }
          const i = (py * w + px) * 4;
          const tint = Math.max(data[i], data[i + 1], data[i + 2]) - Math.min(data[i], data[i + 1], data[i + 2]);
          const covered = tint > threshold ? 1 : 0;
          if (m) {
            counts.inside += 1;
            counts.insideCovered += covered;
          } else {
            counts.outside += 1;
            counts.outsideCovered += covered;
          }
        }
      }
      counts.canvas = `${w}x${h}`;
      counts.imageId = vp.getCurrentImageId();
      return counts;
    },
    { e: expected, threshold },
  );
}

/** Strings of a measurement's display text (OHIF 3.13: { primary: [...], secondary: [...] }). */
function flatten(displayText) {
  if (!displayText) {
    return [];
  }
  if (typeof displayText === 'string') {
    return [displayText];
  }
  if (Array.isArray(displayText)) {
    return displayText.flatMap(flatten);
  }
  return Object.values(displayText).flatMap(flatten);
}

async function run() {
  const root = dicomwebRoot();
  const origin = new URL(root).origin;
  const cases = parseCases(requireEnv('E2E_AI_CASES', 'NAME=STUDY/SERIES,... of the analysed series'));
  const timeoutMs = Number(process.env.E2E_TIMEOUT_MS || 120000);
  const outDir = artifactsDir();
  const log = [];
  const note = line => log.push(`${new Date().toISOString()} ${line}`);
  let browser;
  let page;
  const expected = {};
  const need = name => {
    check(expected[name], `not run: no expectation for ${name}`);
    return expected[name];
  };

  const checks = [
    [
      'launch Chromium',
      async () => {
        browser = await openBrowser({ origins: [origin], root, note, pdfViewer: true });
        page = browser.page;
      },
      { fatal: true },
    ],
  ];
  for (const c of cases) {
    checks.push(
      [
        `${c.name}: SEG, SR and report stored; the SEG read by highdicom`,
        async () => {
          const e = expectation(root, c, outDir);
          note(`${c.name}: ${e.seg_type} SEG ${e.seg_series_uid}, slice ${e.slice_index + 1}/${e.slices} (${e.sop_instance_uid}), ${e.mask_pixels} mask pixels of ${e.rows}x${e.columns}`);
          console.log(`     ${e.seg_type} SEG; slice ${e.slice_index + 1} of ${e.slices}: ${e.mask_pixels} of ${e.rows}x${e.columns} pixels in ${e.segment_labels.join(', ')}`);
          check(e.mask_pixels > 0, `the chosen slice of ${c.name} has an empty mask`);
          expected[c.name] = e;
        },
      ],
      [
        `${c.name}: the SEG overlay covers the mask`,
        async () => {
          const e = need(c.name);
          await showSeries(page, {
            origin,
            study: c.study,
            seriesUid: e.seg_series_uid,
            timeoutMs,
            screenshot: path.join(outDir, `ai-${c.name}-study.png`),
          });
          await poll('the segmentation loaded onto its source images', timeoutMs, async () => {
            const state = await page.evaluate(() => {
              const s = window.services;
              const id = s.viewportGridService.getActiveViewportId();
              const segs = s.segmentationService.getSegmentations?.() || [];
              const reps = s.segmentationService.getSegmentationRepresentations?.(id) || [];
              const vp = s.cornerstoneViewportService.getCornerstoneViewport(id);
              return { segs: segs.length, reps: reps.length, image: vp?.getCurrentImageId?.() || null };
            });
            return { ok: state.segs > 0 && state.reps > 0 && Boolean(state.image), detail: JSON.stringify(state) };
          });
          await showInstance(page, e.sop_instance_uid, timeoutMs);
          await page.screenshot({ path: path.join(outDir, `ai-${c.name}-seg.png`) });
          const counts = await sampleOverlay(page, e, TINT_THRESHOLD);
          note(`${c.name} overlay samples: ${JSON.stringify(counts)}`);
          const inside = counts.insideCovered / Math.max(1, counts.inside);
          const outside = counts.outsideCovered / Math.max(1, counts.outside);
          console.log(`     overlay on ${(100 * inside).toFixed(1)}% of ${counts.inside} mask pixels, ${(100 * outside).toFixed(1)}% of ${counts.outside} others (${counts.canvas} canvas)`);
          check(counts.offCanvas === 0, `${counts.offCanvas} pixels of the slice are off the canvas`);
          check(counts.inside >= 10 && counts.outside >= 10, `too few samples: ${JSON.stringify(counts)}`);
          check(
            inside >= MIN_INSIDE_COVERED && outside <= MAX_OUTSIDE_COVERED,
            `the overlay does not match the mask: on ${(100 * inside).toFixed(1)}% of the mask (need >= ${100 * MIN_INSIDE_COVERED}%) and ${(100 * outside).toFixed(1)}% outside it (need <= ${100 * MAX_OUTSIDE_COVERED}%)`,
          );
        },
      ],
      [
        `${c.name}: the SR's diameters listed in OHIF's measurement panel and drawn with their values`,
        async () => {
          const e = need(c.name);
          await showSeries(page, {
            origin,
            study: c.study,
            seriesUid: e.sr_series_uid,
            timeoutMs,
            screenshot: path.join(outDir, `ai-${c.name}-study.png`),
          });
          // Every TID 1501 length of the SR (read by highdicom) must come back as a Length
          // measurement of OHIF on the same source image, showing the SR's value: OHIF restores
          // (hydrates) the report into its measurement service, which is what its measurement
          // panel lists, because the group's Tracking Identifier starts with Cornerstone's
          // Length tool's (docs/ai.md, "The report"). The viewer is prepared with --hydrate, so
          // that happens without a prompt, as after a radiologist's click on the SR's badge.
          let found;
          try {
            found = await poll("each SR diameter a Length measurement of OHIF's, with its value", 60000, async () => {
              const state = await page.evaluate(() => {
                const annotations = new Map(
                  window.cornerstoneTools.annotation.state.getAllAnnotations().map(a => [a.annotationUID, a]),
                );
                return window.services.measurementService.getMeasurements().map(m => {
                  const a = annotations.get(m.uid);
                  return {
                    uid: m.uid,
                    tool: m.toolName,
                    sop: m.SOPInstanceUID || '',
                    image: m.referencedImageId || a?.metadata?.referencedImageId || '',
                    displayText: m.displayText || null,
                    points: a?.data?.handles?.points || [],
                  };
                });
              });
              const length = m => {
                const [p, q] = m?.points || [];
                return p && q ? Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]) : NaN;
              };
              const matches = e.diameters.map(d => {
                // several lengths may lie on one slice: the one on it as long as this one
                const m = state
                  .filter(x => x.tool === 'Length' && (x.sop === d.sop_instance_uid || x.image.includes(d.sop_instance_uid)))
                  .sort((a, b) => Math.abs(length(a) - d.value) - Math.abs(length(b) - d.value))[0];
                const texts = m ? flatten(m.displayText) : [];
                const shown = texts.map(t => /(\d+(?:\.\d+)?)\s*mm\b/.exec(t)).find(Boolean) || null;
                // OHIF rounds what it shows (2 decimals below 10 mm, 1 below 100, none above)
                const decimals = shown && shown[1].includes('.') ? shown[1].split('.')[1].length : 0;
                const drawnLength = length(m);
                return {
                  tracking: d.tracking_identifier,
                  expected: d.value,
                  shown: shown ? shown[0] : null,
                  drawnLength,
                  uid: m?.uid,
                  sop: d.sop_instance_uid,
                  valueOk:
                    Boolean(shown) &&
                    Math.abs(Number(shown[1]) - d.value) <= 0.5 * 10 ** -decimals + 1e-9 &&
                    Math.abs(drawnLength - d.value) <= DIAMETER_TOLERANCE_MM,
                };
              });
              return {
                ok: matches.every(m => m.valueOk),
                detail: `measurements ${JSON.stringify(state).slice(0, 800)}; matched ${JSON.stringify(matches)}`,
                matches,
              };
            });
          } finally {
            await page.screenshot({ path: path.join(outDir, `ai-${c.name}-sr.png`) });
          }
          for (const m of found.matches) {
            console.log(`     ${m.tracking}: SR ${m.expected.toFixed(3)} mm; OHIF's measurement "${m.shown}", line ${m.drawnLength.toFixed(3)} mm`);
          }
          // listed: the measurement panel, opened as a radiologist opens it, shows each value
          await page.evaluate(() => {
            if (!document.querySelector('[data-cy="measurements-panel"], [data-cy="trackedMeasurements-panel"]')) {
              document.querySelector('[data-cy="side-panel-header-right"]')?.click();
            }
          });
          const listed = await poll("the SR's lengths listed in OHIF's measurement panel", 20000, async () => {
            const panel = await page.evaluate(() => {
              const tab = [...document.querySelectorAll('[data-cy$="-btn"]')].find(b => /easurement/.test(b.dataset.cy));
              const body = document.querySelector('[data-cy="measurements-panel"], [data-cy="trackedMeasurements-panel"]');
              if (!body && tab) {
                tab.click();
              }
              return { tab: tab?.dataset.cy || null, text: body ? body.innerText : '' };
            });
            const missing = found.matches.filter(m => !panel.text.includes(m.shown));
            const count = /Measurements \((\d+)\)/.exec(panel.text);
            return {
              ok: Boolean(count) && Number(count[1]) === found.matches.length && missing.length === 0,
              detail: JSON.stringify(panel).slice(0, 600),
              panel,
            };
          });
          note(`${c.name}: OHIF's measurement panel: ${JSON.stringify(listed.panel.text)}`);
          await page.screenshot({ path: path.join(outDir, `ai-${c.name}-sr-listed.png`) });
          // drawn: on its own slice, the annotation's SVG text box shows the value
          const largest = found.matches.reduce((a, b) => (b.expected > a.expected ? b : a));
          for (const m of found.matches) {
            await showInstance(page, m.sop, timeoutMs);
            const drawn = await poll(`the ${m.tracking} length drawn on its slice`, 20000, async () => {
              const svg = await page.evaluate(uid => {
                const g = document.querySelector(`svg.svg-layer g[data-annotation-uid="${uid}"]`);
                return { group: Boolean(g), text: g ? g.textContent : '' };
              }, m.uid);
              return { ok: svg.group && svg.text.includes(m.shown), detail: JSON.stringify(svg), svg };
            });
            note(`${c.name} ${m.tracking}: drawn ${JSON.stringify(drawn.svg)}`);
            if (m === largest) {
              await page.screenshot({ path: path.join(outDir, `ai-${c.name}-sr-drawn.png`) });
            }
          }
        },
      ],
      [
        `${c.name}: the report (Encapsulated PDF) renders`,
        async () => {
          const e = need(c.name);
          // OHIF 3.13 fetches the document as the bulk data of Encapsulated Document
          // (0042,0011) (or /rendered, when the metadata has no BulkDataURI for it)
          const fetched = page.waitForResponse(
            r =>
              r.url().includes(`/series/${e.doc_series_uid}/`) &&
              (/\/bulkdata\/00420011/i.test(r.url()) || /\/rendered(\?|$)/.test(r.url())),
            { timeout: timeoutMs },
          );
          await showSeries(page, {
            origin,
            study: c.study,
            seriesUid: e.doc_series_uid,
            timeoutMs,
            screenshot: path.join(outDir, `ai-${c.name}-study.png`),
          });
          try {
            const response = await fetched;
            const type = response.headers()['content-type'] || '';
            const body = await response.body().catch(() => Buffer.alloc(0));
            note(`${c.name} report: ${response.status()} ${type} ${body.length} bytes from ${response.url()}`);
            check(
              response.status() === 200 && body.subarray(0, 512).toString('latin1').includes('%PDF-'),
              `${response.url()} answered ${response.status()} ${type}: ${body.subarray(0, 120).toString('latin1')}`,
            );
            // WADO-RS /rendered of the instance: the document in its own media type
            const instance = /\/instances\/([0-9.]+)\//.exec(response.url())[1];
            const rendered = await page.evaluate(async url => {
              const r = await fetch(url, { headers: { Accept: 'application/pdf' } });
              const b = new Uint8Array(await r.arrayBuffer());
              return { status: r.status, type: r.headers.get('content-type'), head: String.fromCharCode(...b.slice(0, 5)) };
            }, `${root}/studies/${c.study}/series/${e.doc_series_uid}/instances/${instance}/rendered`);
            check(
              rendered.status === 200 && (rendered.type || '').startsWith('application/pdf') && rendered.head === '%PDF-',
              `/rendered of the report answered ${JSON.stringify(rendered)}`,
            );
            const viewer = await poll('the PDF in the viewport', 30000, async () => {
              const state = await page.evaluate(() => {
                const el = document.querySelector('object[type="application/pdf"]');
                const r = el?.getBoundingClientRect();
                return { present: Boolean(el), data: el?.getAttribute('data') || '', width: r?.width || 0, height: r?.height || 0 };
              });
              return { ok: state.present && state.data.length > 0 && state.width > 100 && state.height > 100, detail: JSON.stringify(state), state };
            });
            // Chromium's PDF viewer draws the page: a white sheet with dark text and the key
            // image, in a viewport that is otherwise black (OHIF) or dark grey (the viewer)
            const pixels = await poll('the PDF page drawn in the viewport', 30000, async () => {
              const png = await page.locator('object[type="application/pdf"]').screenshot();
              const stats = await page.evaluate(async url => {
                const img = new Image();
                img.src = url;
                await img.decode();
                const c = document.createElement('canvas');
                c.width = img.naturalWidth;
                c.height = img.naturalHeight;
                const ctx = c.getContext('2d', { willReadFrequently: true });
                ctx.drawImage(img, 0, 0);
                const d = ctx.getImageData(0, 0, c.width, c.height).data;
                let white = 0;
                let dark = 0;
                const colours = new Set();
                for (let i = 0; i < d.length; i += 4) {
                  const lo = Math.min(d[i], d[i + 1], d[i + 2]);
                  const hi = Math.max(d[i], d[i + 1], d[i + 2]);
                  if (lo > 235) white += 1;
                  if (hi < 80) dark += 1;
                  colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                }
                const n = d.length / 4;
                return { width: c.width, height: c.height, white: white / n, dark: dark / n, colours: colours.size };
              }, `data:image/png;base64,${png.toString('base64')}`);
              return {
                ok: stats.white >= MIN_PDF_WHITE && stats.colours >= MIN_PDF_COLOURS,
                detail: JSON.stringify(stats),
                stats,
              };
            });
            console.log(`     ${response.status()} ${type}, ${body.length} bytes; /rendered ${rendered.status} ${rendered.type}; page drawn: ${JSON.stringify(pixels.stats)}`);
            note(`${c.name} report shown in ${JSON.stringify(viewer.state)}: ${JSON.stringify(pixels.stats)}`);
          } finally {
            await page.waitForTimeout(1500);
            await page.screenshot({ path: path.join(outDir, `ai-${c.name}-report.png`) });
          }
        },
      ],
    );
  }

  try {
    await runChecks('ohif-ai', checks, {
      onFailure: async () => {
        console.log('--- browser console and network log (last 80 lines) ---');
        console.log(indent(log.slice(-80).join('\n') || '(empty)', '  '));
        console.log('--- end of browser log ---');
      },
    });
  } finally {
    fs.writeFileSync(path.join(outDir, 'ohif-ai-console.log'), log.join('\n') + '\n');
    if (browser) {
      await browser.close();
    }
  }
}

await run();
