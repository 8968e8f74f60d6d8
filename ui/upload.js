// Upload of DICOM files with STOW-RS (PS3.18 10.5): multipart/related; type="application/dicom",
// sent in batches so that a folder of thousands of files neither builds one huge request nor
// one request per file. The Blob is made of the File objects themselves: nothing is read into
// memory here.

import { upload } from './api.js';
import { h, clear, dv } from './dom.js';

const BATCH_FILES = 50;
const BATCH_BYTES = 256 * 1024 * 1024;

function batches(files) {
  const out = [];
  let cur = [];
  let size = 0;
  for (const f of files) {
    if (cur.length && (cur.length >= BATCH_FILES || size + f.size > BATCH_BYTES)) {
      out.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(f);
    size += f.size;
  }
  if (cur.length) out.push(cur);
  return out;
}

function multipart(files) {
  const boundary = `pacs-console-${crypto.getRandomValues(new Uint32Array(2)).join('-')}`;
  const parts = [];
  for (const f of files) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, f, '\r\n');
  }
  parts.push(`--${boundary}--\r\n`);
  return { blob: new Blob(parts), type: `multipart/related; type="application/dicom"; boundary=${boundary}` };
}

/** The upload widget; onDone() after the last batch (to refresh the page's lists). */
export function uploadWidget(dicomweb, onDone) {
  const input = h('input', { type: 'file', multiple: true, dataset: { input: 'upload' } });
  const progress = h('progress', { dataset: { progress: 'upload' }, max: 1, value: 0 });
  const result = h('div', { dataset: { result: 'upload' }, class: 'small' });
  input.addEventListener('change', async () => {
    const files = [...input.files];
    if (!files.length) return;
    input.disabled = true;
    const total = files.reduce((n, f) => n + f.size, 0) || 1;
    progress.max = total;
    progress.value = 0;
    let sent = 0;
    let stored = 0;
    let failed = 0;
    const reasons = [];
    result.textContent = `Uploading ${files.length} file(s)…`;
    for (const batch of batches(files)) {
      const { blob, type } = multipart(batch);
      const batchBytes = batch.reduce((n, f) => n + f.size, 0);
      try {
        const r = await upload(`${dicomweb}/studies`, blob, type, (loaded, all) => {
          progress.value = sent + (batchBytes * loaded) / (all || 1);
        });
        const ok = r.body ? (r.body['00081199'] && r.body['00081199'].Value) || [] : [];
        const bad = r.body ? (r.body['00081198'] && r.body['00081198'].Value) || [] : [];
        stored += ok.length;
        failed += bad.length;
        if (!r.body && r.status >= 400) {
          failed += batch.length;
          reasons.push(`HTTP ${r.status}`);
        }
        for (const f of bad) reasons.push(`${dv(f, '00081155') || 'instance'}: failure reason ${dv(f, '00081197')}`);
        if (r.warnings) reasons.push(r.warnings);
      } catch (e) {
        failed += batch.length;
        reasons.push(e.message);
      }
      sent += batchBytes;
      progress.value = sent;
    }
    clear(result,
      h('span', { class: failed ? 'bad' : 'ok' }, `Stored ${stored} instance(s)${failed ? `, ${failed} failed` : ''}.`),
      reasons.length ? h('ul', { class: 'small muted' }, reasons.slice(0, 10).map((r) => h('li', {}, r))) : null);
    input.value = '';
    input.disabled = false;
    if (onDone) onDone();
  });
  return h('div', { class: 'panel' }, h('h3', {}, 'Upload DICOM files (STOW-RS)'),
    h('div', { class: 'toolbar' }, input, progress), result);
}
