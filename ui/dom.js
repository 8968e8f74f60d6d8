// Small DOM and formatting helpers shared by the pages.

/** h('tr', {dataset: {x: 1}, onclick}, child, ...): an element; strings become text nodes. */
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'class') e.className = v;
    else if (k === 'style' && typeof v === 'object') Object.assign(e.style, v);
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(e, c);
    else e.append(c instanceof Node ? c : String(c));
  }
}

export function clear(e, ...children) {
  e.replaceChildren();
  append(e, children);
  return e;
}

/** A table: headers [text | {text, class}], returns {table, tbody}. */
export function table(name, headers, extra = {}) {
  const tbody = h('tbody');
  const table = h('table', { dataset: { table: name }, ...extra },
    h('thead', {}, h('tr', {}, headers.map((c) => (typeof c === 'string' ? h('th', {}, c) : h('th', { class: c.class }, c.text))))),
    tbody);
  return { table, tbody, wrap: h('div', { class: 'table-wrap' }, table) };
}

export function emptyRow(tbody, columns, text) {
  tbody.append(h('tr', { class: 'empty-row' }, h('td', { colspan: columns, class: 'empty' }, text)));
}

/** An in-page confirmation (not window.confirm): resolves true on button[data-action=confirm]. */
export function confirmDialog(message, confirmText = 'Delete') {
  return new Promise((resolve) => {
    const done = (v) => { back.remove(); document.removeEventListener('keydown', onKey); resolve(v); };
    const onKey = (e) => { if (e.key === 'Escape') done(false); };
    const back = h('div', { class: 'modal-back', onclick: (e) => { if (e.target === back) done(false); } },
      h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
        h('p', {}, message),
        h('div', { class: 'buttons' },
          h('button', { class: 'secondary', dataset: { action: 'cancel-dialog' }, onclick: () => done(false) }, 'Cancel'),
          h('button', { class: 'danger', dataset: { action: 'confirm' }, onclick: () => done(true) }, confirmText))));
    document.addEventListener('keydown', onKey);
    document.body.append(back);
    back.querySelector('[data-action=confirm]').focus();
  });
}

/** A modal holding `content` (a form); returns a close function. */
export function modal(content) {
  const back = h('div', { class: 'modal-back' }, h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true' }, content));
  const close = () => { back.remove(); document.removeEventListener('keydown', onKey); };
  const onKey = (e) => { if (e.key === 'Escape') close(); };
  document.addEventListener('keydown', onKey);
  document.body.append(back);
  const first = back.querySelector('input:not([type=hidden]):not([readonly]), select');
  if (first) first.focus();
  return close;
}

/** A value of a DICOM JSON attribute (PS3.18 F.2), by tag: the first value as text. */
export function dv(obj, tag) {
  const a = obj && obj[tag];
  if (!a || !a.Value || !a.Value.length) return '';
  const v = a.Value[0];
  if (a.vr === 'PN') return personName(v);
  return v === null || v === undefined ? '' : String(v);
}
export function dvAll(obj, tag) {
  const a = obj && obj[tag];
  return a && a.Value ? a.Value.map(String) : [];
}

/** A person name as people write it: "Family^Given^Middle" → "Family, Given Middle". */
export function personName(v) {
  const s = typeof v === 'string' ? v : (v && v.Alphabetic) || '';
  const [family, given, middle, prefix, suffix] = s.split('^');
  const first = [prefix, given, middle].filter(Boolean).join(' ');
  return [family, first].filter(Boolean).join(', ') + (suffix ? ` ${suffix}` : '');
}

/** DA (YYYYMMDD) → YYYY-MM-DD. */
export function fmtDate(da) {
  return /^\d{8}$/.test(da || '') ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : (da || '');
}
/** TM → HH:MM. */
export function fmtTime(tm) {
  return /^\d{4}/.test(tm || '') ? `${tm.slice(0, 2)}:${tm.slice(2, 4)}` : '';
}
/** Milliseconds since the epoch, or RFC 3339 → local "YYYY-MM-DD HH:MM:SS". */
export function fmtTs(t) {
  if (t === null || t === undefined || t === '' || t === 0) return '';
  const d = typeof t === 'number' ? new Date(t) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v < 10 && i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}
export function fmtInt(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return '';
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${s % 60} s`;
  return `${s} s`;
}
export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '';
  return ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
/** A long UID shortened for a table cell; the full one in the title. */
export function shortUid(uid) {
  const s = uid || '';
  return h('span', { class: 'mono', title: s }, s.length > 24 ? `…${s.slice(-20)}` : s);
}
export function badge(text, cls = '') {
  return h('span', { class: `badge ${cls}` }, text);
}
/** Time given as ms since the epoch or RFC 3339 (the APIs use both). */
export function ts(obj, name) {
  if (obj[name] !== undefined && obj[name] !== null) return obj[name];
  const ms = obj[`${name}_ms`];
  return ms ? ms : null;
}

/** The values of the checked boxes named `name` in `form`. */
export function checked(form, name) {
  return [...form.querySelectorAll(`input[type=checkbox][name="${name}"]`)].filter((c) => c.checked).map((c) => c.value);
}

export function checkboxes(name, values, selected = []) {
  return h('div', { class: 'checks' }, values.map((v) => h('label', {},
    h('input', { type: 'checkbox', name, value: v, checked: selected.includes(v) }), v)));
}

export function field(label, input) {
  return h('div', { class: 'field' }, h('label', {}, label), input);
}

/** The node's roles (src/auth/permissions.rs ROLES); no API lists them. */
export const ROLES = ['viewer', 'technologist', 'radiologist', 'admin', 'ai-worker', 'auditor', 'researcher'];
