// agentvault approver and auditor console. Plain JavaScript, no
// dependencies, served from the binary. It only calls the public HTTP API
// with the token the user signs in with, which it keeps in sessionStorage
// (this tab only). Everything shown is set with textContent, never parsed
// as HTML.
'use strict';

const TOKEN_KEY = 'agentvault.token';
const $ = (sel) => document.querySelector(sel);

const state = {
  token: null,
  me: null,
  names: {},      // principal id -> name, when the token may list principals
  view: null,
  pending: [],
  reviewing: null,
  auditBefore: null,
  pollTimer: null,
};

class APIError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + state.token }, cache: 'no-store' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, 'network', 'The server cannot be reached.');
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const err = data && data.error ? data.error : { code: 'http_' + resp.status, message: 'The server answered ' + resp.status + '.' };
    if (resp.status === 401 && state.me) { signOut('Your session ended: the token is no longer valid.'); }
    throw new APIError(resp.status, err.code, err.message);
  }
  return data;
}

// ---- messages -------------------------------------------------------------

function say(msg) {
  const el = $('#status');
  el.textContent = msg; el.hidden = !msg;
  $('#error').hidden = true;
}

function fail(msg) {
  const el = $('#error');
  el.textContent = msg; el.hidden = !msg;
  if (msg) { $('#status').hidden = true; }
}

// ---- formatting -----------------------------------------------------------

function ago(iso) {
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  return span(Math.abs(s)) + (s >= 0 ? ' ago' : ' from now');
}

function until(iso) {
  const s = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  return s <= 0 ? 'now' : 'in ' + span(s);
}

function span(s) {
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

function who(id, name) {
  if (!id) return 'system';
  return (name || state.names[id] || id.slice(0, 8)) + (name || state.names[id] ? '' : '…');
}

function cell(tr, text, opts = {}) {
  const td = document.createElement('td');
  if (opts.badge) {
    const b = document.createElement('span');
    b.className = 'badge ' + text; b.textContent = text.replace('_', ' ');
    td.appendChild(b);
  } else {
    td.textContent = text === undefined || text === null ? '' : String(text);
  }
  if (opts.title) td.title = opts.title;
  if (opts.cls) td.className = opts.cls;
  tr.appendChild(td);
  return td;
}

// ---- sign in --------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    state.me = await api('GET', '/v1/me');
  } catch (e) {
    state.token = null;
    fail(e.status === 401 ? 'That token is not valid, or it was revoked.' : e.message);
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#me-name').textContent = state.me.name;
  $('#me-roles').textContent = '(' + state.me.roles.join(', ') + ')';
  $('#whoami').hidden = false;
  $('#signin-view').hidden = true;
  $('#app-view').hidden = false;
  $('#token').value = '';
  fail('');
  say('');
  if (can('auditor')) {
    try {
      const list = await api('GET', '/v1/principals');
      for (const p of list.principals) { state.names[p.id] = p.name; }
      fillActors(list.principals);
    } catch (e) { /* names are a convenience */ }
  }
  $('#tab-pending').hidden = $('#tab-decided').hidden = !can('approver');
  $('#tab-audit').hidden = !can('auditor');
  $('#no-roles').hidden = can('approver') || can('auditor');
  show(can('approver') ? 'pending' : can('auditor') ? 'audit' : null);
  openFromHash();
  return true;
}

// openFromHash opens the approval a link names (#approval=<id>, as in the
// webhook's console_url): its review panel if it is still pending.
async function openFromHash() {
  const m = /^#approval=([A-Za-z0-9-]{1,64})$/.exec(location.hash);
  if (!m || !can('approver')) return;
  let a;
  try {
    a = await api('GET', '/v1/approvals/' + encodeURIComponent(m[1]));
  } catch (e) { fail('The linked approval cannot be shown: ' + e.message); return; }
  if (a.status === 'pending') {
    show('pending');
    review(a);
  } else {
    show('decided');
    say('The linked request is ' + a.status + (a.decided_by ? ' (by ' + who(a.decided_by, a.decided_by_name) + ')' : '') + '.');
  }
}

function can(role) {
  return !!state.me && (state.me.roles.includes(role) || state.me.roles.includes('admin'));
}

function signOut(msg) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.pollTimer);
  Object.assign(state, { token: null, me: null, names: {}, view: null, reviewing: null });
  $('#whoami').hidden = true;
  $('#app-view').hidden = true;
  $('#signin-view').hidden = false;
  for (const tb of document.querySelectorAll('tbody')) { tb.replaceChildren(); }
  say(''); fail(msg || '');
  $('#token').focus();
}

// ---- navigation -----------------------------------------------------------

function show(view) {
  state.view = view;
  for (const t of document.querySelectorAll('.tab')) {
    if (t.dataset.view === view) { t.setAttribute('aria-current', 'page'); } else { t.removeAttribute('aria-current'); }
  }
  for (const v of ['pending', 'decided', 'audit']) { $('#view-' + v).hidden = v !== view; }
  clearInterval(state.pollTimer);
  if (view === 'pending') {
    loadPending();
    state.pollTimer = setInterval(loadPending, 10000);
  } else if (view === 'decided') {
    loadDecided();
  } else if (view === 'audit') {
    verify();
    loadAudit(true);
  }
}

// ---- approvals ------------------------------------------------------------

async function loadPending() {
  let list;
  try {
    list = (await api('GET', '/v1/approvals?status=pending')).approvals;
  } catch (e) { fail('Could not load pending approvals: ' + e.message); return; }
  state.pending = list;
  $('#pending-count').textContent = list.length ? String(list.length) : '';
  const tbody = $('#pending-table tbody');
  tbody.replaceChildren();
  for (const a of list) {
    const tr = document.createElement('tr');
    tr.dataset.approvalId = a.id;
    if (state.reviewing && state.reviewing.id === a.id) tr.className = 'selected';
    cell(tr, ago(a.created_at), { title: when(a.created_at) });
    cell(tr, who(a.requester_id, a.requester_name), { title: a.requester_id });
    cell(tr, a.purpose);
    cell(tr, a.collection);
    cell(tr, a.fields.join(', '));
    cell(tr, a.record_count, { title: a.token_count + ' value(s) requested' });
    cell(tr, a.rules.join('; '));
    cell(tr, until(a.expires_at), { title: when(a.expires_at) });
    const td = cell(tr, '');
    const b = document.createElement('button');
    b.type = 'button'; b.className = 'secondary review-button'; b.textContent = 'Review';
    b.setAttribute('aria-label', 'Review request from ' + who(a.requester_id, a.requester_name) + ' for ' + a.purpose);
    b.addEventListener('click', () => review(a));
    td.appendChild(b);
    tbody.appendChild(tr);
  }
  $('#pending-table').hidden = list.length === 0;
  $('#pending-empty').hidden = list.length !== 0;
  if (state.reviewing && !list.some((a) => a.id === state.reviewing.id)) { closeReview(); }
}

function review(a) {
  state.reviewing = a;
  const dl = $('#review-details');
  dl.replaceChildren();
  const rows = [
    ['Approval', a.id],
    ['Agent', who(a.requester_id, a.requester_name) + ' (' + a.requester_id + ')'],
    ['Purpose', a.purpose],
    ['Collection', a.collection],
    ['Fields', a.fields.join(', ')],
    ['Records', a.record_count + ' (' + a.token_count + ' value' + (a.token_count === 1 ? '' : 's') + ')'],
    ['Record ids', a.record_ids.join(', ')],
    ['Rule tripped', a.rules.join('; ')],
    ['Grants', a.grant_ids.join(', ')],
    ['Requested', when(a.created_at) + ' (' + ago(a.created_at) + ')'],
    ['Expires', when(a.expires_at) + ' (' + until(a.expires_at) + ')'],
  ];
  for (const [k, v] of rows) {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = v;
    if (k === 'Approval' || k === 'Record ids' || k === 'Grants') dd.className = 'mono';
    dl.append(dt, dd);
  }
  for (const tr of document.querySelectorAll('#pending-table tbody tr')) {
    tr.className = tr.dataset.approvalId === a.id ? 'selected' : '';
  }
  const self = state.me && state.me.id === a.requester_id;
  $('#approve').disabled = $('#deny').disabled = self;
  $('#reason').value = '';
  $('#review').hidden = false;
  if (self) { fail('You made this request, so someone else must decide it (four-eyes).'); }
  $('#reason').focus();
}

function closeReview() {
  state.reviewing = null;
  $('#review').hidden = true;
  for (const tr of document.querySelectorAll('#pending-table tbody tr')) { tr.className = ''; }
}

async function decide(action) {
  const a = state.reviewing;
  const reason = $('#reason').value.trim();
  if (!a) return;
  if (!reason) { fail('Give a reason: it is recorded in the audit log with your decision.'); $('#reason').focus(); return; }
  $('#approve').disabled = $('#deny').disabled = true;
  try {
    const out = await api('POST', '/v1/approvals/' + encodeURIComponent(a.id) + '/' + action, { reason });
    closeReview();
    say(out.status === 'approved'
      ? 'Approved. ' + who(a.requester_id, a.requester_name) + ' can redeem it once, until ' + when(out.redeem_by) + '.'
      : 'Denied. Nothing will be revealed for this request.');
  } catch (e) {
    fail('Could not ' + action + ': ' + e.message);
  } finally {
    $('#approve').disabled = $('#deny').disabled = false;
  }
  loadPending();
}

async function loadDecided() {
  let list;
  try {
    // The newest 200: the list is for review, the audit log has the rest.
    list = (await api('GET', '/v1/approvals?limit=200')).approvals.filter((a) => a.status !== 'pending');
  } catch (e) { fail('Could not load decided approvals: ' + e.message); return; }
  const tbody = $('#decided-table tbody');
  tbody.replaceChildren();
  for (const a of list) {
    const tr = document.createElement('tr');
    tr.dataset.approvalId = a.id;
    cell(tr, a.status, { badge: true });
    cell(tr, when(a.created_at));
    cell(tr, who(a.requester_id, a.requester_name), { title: a.requester_id });
    cell(tr, a.purpose);
    cell(tr, a.collection);
    cell(tr, a.fields.join(', '));
    cell(tr, a.record_count);
    cell(tr, a.decided_by ? who(a.decided_by, a.decided_by_name) : '—', { title: a.decided_by || '' });
    cell(tr, a.reason || '');
    cell(tr, a.redeemed_at ? when(a.decided_at) + ' · redeemed ' + when(a.redeemed_at) : when(a.decided_at));
    tbody.appendChild(tr);
  }
  $('#decided-table').hidden = list.length === 0;
  $('#decided-empty').hidden = list.length !== 0;
}

// ---- audit ----------------------------------------------------------------

function fillActors(principals) {
  const sel = $('#f-actor');
  for (const p of principals) {
    const o = document.createElement('option');
    o.value = p.id; o.textContent = p.name + ' (' + p.roles.join(', ') + ')';
    sel.appendChild(o);
  }
}

async function verify() {
  const el = $('#verify-status');
  el.className = 'verify'; el.textContent = 'Verifying the hash chain…';
  try {
    const v = await api('GET', '/v1/audit/verify');
    if (v.ok) {
      el.className = 'verify ok';
      el.textContent = '✓ Chain verified: ' + v.entries + ' entries, ' + v.checkpoints + ' signed checkpoint' + (v.checkpoints === 1 ? '' : 's') + ', head ' + (v.head || '').slice(0, 16) + '…';
    } else {
      el.className = 'verify bad';
      el.textContent = '✗ TAMPERING DETECTED at entry ' + v.first_bad_seq + ': ' + v.reason;
    }
  } catch (e) {
    el.className = 'verify bad';
    el.textContent = 'Could not verify the audit log: ' + e.message;
  }
}

function auditQuery() {
  const q = new URLSearchParams({ order: 'desc', limit: '50' });
  const actor = $('#f-actor').value, action = $('#f-action').value;
  const record = $('#f-record').value.trim();
  if (actor) q.set('actor', actor);
  if (action) q.set('action', action);
  if (record) q.set('record_id', record);
  for (const [id, name] of [['#f-since', 'since'], ['#f-until', 'until']]) {
    const v = $(id).value;
    if (v) q.set(name, new Date(v).toISOString());
  }
  if (state.auditBefore) q.set('before', String(state.auditBefore));
  return q;
}

async function loadAudit(fresh) {
  if (fresh) { state.auditBefore = null; $('#audit-table tbody').replaceChildren(); }
  let page;
  try {
    page = await api('GET', '/v1/audit?' + auditQuery().toString());
  } catch (e) { fail('Could not load the audit log: ' + e.message); return; }
  const tbody = $('#audit-table tbody');
  for (const e of page.entries) {
    const tr = document.createElement('tr');
    tr.dataset.seq = e.seq;
    cell(tr, e.seq, { cls: 'mono' });
    cell(tr, when(e.time));
    cell(tr, who(e.actor), { title: e.actor });
    cell(tr, e.action);
    cell(tr, e.decision, { badge: true });
    cell(tr, e.collection);
    cell(tr, (e.fields || []).join(', '));
    cell(tr, (e.record_ids || []).length || '', { title: (e.record_ids || []).join(', ') });
    cell(tr, e.purpose);
    cell(tr, e.reason || '');
    tbody.appendChild(tr);
  }
  state.auditBefore = page.next;
  $('#audit-more').hidden = !page.next;
  const n = tbody.children.length;
  $('#audit-table').hidden = n === 0;
  $('#audit-empty').hidden = n !== 0;
}

// ---- wiring ---------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = $('#token').value.trim();
    if (!t) return;
    $('#signin-button').disabled = true;
    await signIn(t);
    $('#signin-button').disabled = false;
  });
  $('#signout').addEventListener('click', () => signOut(''));
  for (const t of document.querySelectorAll('.tab')) { t.addEventListener('click', () => { say(''); fail(''); show(t.dataset.view); }); }
  $('#refresh-pending').addEventListener('click', loadPending);
  $('#refresh-decided').addEventListener('click', loadDecided);
  $('#cancel-review').addEventListener('click', closeReview);
  $('#decide').addEventListener('submit', (ev) => {
    ev.preventDefault();
    decide(ev.submitter && ev.submitter.value === 'deny' ? 'deny' : 'approve');
  });
  $('#audit-filter').addEventListener('submit', (ev) => { ev.preventDefault(); loadAudit(true); });
  $('#audit-filter').addEventListener('reset', () => setTimeout(() => loadAudit(true), 0));
  $('#audit-more').addEventListener('click', () => loadAudit(false));
  $('#reverify').addEventListener('click', verify);
  window.addEventListener('hashchange', () => { if (state.me) openFromHash(); });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) { signIn(saved); } else { $('#token').focus(); }
});
