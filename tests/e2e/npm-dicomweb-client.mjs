// The npm package dicomweb-client (the DICOMweb library OHIF uses) against a running pacs node:
// QIDO-RS, WADO-RS (metadata, frames, bulk data, instances) and STOW-RS, with every answer
// compared with the DICOM files themselves (read with DCMTK's dcmdump).
//
// Environment:
//   PACS_DICOMWEB   the node's DICOMweb root, e.g. http://127.0.0.1:8080/dicom-web
//   E2E_SERIES_DIR  directory of one single-frame, uncompressed series already stored in the
//                   node (run.sh stores `pacs synth --slices 40 --modality CT` there)
//   E2E_STOW_FILE   a DICOM file not yet in the node, sent with STOW-RS
//   E2E_ARTIFACTS   where dicomweb-client.result.json goes (default target/e2e-artifacts)

import fs from 'node:fs';
import XMLHttpRequest from 'xhr2';
import dicomweb from 'dicomweb-client';
import {
  TAG,
  attr,
  check,
  checkEqual,
  checkError,
  dicomFacts,
  dicomFiles,
  dicomwebRoot,
  requireEnv,
  runChecks,
} from './lib.mjs';

// dicomweb-client is written for browsers: it speaks XMLHttpRequest, which node lacks.
globalThis.XMLHttpRequest = XMLHttpRequest;

const root = dicomwebRoot();
const seriesDir = requireEnv('E2E_SERIES_DIR', 'directory of a series stored in the node');
const stowFile = requireEnv('E2E_STOW_FILE', 'a DICOM file to send with STOW-RS');

const client = new dicomweb.api.DICOMwebClient({ url: root, verbose: false });

const files = dicomFiles(seriesDir);
const first = dicomFacts(files[0], Object.values(TAG));
const studyUid = first[TAG.StudyInstanceUID];
const seriesUid = first[TAG.SeriesInstanceUID];
const patientName = first[TAG.PatientName];
const rows = Number(first[TAG.Rows]);
const columns = Number(first[TAG.Columns]);
const bitsAllocated = Number(first[TAG.BitsAllocated]);
const frameBytes = (rows * columns * bitsAllocated) / 8;
const sopUids = new Set(files.map(f => dicomFacts(f, [TAG.SOPInstanceUID])[TAG.SOPInstanceUID]));
const stow = dicomFacts(stowFile, [TAG.StudyInstanceUID, TAG.SeriesInstanceUID, TAG.SOPInstanceUID, TAG.PatientName]);

/**
 * The pixel data of an uncompressed single-frame file in explicit VR little endian whose last
 * element is (7FE0,0010) with a defined length: the file's last `length` bytes.
 */
function pixelDataOf(file, length) {
  const bytes = fs.readFileSync(file);
  const header = bytes.subarray(bytes.length - length - 12, bytes.length - length);
  const tagOk = header.readUInt16LE(0) === 0x7fe0 && header.readUInt16LE(2) === 0x0010;
  const vr = header.toString('latin1', 4, 6);
  check(tagOk && (vr === 'OW' || vr === 'OB') && header.readUInt32LE(8) === length,
    `${file}: the last element is not a native Pixel Data element of ${length} bytes`);
  return bytes.subarray(bytes.length - length);
}

/** A person name without the trailing empty components that PS3.5 6.2 lets writers drop. */
function pn(name) {
  return typeof name === 'string' ? name.replace(/[\^ ]+$/, '') : name;
}

function sameBytes(a, b) {
  const x = Buffer.from(a instanceof ArrayBuffer ? new Uint8Array(a) : a);
  return x.length === b.length && x.equals(Buffer.from(b));
}

/** dicomweb-client rejects with an Error carrying the XHR status and body; make that readable. */
function describe(err) {
  if (err && err.status === 0) {
    return checkError('no HTTP answer (connection refused or reset)');
  }
  if (err && err.status !== undefined) {
    let body = err.response;
    if (body instanceof ArrayBuffer) {
      body = Buffer.from(body).toString('utf8');
    }
    if (body && typeof body === 'object') {
      body = JSON.stringify(body);
    }
    return checkError(`HTTP ${err.status}: ${String(body ?? '').slice(0, 500)}`);
  }
  return err;
}

/** Awaits a dicomweb-client call; QIDO and metadata calls (`json`) must give a JSON array. */
async function call(what, promise, { json = false } = {}) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    const e = describe(err);
    e.message = `${what}: ${e.message}`;
    throw e;
  }
  if (json && !Array.isArray(result)) {
    throw checkError(
      `${what}: the answer is not a JSON array but ${result === null ? 'null (the body was not JSON)' : JSON.stringify(result).slice(0, 300)}`,
    );
  }
  return result;
}

const callJson = (what, promise) => call(what, promise, { json: true });

let metadata;
let sopUid;
let sopFile;

const checks = [
  [
    'searchForStudies by PatientName (wildcard) and StudyDate',
    async () => {
      const family = patientName.split('^')[0];
      const studies = await callJson('searchForStudies', client.searchForStudies({
        queryParams: { PatientName: `${family}*`, StudyDate: first[TAG.StudyDate] },
      }));
      const match = studies.filter(s => attr(s, '0020000D') === studyUid);
      checkEqual(match.length, 1, `studies with StudyInstanceUID ${studyUid} among ${studies.length} results`);
      checkEqual(pn(attr(match[0], '00100010')), pn(patientName), 'PatientName');
      checkEqual(attr(match[0], '00080020'), first[TAG.StudyDate], 'StudyDate');
      const count = attr(match[0], '00201208');
      if (count !== undefined) {
        checkEqual(Number(count), files.length, 'NumberOfStudyRelatedInstances');
      }
      const none = await callJson('searchForStudies', client.searchForStudies({
        queryParams: { PatientName: 'NOBODY-SUCH^PATIENT' },
      }));
      checkEqual(none.length, 0, 'studies of a patient that does not exist');
    },
  ],
  [
    'searchForSeries of the study',
    async () => {
      const series = await callJson('searchForSeries', client.searchForSeries({ studyInstanceUID: studyUid }));
      checkEqual(series.length, 1, 'series in the study');
      checkEqual(attr(series[0], '0020000E'), seriesUid, 'SeriesInstanceUID');
      checkEqual(attr(series[0], '00080060'), first[TAG.Modality], 'Modality');
      const count = attr(series[0], '00201209');
      if (count !== undefined) {
        checkEqual(Number(count), files.length, 'NumberOfSeriesRelatedInstances');
      }
    },
  ],
  [
    'searchForInstances of the series',
    async () => {
      const instances = await callJson('searchForInstances', client.searchForInstances({
        studyInstanceUID: studyUid,
        seriesInstanceUID: seriesUid,
      }));
      const found = new Set(instances.map(i => attr(i, '00080018')));
      checkEqual(instances.length, files.length, 'instances in the series');
      const missing = [...sopUids].filter(u => !found.has(u));
      check(missing.length === 0, `SOP Instance UIDs not returned: ${missing.join(', ')}`);
    },
  ],
  [
    'retrieveSeriesMetadata: every instance, absolute BulkDataURI on PixelData',
    async () => {
      metadata = await callJson('retrieveSeriesMetadata', client.retrieveSeriesMetadata({
        studyInstanceUID: studyUid,
        seriesInstanceUID: seriesUid,
      }));
      checkEqual(metadata.length, files.length, 'instances in the series metadata');
      for (const instance of metadata) {
        const uid = attr(instance, '00080018');
        check(sopUids.has(uid), `metadata of an unknown instance ${uid}`);
        checkEqual(attr(instance, '00280010'), rows, `Rows of ${uid}`);
        checkEqual(attr(instance, '00280011'), columns, `Columns of ${uid}`);
        const pixels = instance['7FE00010'];
        check(pixels, `no PixelData (7FE00010) element in the metadata of ${uid}`);
        check(!pixels.InlineBinary && !pixels.Value, `PixelData of ${uid} is inline, not bulk data`);
        const uri = pixels.BulkDataURI;
        check(typeof uri === 'string' && uri.length > 0, `no BulkDataURI on PixelData of ${uid}`);
        let url;
        try {
          url = new URL(uri);
        } catch {
          throw checkError(`BulkDataURI of ${uid} is not an absolute URL: ${uri}`);
        }
        check(url.protocol === 'http:' || url.protocol === 'https:', `BulkDataURI of ${uid} is not http(s): ${uri}`);
      }
    },
  ],
  [
    'retrieveBulkData of PixelData equals the file\'s pixels',
    async () => {
      check(metadata, 'no metadata (previous check failed)');
      const instance = metadata[0];
      sopUid = attr(instance, '00080018');
      sopFile = files.find(f => dicomFacts(f, [TAG.SOPInstanceUID])[TAG.SOPInstanceUID] === sopUid);
      const parts = await call('retrieveBulkData', client.retrieveBulkData({
        BulkDataURI: instance['7FE00010'].BulkDataURI,
      }));
      const data = Array.isArray(parts) ? parts[0] : parts;
      checkEqual(data.byteLength, frameBytes, `bulk data length (rows*cols*${bitsAllocated / 8})`);
      check(sameBytes(data, pixelDataOf(sopFile, frameBytes)), 'bulk data bytes differ from the file\'s PixelData');
    },
  ],
  [
    'retrieveInstanceFrames: frame 1 is rows*cols*2 bytes, equal to the file\'s pixels',
    async () => {
      check(sopUid, 'no instance picked (previous check failed)');
      const frames = await call('retrieveInstanceFrames', client.retrieveInstanceFrames({
        studyInstanceUID: studyUid,
        seriesInstanceUID: seriesUid,
        sopInstanceUID: sopUid,
        frameNumbers: [1],
      }));
      checkEqual(frames.length, 1, 'frames returned');
      checkEqual(frames[0].byteLength, rows * columns * 2, `frame length (${rows}*${columns}*2)`);
      check(sameBytes(frames[0], pixelDataOf(sopFile, frameBytes)), 'frame bytes differ from the file\'s PixelData');
    },
  ],
  [
    'retrieveInstance: a Part 10 object with the same pixels',
    async () => {
      check(sopUid, 'no instance picked (previous check failed)');
      const part10 = await call('retrieveInstance', client.retrieveInstance({
        studyInstanceUID: studyUid,
        seriesInstanceUID: seriesUid,
        sopInstanceUID: sopUid,
      }));
      check(part10 instanceof ArrayBuffer, `expected an ArrayBuffer, got ${Object.prototype.toString.call(part10)}`);
      const bytes = Buffer.from(new Uint8Array(part10));
      checkEqual(bytes.toString('latin1', 128, 132), 'DICM', 'Part 10 magic at offset 128');
      check(bytes.includes(Buffer.from(sopUid, 'latin1')), 'the SOP Instance UID is not in the object');
      check(
        bytes.length >= frameBytes && sameBytes(bytes.subarray(bytes.length - frameBytes), pixelDataOf(sopFile, frameBytes)),
        'the object does not end with the file\'s PixelData',
      );
    },
  ],
  [
    'storeInstances (STOW-RS) a file from disk, then find and retrieve it',
    async () => {
      const data = fs.readFileSync(stowFile);
      const body = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
      const response = await call('storeInstances', client.storeInstances({ datasets: [body] }));
      let result = response;
      if (typeof response === 'string' && response.length > 0) {
        result = JSON.parse(response);
      } else if (response instanceof ArrayBuffer) {
        result = JSON.parse(Buffer.from(response).toString('utf8'));
      }
      check(result && typeof result === 'object', `STOW-RS response is not DICOM JSON: ${String(response).slice(0, 300)}`);
      check(!result['00081198'], `STOW-RS reported failures: ${JSON.stringify(result['00081198'])}`);
      const referenced = result['00081199']?.Value ?? [];
      check(
        referenced.some(item => attr(item, '00081155') === stow[TAG.SOPInstanceUID]),
        `STOW-RS response does not reference ${stow[TAG.SOPInstanceUID]}: ${JSON.stringify(result).slice(0, 500)}`,
      );

      const studies = await callJson('searchForStudies', client.searchForStudies({
        queryParams: { StudyInstanceUID: stow[TAG.StudyInstanceUID] },
      }));
      checkEqual(studies.length, 1, 'QIDO studies with the stored Study Instance UID');
      checkEqual(pn(attr(studies[0], '00100010')), pn(stow[TAG.PatientName]), 'PatientName of the stored study');
      const instances = await callJson('searchForInstances', client.searchForInstances({
        studyInstanceUID: stow[TAG.StudyInstanceUID],
        queryParams: { SOPInstanceUID: stow[TAG.SOPInstanceUID] },
      }));
      checkEqual(instances.length, 1, 'QIDO instances with the stored SOP Instance UID');
      checkEqual(attr(instances[0], '0020000E'), stow[TAG.SeriesInstanceUID], 'SeriesInstanceUID of the stored instance');
      const part10 = await call('retrieveInstance', client.retrieveInstance({
        studyInstanceUID: stow[TAG.StudyInstanceUID],
        seriesInstanceUID: stow[TAG.SeriesInstanceUID],
        sopInstanceUID: stow[TAG.SOPInstanceUID],
      }));
      checkEqual(Buffer.from(new Uint8Array(part10)).toString('latin1', 128, 132), 'DICM', 'Part 10 magic of the stored instance');
    },
  ],
];

await runChecks('dicomweb-client', checks);
