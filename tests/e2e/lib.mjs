// Shared helpers of the end-to-end scripts: a tiny sequential check runner that prints one line
// per check and a closing "<suite>: N passed, M failed" line, and DICOM facts read from files with
// DCMTK's dcmdump (the ground truth the node's answers are compared with).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Directory for screenshots, logs and per-suite result files. */
export function artifactsDir() {
  const dir = path.resolve(process.env.E2E_ARTIFACTS || 'target/e2e-artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** The node's DICOMweb root, e.g. http://127.0.0.1:8080/dicom-web (no trailing slash). */
export function dicomwebRoot() {
  const root = process.env.PACS_DICOMWEB;
  if (!root) {
    throw new Error('PACS_DICOMWEB is not set (the node\'s DICOMweb root URL, e.g. http://127.0.0.1:8080/dicom-web)');
  }
  return root.replace(/\/+$/, '');
}

export function requireEnv(name, what) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set (${what})`);
  }
  return value;
}

/**
 * Runs `checks` ([name, async fn] pairs) one after the other. A failing check does not stop
 * the later ones unless it is marked `{ fatal: true }` as a third element. Prints a summary
 * line, writes `<suite>.result.json` into the artefacts directory (read by run.sh) and sets
 * the exit code.
 */
export async function runChecks(suite, checks, { onFailure } = {}) {
  let passed = 0;
  let failed = 0;
  const failures = [];
  for (const [name, fn, opts = {}] of checks) {
    const t0 = Date.now();
    try {
      await fn();
      passed += 1;
      console.log(`ok   ${suite} > ${name} (${Date.now() - t0} ms)`);
    } catch (err) {
      failed += 1;
      // a failed check says what it found; anything else also says where it broke
      const text = err && err.isCheck ? err.message : err && err.stack ? err.stack : String(err);
      // eslint-disable-next-line no-control-regex
      const message = text.replace(/\x1b\[[0-9;]*m/g, '');
      failures.push({ name, message });
      console.log(`FAIL ${suite} > ${name} (${Date.now() - t0} ms)`);
      console.log(indent(message));
      if (opts.fatal) {
        const rest = checks.slice(checks.findIndex(c => c[0] === name) + 1);
        for (const [skipped] of rest) {
          failed += 1;
          failures.push({ name: skipped, message: `not run: "${name}" failed` });
          console.log(`FAIL ${suite} > ${skipped} (not run: "${name}" failed)`);
        }
        break;
      }
    }
  }
  if (failed > 0 && onFailure) {
    try {
      await onFailure(failures);
    } catch (err) {
      console.log(`(while collecting failure details: ${err})`);
    }
  }
  const dir = artifactsDir();
  fs.writeFileSync(
    path.join(dir, `${suite}.result.json`),
    JSON.stringify({ suite, passed, failed, failures }, null, 2) + '\n',
  );
  console.log(`${suite}: ${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 ? 1 : 0;
  return { passed, failed };
}

export function indent(text, prefix = '     ') {
  return String(text)
    .split('\n')
    .map(line => prefix + line)
    .join('\n');
}

/** Throws an Error with `message` unless `condition` holds. */
export function check(condition, message) {
  if (!condition) {
    throw checkError(message);
  }
}

export function checkEqual(actual, expected, what) {
  if (actual !== expected) {
    throw checkError(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/** An Error printed without its stack: the message says everything. */
export function checkError(message) {
  const err = new Error(message);
  err.isCheck = true;
  return err;
}

const DCMDUMP = process.env.DCMDUMP || '/usr/bin/dcmdump';

/**
 * Top-level attributes of a DICOM file as dcmdump prints them: { 'gggg,eeee': 'value' } for
 * the tags asked for (string values without brackets; numbers as printed).
 */
export function dicomFacts(file, tags) {
  const args = ['-q'];
  for (const tag of tags) {
    args.push('+P', tag);
  }
  args.push(file);
  const out = spawnSync(DCMDUMP, args, { encoding: 'utf8' });
  if (out.error || out.status !== 0) {
    throw new Error(`${DCMDUMP} ${args.join(' ')} failed: ${out.error || out.stderr}`);
  }
  const facts = {};
  for (const line of out.stdout.split('\n')) {
    const m = /^\s*\(([0-9a-f]{4},[0-9a-f]{4})\)\s+([A-Z]{2})\s+(?:\[(.*?)\]|=(\S+)|(\S+))\s+#/i.exec(line);
    if (m) {
      const tag = m[1].toLowerCase();
      if (!(tag in facts)) {
        facts[tag] = m[3] ?? m[4] ?? m[5];
      }
    }
  }
  return facts;
}

export const TAG = {
  SOPClassUID: '0008,0016',
  SOPInstanceUID: '0008,0018',
  StudyDate: '0008,0020',
  Modality: '0008,0060',
  PatientName: '0010,0010',
  PatientID: '0010,0020',
  StudyInstanceUID: '0020,000d',
  SeriesInstanceUID: '0020,000e',
  Rows: '0028,0010',
  Columns: '0028,0011',
  BitsAllocated: '0028,0100',
  WindowCenter: '0028,1050',
  WindowWidth: '0028,1051',
};

/** The .dcm files in `dir` (not recursive), sorted. */
export function dicomFiles(dir) {
  return fs
    .readdirSync(dir)
    .filter(name => name.toLowerCase().endsWith('.dcm'))
    .sort()
    .map(name => path.join(dir, name));
}

/** First value of a DICOM JSON attribute (PS3.18 F.2), e.g. attr(ds, '0020000D'). */
export function attr(dataset, tag) {
  const element = dataset && dataset[tag];
  if (!element || !Array.isArray(element.Value) || element.Value.length === 0) {
    return undefined;
  }
  const v = element.Value[0];
  return element.vr === 'PN' && v && typeof v === 'object' ? v.Alphabetic : v;
}
