// The one way the console talks to the node: same-origin fetch with the session cookie and
// the X-PACS-Console header (the node's CSRF guard for cookie-authenticated writes). Errors
// come back as {"error": "..."}; every failure is shown in the error banner and thrown.

export const CONSOLE_HEADER = { 'X-PACS-Console': '1' };

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

const listeners = [];
/** Called with (message) for every failed call not marked {quiet: true}. */
export function onError(fn) { listeners.push(fn); }
export function reportError(message) { for (const fn of listeners) fn(message); }

async function errorOf(response, what) {
  let body = null;
  let text = '';
  try {
    text = await response.text();
    body = JSON.parse(text);
  } catch { /* not JSON */ }
  const reason = (body && typeof body.error === 'string' && body.error) || text.trim().slice(0, 300) || response.statusText;
  return new ApiError(response.status, `${what}: HTTP ${response.status}${reason ? ` — ${reason}` : ''}`, body);
}

/**
 * A call. opts: method, json (a body sent as JSON), body, headers, accept, quiet (do not show
 * failures), raw (return the Response), okStatuses (extra statuses that are no failure, e.g.
 * 502 for a failed C-ECHO whose body says why).
 */
export async function api(path, opts = {}) {
  const method = opts.method || 'GET';
  const headers = { Accept: opts.accept || 'application/json', ...CONSOLE_HEADER, ...(opts.headers || {}) };
  let body = opts.body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const what = `${method} ${path.split('?')[0]}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store', signal: opts.signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    const err = new ApiError(0, `${what}: ${e.message || 'network error'}`);
    if (!opts.quiet) reportError(err.message);
    throw err;
  }
  const ok = response.ok || (opts.okStatuses || []).includes(response.status);
  if (!ok) {
    const err = await errorOf(response, what);
    if (!opts.quiet) reportError(err.message);
    throw err;
  }
  if (opts.raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) return response.json();
  if ((headers.Accept || '').includes('json')) {
    // e.g. an HTML page where an API was expected (a node without that API)
    const err = new ApiError(response.status, `${what}: unexpected answer (${type.split(';')[0] || 'no content type'}), expected JSON`);
    if (!opts.quiet) reportError(err.message);
    throw err;
  }
  return response.text();
}

export const get = (path, opts) => api(path, opts);
export const post = (path, json, opts = {}) => api(path, { ...opts, method: 'POST', json });
export const put = (path, json, opts = {}) => api(path, { ...opts, method: 'PUT', json });
export const del = (path, opts = {}) => api(path, { ...opts, method: 'DELETE' });

/** Query string from an object, leaving out empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

/**
 * An upload with progress (fetch cannot report upload progress): XMLHttpRequest with the
 * cookie and the console header. onProgress(loadedBytes, totalBytes). Resolves {status, body}.
 */
export function upload(path, blob, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.withCredentials = true;
    xhr.setRequestHeader('Content-Type', contentType);
    xhr.setRequestHeader('Accept', 'application/dicom+json');
    for (const [k, v] of Object.entries(CONSOLE_HEADER)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* none */ }
      resolve({ status: xhr.status, body, warnings: xhr.getResponseHeader('Warning') || '' });
    };
    xhr.onerror = () => reject(new ApiError(0, `POST ${path}: network error`));
    xhr.send(blob);
  });
}
