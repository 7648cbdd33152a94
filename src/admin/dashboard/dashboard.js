// AgentGate dashboard: plain ES2022, no build step, no dependencies.
// Served under a strict CSP (script-src 'self', connect-src 'self'); every string that comes
// from the API is attacker-influenced (agents choose paths, bodies, names), so the DOM is built
// with createElement/textContent only — never innerHTML.

const TOKEN_KEY = 'agentgate.session';
const MAX_ROWS = 500;
const MAX_EVENTS = 50;
const MAX_OUTCOMES = 2000;
const CONSENT_POLL_MS = 5000;
const AUDIT_POLL_MS = 30000;
const AGENTS_POLL_MS = 30000;

const $ = (id) => document.getElementById(id);

/** Everything the signed-in page holds; reset on sign-out. */
const state = {
  token: null,
  whoami: null,
  // Bumped on sign-in/out so late answers of an old session are dropped.
  generation: 0,
  es: null,
  reconnectTimer: 0,
  reconnectDelay: 1000,
  lastSeq: null,
  // 'instance' (this instance's log) or 'fleet' (every instance's, from the fleet's stream).
  scope: 'instance',
  rowsBySeq: new Map(),
  rowsByRequest: new Map(),
  // request_id -> duration_us, for outcomes that may arrive before or after their decision.
  outcomes: new Map(),
  agentNames: new Set(),
  agents: [],
  consentEls: new Map(),
  timers: [],
  refreshTimer: 0,
  refreshWanted: new Set(),
};

class ApiError extends Error {
  constructor(status, code, reason, body) {
    super(reason || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

// ---------------------------------------------------------------------------------------
// DOM helpers

/** `el('td', {className: 'x', dataset: {seq: 1}}, 'text', child)` */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'attrs') for (const [a, v] of Object.entries(value)) node.setAttribute(a, String(v));
    else node[key] = value;
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

function setMessage(node, text, kind = 'error') {
  node.textContent = text || '';
  node.dataset.kind = kind;
  show(node, Boolean(text));
}

// ---------------------------------------------------------------------------------------
// Formatting

/** Milliseconds since the epoch from seconds, milliseconds, microseconds or an ISO string. */
function toMs(t) {
  if (t === null || t === undefined || t === '') return null;
  if (typeof t === 'string') {
    const n = Number(t);
    if (Number.isFinite(n)) return toMs(n);
    const parsed = Date.parse(t);
    return Number.isNaN(parsed) ? null : parsed;
  }
  if (typeof t !== 'number') return null;
  if (t > 1e14) return t / 1000; // µs
  if (t > 1e11) return t; // ms
  return t * 1000; // s
}

function clock(ms) {
  if (ms === null) return '—';
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function dateTime(ms) {
  if (ms === null) return '—';
  return new Date(ms).toLocaleString([], { hour12: false });
}

function relative(ms) {
  if (ms === null) return 'never';
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function countdown(ms) {
  const s = Math.max(0, Math.round((ms - Date.now()) / 1000));
  if (s <= 0) return 'expired';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m} min ${String(s % 60).padStart(2, '0')} s` : `${s} s`;
}

/** `spiffe://td/agent/bot` -> `bot`; anything else as it is. */
function shortAgent(id) {
  if (!id) return '(no identity)';
  const m = /\/agent\/([^/]+)$/.exec(String(id));
  return m ? m[1] : String(id);
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function text(v) {
  if (v === null || v === undefined || v === '') return '—';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

// ---------------------------------------------------------------------------------------
// API

async function api(method, path, body) {
  const generation = state.generation;
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (generation !== state.generation) throw new ApiError(0, 'stale', 'signed out meanwhile');
  if (resp.status === 401) {
    signOut('The server no longer accepts this session (expired, revoked or restarted). Sign in again.');
    throw new ApiError(401, 'unauthorized', 'signed out');
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, data?.error, data?.reason ?? data?.status ?? resp.statusText, data);
  }
  return data;
}

function describe(err) {
  if (err instanceof ApiError) {
    const code = err.code ? `${err.code}: ` : '';
    return `${err.status} ${code}${err.message}`;
  }
  return `network error: ${err?.message ?? err}`;
}

// ---------------------------------------------------------------------------------------
// Sign-in

/** The one-time code of a `#code=` link, removed from the address bar and history at once. */
function takeCode() {
  const code = /^#code=([^&]+)/.exec(location.hash)?.[1];
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  return code ? decodeURIComponent(code) : null;
}

async function boot() {
  bindStatic();
  // A new link pasted into an open tab only changes the fragment.
  window.addEventListener('hashchange', () => {
    const code = takeCode();
    if (code) {
      signOut();
      exchange(code);
    }
  });
  const code = takeCode();
  if (code) {
    await exchange(code);
    return;
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    await trySignIn(saved, 'Your saved session is no longer valid. Sign in again.');
  } else {
    showSignin('');
  }
}

async function exchange(code) {
  showLoading();
  let resp;
  try {
    resp = await fetch('/api/v1/dashboard/exchange', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ code }),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (err) {
    showSignin(`Could not reach AgentGate (${err.message}).`);
    return;
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok || typeof data?.token !== 'string') {
    showSignin(
      resp.status === 401
        ? 'This sign-in link was already used or has expired. Run `agentgate dashboard` for a new one, or paste a token.'
        : `Sign-in link refused: ${resp.status} ${data?.reason ?? ''}`,
    );
    return;
  }
  await trySignIn(data.token, 'The session from this link was refused. Run `agentgate dashboard` again.');
}

async function trySignIn(token, failMessage) {
  showLoading();
  let resp;
  try {
    resp = await fetch('/api/v1/whoami', {
      headers: { Authorization: `Bearer ${token}` },
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (err) {
    showSignin(`Could not reach AgentGate (${err.message}).`);
    return;
  }
  const data = await resp.json().catch(() => null);
  if (resp.status === 401 || resp.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignin(failMessage);
    return;
  }
  if (!resp.ok || !data) {
    showSignin(`Sign-in failed: ${resp.status} ${data?.reason ?? resp.statusText}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.generation += 1;
  state.token = token;
  state.whoami = data;
  start();
}

function showLoading() {
  show($('signin'), false);
  show($('app'), false);
  show($('loading'), true);
}

function showSignin(message) {
  show($('loading'), false);
  show($('app'), false);
  show($('facts'), false);
  show($('header-actions'), false);
  show($('signin'), true);
  setMessage($('signin-message'), message);
  $('token-input').value = '';
  $('token-input').focus();
}

function signOut(message = '') {
  state.generation += 1;
  stopStream();
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  clearTimeout(state.refreshTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.whoami = null;
  clearData();
  if ($('panic-dialog').open) $('panic-dialog').close();
  if ($('record-dialog').open) $('record-dialog').close();
  showSignin(message);
}

/** Drops every piece of data from the page (the next user must not see it). */
function clearData() {
  state.lastSeq = null;
  state.rowsBySeq.clear();
  state.rowsByRequest.clear();
  state.outcomes.clear();
  state.agentNames.clear();
  state.agents = [];
  state.consentEls.clear();
  for (const id of ['decisions', 'events', 'consents', 'agents', 'record-meta', 'record-json', 'panic-agent']) {
    $(id).replaceChildren();
  }
  $('filter-agent').replaceChildren(el('option', { value: '' }, 'all agents'));
  $('audit-status').textContent = '…';
  $('policy-status').textContent = '…';
  $('instance-id').textContent = '—';
  $('scope').textContent = '—';
  updateCounts();
}

// ---------------------------------------------------------------------------------------
// Signed in

function start() {
  const who = state.whoami;
  $('instance-id').textContent = text(who.instance);
  $('scope').textContent = who.scope === 'tenant' ? `tenant ${who.tenant}` : 'instance';
  show($('fleet-toggle'), Boolean(who.fleet));
  $('fleet-scope').checked = false;
  state.scope = 'instance';
  $('panic-all-label').textContent =
    who.scope === 'tenant' ? `All agents of tenant ${who.tenant}` : 'All agents (every agent of this instance)';
  show($('loading'), false);
  show($('signin'), false);
  show($('facts'), true);
  show($('header-actions'), true);
  show($('app'), true);
  setStreamStatus('connecting', 'connecting…');

  refreshConsents();
  refreshAgents();
  refreshAudit();
  refreshPolicy();
  connectStream();
  state.timers.push(setInterval(refreshConsents, CONSENT_POLL_MS));
  state.timers.push(setInterval(refreshAudit, AUDIT_POLL_MS));
  state.timers.push(setInterval(refreshAgents, AGENTS_POLL_MS));
  state.timers.push(setInterval(tick, 1000));
}

/** Once a second: countdowns and relative times. */
function tick() {
  for (const node of document.querySelectorAll('[data-expires]')) {
    node.textContent = countdown(Number(node.dataset.expires));
  }
  for (const node of document.querySelectorAll('[data-last-seen]')) {
    const v = node.dataset.lastSeen;
    node.textContent = relative(v === '' ? null : Number(v));
  }
}

/** Refreshes panels after admin events, at most about every 300 ms. */
function requestRefresh(...what) {
  for (const w of what) state.refreshWanted.add(w);
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => {
    const wanted = state.refreshWanted;
    state.refreshWanted = new Set();
    if (wanted.has('consents')) refreshConsents();
    if (wanted.has('agents')) refreshAgents();
    if (wanted.has('policy')) refreshPolicy();
    if (wanted.has('audit')) refreshAudit();
  }, 300);
}

// ---------------------------------------------------------------------------------------
// Live stream

function setStreamStatus(kind, label) {
  const node = $('stream-status');
  node.dataset.state = kind;
  node.textContent = label;
}

function stopStream() {
  clearTimeout(state.reconnectTimer);
  if (state.es) {
    state.es.close();
    state.es = null;
  }
}

async function connectStream() {
  stopStream();
  const generation = state.generation;
  let ticket;
  try {
    ticket = (await api('POST', '/api/v1/events/ticket')).ticket;
  } catch (err) {
    if (generation !== state.generation || err.status === 401) return;
    scheduleReconnect(`ticket refused: ${describe(err)}`);
    return;
  }
  if (generation !== state.generation) return;
  const params = new URLSearchParams({ ticket });
  if (state.scope === 'fleet') params.set('scope', 'fleet');
  if (state.lastSeq !== null) params.set('last_event_id', String(state.lastSeq));
  else params.set('backlog', '100');
  const es = new EventSource(`/api/v1/events?${params}`);
  state.es = es;
  es.addEventListener('open', () => {
    if (state.es !== es) return;
    state.reconnectDelay = 1000;
    setStreamStatus('live', 'live');
  });
  const onEvent = (ev) => {
    if (state.es !== es) return;
    try {
      onRecord(JSON.parse(ev.data));
    } catch (err) {
      console.warn('unreadable event', err);
    }
  };
  es.addEventListener('record', onEvent);
  es.addEventListener('message', onEvent);
  es.addEventListener('error', () => {
    if (state.es !== es) return;
    // A ticket works once, so EventSource's own retry would fail: reconnect with a new one.
    es.close();
    state.es = null;
    scheduleReconnect('connection lost');
  });
}

function scheduleReconnect(why) {
  const delay = state.reconnectDelay;
  state.reconnectDelay = Math.min(delay * 2, 10000);
  setStreamStatus('reconnecting', `reconnecting (${why})…`);
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(connectStream, delay);
}

function onRecord(event) {
  // In the fleet view, the stream sequence: one log's seq is not unique across instances.
  const seq = Number(event.stream_seq ?? event.seq ?? event.record?.seq);
  const record = event.record ?? {};
  if (Number.isFinite(seq) && (state.lastSeq === null || seq > state.lastSeq)) state.lastSeq = seq;
  switch (record.kind) {
    case 'decision':
      addDecision(seq, record);
      if (record.policy_effect === 'escalate') requestRefresh('consents');
      if (record.budgets) requestRefresh('policy');
      break;
    case 'outcome':
      addOutcome(record);
      break;
    case 'admin':
      addAdminEvent(seq, record);
      break;
    default:
      break;
  }
}

/** Switches the live decisions between this instance and the whole fleet. */
function switchScope() {
  state.scope = $('fleet-scope').checked ? 'fleet' : 'instance';
  state.lastSeq = null;
  state.rowsBySeq.clear();
  state.rowsByRequest.clear();
  state.outcomes.clear();
  $('decisions').replaceChildren();
  updateCounts();
  setStreamStatus('connecting', 'connecting…');
  connectStream();
}

// ---------------------------------------------------------------------------------------
// Decisions

function addDecision(seq, r) {
  if (state.rowsBySeq.has(seq)) return;
  const agent = shortAgent(r.agent);
  const action = r.action?.name ?? `${r.method ?? ''}`.trim();
  const resource = r.resource ? `${r.resource.type}:${r.resource.id}` : `${r.host ?? ''}${r.path ?? ''}`;
  const effect = r.effect ?? '?';
  const escalated = r.policy_effect === 'escalate';
  const reasons = Array.isArray(r.reasons) ? r.reasons.join('; ') : text(r.reasons);
  let consent = '';
  if (r.consent?.status) consent = ` (consent ${r.consent.status}${r.consent.by ? ` by ${r.consent.by}` : ''})`;
  else if (r.consent?.error) consent = ` (consent: ${r.consent.error})`;

  const effectCell = el('td', {},
    el('span', { className: `badge ${effect === 'allow' ? 'allow' : 'deny'}` }, effect),
    escalated ? el('span', { className: 'badge escalate', title: 'the policy escalated to a person' }, 'escalate') : null,
    r.mode === 'observe' ? el('span', { className: 'badge muted' }, 'observe') : null,
    // The shadow policy would have decided otherwise.
    r.shadow ? el('span', {
      className: 'badge shadow',
      title: `shadow policy ${r.shadow.policy_hash ?? ''}: ${(r.shadow.reasons ?? []).join('; ')}`,
    }, `shadow: ${r.shadow.effect}`) : null,
    (r.budgets ?? []).some((b) => b.exceeded) ? el('span', { className: 'badge escalate', title: 'over its budget' }, 'budget') : null,
  );
  const latency = el('td', { className: 'num latency' });
  const row = el('tr', {
    tabIndex: 0,
    className: `effect-${effect}`,
    title: 'Enter or click: show the audit record',
    dataset: {
      seq: String(seq),
      effect,
      policyEffect: r.policy_effect ?? '',
      shadow: r.shadow?.effect ?? '',
      action,
      agent,
      requestId: r.request_id ?? '',
      method: r.method ?? '',
      instance: r.instance ?? '',
    },
  },
  el('td', { className: 'nowrap' }, clock(toMs(r.ts))),
  el('td', { title: r.agent ?? '' }, agent,
    // In the fleet view, which instance decided.
    state.scope === 'fleet' ? el('div', { className: 'muted mono', title: 'instance' }, text(r.instance)) : null),
  el('td', { className: 'mono wrap action' }, action || '—'),
  el('td', { className: 'mono wrap resource' }, resource || '—'),
  effectCell,
  el('td', {}, r.gate ?? ''),
  el('td', { className: 'wrap reasons' }, reasons + consent),
  latency,
  );
  row.dataset.search = `${agent} ${r.agent ?? ''} ${action} ${resource}`.toLowerCase();
  state.rowsBySeq.set(seq, row);
  if (r.request_id) state.rowsByRequest.set(r.request_id, row);
  fillLatency(row, r.request_id, effect);

  // Newest first: insert before the first row with a smaller seq (backlog replays arrive in order).
  const tbody = $('decisions');
  let before = tbody.firstElementChild;
  while (before && Number(before.dataset.seq) > seq) before = before.nextElementSibling;
  tbody.insertBefore(row, before);
  while (tbody.childElementCount > MAX_ROWS) dropRow(tbody.lastElementChild);

  if (r.agent && !state.agentNames.has(agent)) addAgentOption(agent);
  if (r.agent) touchAgent(r.agent, toMs(r.ts));
  applyFilter(row);
  updateCounts();
}

/** Moves an agent's "last activity" forward as its decisions arrive. */
function touchAgent(spiffeId, ms) {
  const a = state.agents.find((x) => x.spiffe_id === spiffeId);
  if (!a || ms === null) return;
  const cell = document.querySelector(`#agents tr[data-agent="${CSS.escape(String(a.name))}"] td[data-last-seen]`);
  if (cell && Number(cell.dataset.lastSeen || 0) < ms) {
    cell.dataset.lastSeen = String(ms);
    cell.textContent = relative(ms);
    cell.title = dateTime(ms);
  }
}

function dropRow(row) {
  state.rowsBySeq.delete(Number(row.dataset.seq));
  if (row.dataset.requestId) state.rowsByRequest.delete(row.dataset.requestId);
  row.remove();
}

function fillLatency(row, requestId, effect) {
  const cell = row.querySelector('.latency');
  const us = requestId ? state.outcomes.get(requestId) : undefined;
  if (us !== undefined) cell.textContent = `${(us / 1000).toFixed(us < 10000 ? 2 : 0)} ms`;
  // Refusals and CONNECTs (the tunnel, not a request) have no outcome to wait for.
  else cell.textContent = effect === 'deny' || row.dataset.method === 'CONNECT' ? '—' : '…';
}

function addOutcome(r) {
  if (!r.request_id) return;
  state.outcomes.set(r.request_id, Number(r.duration_us ?? 0));
  if (state.outcomes.size > MAX_OUTCOMES) state.outcomes.delete(state.outcomes.keys().next().value);
  const row = state.rowsByRequest.get(r.request_id);
  if (row) fillLatency(row, r.request_id, row.dataset.effect);
}

function addAgentOption(name) {
  state.agentNames.add(name);
  const select = $('filter-agent');
  const options = [...select.options].slice(1).map((o) => o.value);
  options.push(name);
  options.sort();
  const current = select.value;
  select.replaceChildren(el('option', { value: '' }, 'all agents'), ...options.map((n) => el('option', { value: n }, n)));
  select.value = current;
}

function applyFilter(row) {
  const q = $('filter-text').value.trim().toLowerCase();
  const effect = $('filter-effect').value;
  const agent = $('filter-agent').value;
  let visible = true;
  if (q && !row.dataset.search.includes(q)) visible = false;
  if (effect === 'escalate' && row.dataset.policyEffect !== 'escalate') visible = false;
  if (effect === 'shadow' && !row.dataset.shadow) visible = false;
  if ((effect === 'allow' || effect === 'deny') && row.dataset.effect !== effect) visible = false;
  if (agent && row.dataset.agent !== agent) visible = false;
  row.hidden = !visible;
}

function applyFilters() {
  for (const row of $('decisions').children) applyFilter(row);
  updateCounts();
}

function updateCounts() {
  const rows = $('decisions').children;
  const shown = [...rows].filter((r) => !r.hidden).length;
  $('decision-count').textContent = rows.length ? `${shown} of ${rows.length} shown (newest first, up to ${MAX_ROWS})` : '';
  show($('decisions-empty'), rows.length === 0);
  $('events-count').textContent = `(${$('events').childElementCount})`;
}

// ---------------------------------------------------------------------------------------
// Admin events

function addAdminEvent(seq, r) {
  const event = String(r.event ?? 'admin');
  const d = r.detail ?? {};
  let who = d.agent ? shortAgent(d.agent) : d.name ?? '';
  if (!who && Array.isArray(d.agents)) who = d.agents.map(shortAgent).join(', ');
  const step = typeof d.step === 'object' && d.step !== null ? d.step.step : d.step;
  const what = [who, d.action, d.consent_id, step, d.reason].filter((v) => typeof v === 'string' && v).join(' · ');
  const item = el('li', { dataset: { seq: String(seq), event } },
    el('span', { className: 'muted nowrap' }, clock(toMs(r.ts))), ' ',
    el('strong', {}, event), what ? ` ${what}` : '');
  $('events').prepend(item);
  while ($('events').childElementCount > MAX_EVENTS) $('events').lastElementChild.remove();
  updateCounts();

  if (event.startsWith('consent_')) requestRefresh('consents');
  if (event.startsWith('agent_') || event.startsWith('token_') || event === 'panic') requestRefresh('agents', 'consents');
  if (event.startsWith('policy_')) requestRefresh('policy');
  requestRefresh('audit');
}

// GETs a panel's data; a failure (other than signed out or offline) shows in its note.
async function load(path, noteId) {
  try {
    const data = await api('GET', path);
    $(noteId).textContent = '';
    return data;
  } catch (err) {
    if (err.status !== 0 && err.status !== 401) $(noteId).textContent = `could not load: ${describe(err)}`;
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Consents

async function refreshConsents() {
  const data = await load('/api/v1/consents', 'consents-note');
  if (data === undefined) return;
  const list = Array.isArray(data?.consents) ? data.consents : [];
  const seen = new Set();
  const container = $('consents');
  for (const c of list) {
    const id = String(c.id ?? c.consent_id ?? '');
    if (!id) continue;
    seen.add(id);
    // Keep existing cards: replacing them every 5 s would steal keyboard focus.
    if (!state.consentEls.has(id)) {
      const card = consentCard(id, c);
      state.consentEls.set(id, card);
      container.append(card);
    }
  }
  for (const [id, card] of state.consentEls) {
    if (!seen.has(id) && !card.dataset.answering) {
      card.remove();
      state.consentEls.delete(id);
    }
  }
  show($('consents-empty'), state.consentEls.size === 0);
}

function consentCard(id, c) {
  const resource = c.resource ? `${c.resource.type}:${c.resource.id}` : '—';
  const expiresMs = toMs(c.expires);
  const error = el('p', { className: 'message', attrs: { role: 'alert' }, hidden: true });
  const button = (action, label, cls) => el('button', {
    type: 'button',
    className: cls,
    dataset: { action, consent: id },
  }, label);
  const buttons = el('div', { className: 'consent-buttons' },
    button('approve', 'Approve', 'approve'),
    button('approve-10m', 'Approve for 10 min', 'approve'),
    button('deny', 'Deny', 'deny'),
  );
  const card = el('article', { className: 'consent', dataset: { consentId: id } },
    el('div', { className: 'consent-head' },
      el('strong', { title: c.agent ?? '' }, shortAgent(c.agent)),
      ' wants ',
      el('span', { className: 'mono' }, text(c.action)),
    ),
    el('div', { className: 'mono wrap' }, resource),
    el('div', { className: 'consent-meta' },
      el('span', {}, 'code ', el('strong', { className: 'code' }, text(c.binding_code))),
      c.owner ? el('span', {}, `owner ${c.owner}`) : null,
      c.tenant ? el('span', {}, `tenant ${c.tenant}`) : null,
      expiresMs === null ? null : el('span', {},
        el('span', { className: 'sr-only' }, `expires at ${clock(expiresMs)}; `),
        'expires in ',
        el('span', { attrs: { 'aria-hidden': 'true' }, dataset: { expires: String(expiresMs) } }, countdown(expiresMs)),
      ),
    ),
    el('details', {},
      el('summary', {}, 'Full request'),
      el('pre', { className: 'json' }, pretty({
        agent: c.agent,
        action: c.action,
        resource: c.resource,
        context: c.context,
        created: c.created,
        expires: c.expires,
        backend: c.backend,
      })),
    ),
    buttons,
    error,
  );
  buttons.addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (b) answerConsent(card, id, b.dataset.action, buttons, error);
  });
  return card;
}

async function answerConsent(card, id, action, buttons, error) {
  const path = `/api/v1/consents/${encodeURIComponent(id)}/${action === 'deny' ? 'deny' : 'approve'}`;
  const body = action === 'approve-10m' ? { for: '10m' } : {};
  for (const b of buttons.querySelectorAll('button')) b.disabled = true;
  card.dataset.answering = '1';
  setMessage(error, '');
  try {
    const c = await api('POST', path, body);
    card.classList.add('answered');
    setMessage(error, `${c?.status ?? (action === 'deny' ? 'denied' : 'approved')}`, 'ok');
    delete card.dataset.answering;
    requestRefresh('consents');
  } catch (err) {
    delete card.dataset.answering;
    if (err.status === 0 || err.status === 401) return;
    const already = err.status === 409 && err.body?.status ? ` (already ${err.body.status})` : '';
    setMessage(error, `Not answered${already}: ${describe(err)}`);
    for (const b of buttons.querySelectorAll('button')) b.disabled = err.status === 409 || err.status === 404;
  }
}

// ---------------------------------------------------------------------------------------
// Agents

async function refreshAgents() {
  const data = await load('/api/v1/agents', 'agents-note');
  if (data === undefined) return;
  const agents = Array.isArray(data?.agents) ? data.agents : [];
  agents.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  state.agents = agents;
  const tbody = $('agents');
  const focusedName = document.activeElement?.closest?.('#agents tr')?.dataset.agent;
  tbody.replaceChildren(...agents.flatMap(agentRows));
  if (agents.length === 0) {
    tbody.append(el('tr', {}, el('td', { colSpan: 5, className: 'muted' }, 'No agents registered.')));
  }
  if (focusedName) tbody.querySelector(`tr[data-agent="${CSS.escape(focusedName)}"] button`)?.focus();
  for (const a of agents) if (!a.revoked && !state.agentNames.has(a.name)) addAgentOption(String(a.name));
  fillPanicAgents();
}

/** Two rows per agent: the facts, then its SPIFFE ID across the whole width. */
function agentRows(a) {
  const revoked = Boolean(a.revoked);
  const lastSeen = toMs(a.last_seen);
  const revoke = el('button', {
    type: 'button',
    className: 'deny small',
    disabled: revoked,
    dataset: { action: 'revoke', agent: a.name },
  }, 'Revoke');
  revoke.setAttribute('aria-label', `Revoke agent ${a.name}`);
  revoke.addEventListener('click', () => revokeAgent(a.name, revoke));
  const owner = [a.owner, a.tenant ? `tenant ${a.tenant}` : null].filter(Boolean).join(' · ');
  return [
    el('tr', { className: 'agent-main', dataset: { agent: a.name, status: revoked ? 'revoked' : 'active' } },
      el('th', { scope: 'row' }, text(a.name)),
      el('td', {}, owner || '—'),
      el('td', { dataset: { lastSeen: lastSeen === null ? '' : String(lastSeen) }, title: dateTime(lastSeen) }, relative(lastSeen)),
      el('td', {}, el('span', {
        className: `badge ${revoked ? 'deny' : 'allow'}`,
        title: revoked ? `revoked ${dateTime(toMs(a.revoked))}` : `${a.active_tokens ?? 0} active token(s)`,
      }, revoked ? 'revoked' : 'active')),
      el('td', { className: 'num' }, revoke),
    ),
    el('tr', { className: 'agent-sub' }, el('td', { colSpan: 5, className: 'mono tiny wrap muted' }, text(a.spiffe_id))),
  ];
}

async function revokeAgent(name, button) {
  // eslint-disable-next-line no-alert
  if (!window.confirm(`Revoke agent ${name}? Its identity and every token it holds stop working now.`)) return;
  button.disabled = true;
  try {
    await api('POST', `/api/v1/agents/${encodeURIComponent(name)}/revoke`, { reason: 'revoked from the dashboard' });
  } catch (err) {
    if (err.status !== 0 && err.status !== 401) {
      button.disabled = false;
      $('agents-note').textContent = `revoking ${name} failed: ${describe(err)}`;
    }
    return;
  }
  refreshAgents();
}

// ---------------------------------------------------------------------------------------
// Audit and policy

async function refreshAudit() {
  const node = $('audit-status');
  let v;
  try {
    v = await api('GET', '/api/v1/audit/verify');
  } catch (err) {
    if (err.status === 0 || err.status === 401) return;
    node.dataset.kind = err.status === 403 ? 'muted' : 'error';
    node.textContent = err.status === 403 ? 'Chain verification is available to the instance admin.' : `Could not verify: ${describe(err)}`;
    return;
  }
  const cp = v.last_checkpoint;
  const checkpoint = cp
    ? `last checkpoint at size ${cp.size} (${dateTime(toMs(cp.time))})`
    : v.checkpoints ? `${v.checkpoints} checkpoint(s)` : 'no checkpoint yet';
  const upTo = v.verified_to ?? v.records ?? '?';
  if (v.intact) {
    node.dataset.kind = 'ok';
    node.textContent = `Chain intact, verified to seq ${upTo}, ${checkpoint}.`;
  } else {
    node.dataset.kind = 'error';
    node.textContent = `Chain NOT intact: ${v.problem ?? 'unknown problem'} (verified to seq ${upTo}; ${checkpoint}).`;
  }
}

async function refreshPolicy() {
  const node = $('policy-status');
  let p;
  try {
    p = await api('GET', '/api/v1/policy');
  } catch (err) {
    if (err.status === 0 || err.status === 401) return;
    node.replaceChildren(el('p', { className: 'message', dataset: { kind: 'error' } }, `Could not load: ${describe(err)}`));
    return;
  }
  const files = Array.isArray(p.files) ? p.files : [];
  const hash = typeof p.hash === 'string' ? p.hash.replace(/^sha256:/, '').slice(0, 12) : text(p.hash);
  node.replaceChildren(...[
    el('dl', { className: 'kv' },
      el('dt', {}, 'Mode'), el('dd', {}, el('span', { className: `badge ${p.mode === 'enforce' ? 'allow' : 'escalate'}` }, text(p.mode))),
      el('dt', {}, 'Hash'), el('dd', { className: 'mono', title: text(p.hash) }, hash),
      el('dt', {}, 'Directory'), el('dd', { className: 'mono wrap' }, text(p.dir)),
      el('dt', {}, 'Files'), el('dd', { className: 'mono wrap' }, files.length ? files.map(String).join(', ') : '—'),
    ),
    p.last_error ? el('p', { className: 'message', dataset: { kind: 'error' } }, `Last reload failed: ${text(p.last_error)}`) : null,
    p.shadow ? el('dl', { className: 'kv' },
      el('dt', {}, 'Shadow'), el('dd', { className: 'mono', title: text(p.shadow.hash) }, `${text(p.shadow.hash).slice(0, 12)} ${text(p.shadow.dir)}`),
    ) : null,
    p.shadow?.last_error ? el('p', { className: 'message', dataset: { kind: 'error' } }, `Shadow reload failed: ${text(p.shadow.last_error)}`) : null,
    await budgetsTable(),
  ].filter(Boolean));
}

/** Each action budget's use against its limit, or nothing when none is in use. */
async function budgetsTable() {
  let b;
  try {
    b = await api('GET', '/api/v1/budgets');
  } catch {
    return null;
  }
  const rows = Array.isArray(b?.budgets) ? b.budgets : [];
  if (!rows.length) return null;
  return el('table', { className: 'budgets' },
    el('caption', {}, 'Budgets'),
    el('thead', {}, el('tr', {}, el('th', {}, 'Key'), el('th', {}, 'Used'), el('th', {}, 'Window'))),
    el('tbody', {}, ...rows.map((u) => el('tr', { className: u.used >= u.limit ? 'effect-deny' : '' },
      el('td', { className: 'mono wrap' }, (u.key ?? []).map(String).join('/')),
      el('td', { className: 'num' }, `${u.used} / ${u.limit}`),
      el('td', { className: 'num' }, `${Math.round((u.window_secs ?? 0) / 60)} min`),
    ))),
  );
}

/** Replays recorded traffic against the candidate in the replay form. */
async function replayCandidate(event) {
  event.preventDefault();
  const out = $('replay-result');
  const rego = $('replay-rego').value;
  const since = $('replay-since').value.trim();
  out.replaceChildren(el('p', { className: 'status' }, 'replaying…'));
  let r;
  try {
    r = await api('POST', '/api/v1/policy/replay', { files: { 'candidate.rego': rego }, ...(since ? { since } : {}) });
  } catch (err) {
    out.replaceChildren(el('p', { className: 'message', dataset: { kind: 'error' } }, describe(err)));
    return;
  }
  const moves = Array.isArray(r.transitions) ? r.transitions : [];
  out.replaceChildren(
    el('p', {}, `${r.replayed} decisions replayed (${r.distinct} distinct): ${r.changed} would change, ${r.unchanged} would not.`),
    moves.length ? el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'Change'), el('th', {}, 'Action'), el('th', {}, 'Count'), el('th', {}, 'Examples'))),
      el('tbody', {}, ...moves.map((t) => el('tr', {},
        el('td', {}, `${t.from} → ${t.to}`),
        el('td', { className: 'mono wrap' }, text(t.action)),
        el('td', { className: 'num' }, String(t.count)),
        el('td', {}, ...(t.examples ?? []).map((seq) => el('button', { type: 'button', className: 'quiet small', onclick: () => openRecord(seq) }, `#${seq}`))),
      ))),
    ) : null,
  );
}

// ---------------------------------------------------------------------------------------
// One audit record

async function openRecord(seq) {
  const dialog = $('record-dialog');
  $('record-title').textContent = `Audit record #${seq}`;
  $('record-meta').replaceChildren();
  $('record-json').textContent = 'loading…';
  if (!dialog.open) dialog.showModal();
  let r;
  try {
    const scope = state.scope === 'fleet' ? '?scope=fleet' : '';
    r = await api('GET', `/api/v1/audit/${encodeURIComponent(seq)}${scope}`);
  } catch (err) {
    if (err.status !== 0 && err.status !== 401) $('record-json').textContent = `Could not load: ${describe(err)}`;
    return;
  }
  $('record-meta').replaceChildren(
    el('dt', {}, 'Hash'), el('dd', { className: 'mono wrap' }, text(r.hash)),
    ...(r.log_id === undefined
      ? [el('dt', {}, 'Previous hash'), el('dd', { className: 'mono wrap' }, text(r.prev_hash))]
      : [el('dt', {}, 'Log'), el('dd', { className: 'mono wrap' }, `${text(r.log_id)} #${text(r.seq)}`)]),
  );
  $('record-json').textContent = pretty(r.record);
}

// ---------------------------------------------------------------------------------------
// PANIC

function fillPanicAgents() {
  const select = $('panic-agent');
  const current = select.value;
  const active = state.agents.filter((a) => !a.revoked);
  select.replaceChildren(...active.map((a) => el('option', { value: a.name }, `${a.name}${a.owner ? ` (owner ${a.owner})` : ''}`)));
  if (active.some((a) => a.name === current)) select.value = current;
  updatePanicLabel();
}

function panicTarget() {
  return $('panic-all').checked ? { all: true } : { agent: $('panic-agent').value };
}

function updatePanicLabel() {
  const t = panicTarget();
  const button = $('panic-confirm');
  $('panic-agent').disabled = Boolean(t.all);
  if (t.all) {
    const who = state.whoami?.scope === 'tenant' ? `every agent of tenant ${state.whoami.tenant}` : 'every agent';
    button.textContent = `PANIC: cut off ${who} now`;
    button.disabled = false;
  } else if (t.agent) {
    button.textContent = `PANIC: cut off agent ${t.agent} now`;
    button.disabled = false;
  } else {
    button.textContent = 'PANIC: no active agent to cut off';
    button.disabled = true;
  }
}

function openPanic() {
  const dialog = $('panic-dialog');
  show($('panic-form'), true);
  show($('panic-result'), false);
  show($('panic-done'), false);
  $('panic-result').replaceChildren();
  setMessage($('panic-error'), '');
  $('panic-reason').value = '';
  fillPanicAgents();
  refreshAgents();
  dialog.showModal();
  $('panic-agent').focus();
}

async function confirmPanic() {
  const target = panicTarget();
  const reason = $('panic-reason').value.trim();
  const body = { ...target, ...(reason ? { reason } : {}) };
  const button = $('panic-confirm');
  button.disabled = true;
  setMessage($('panic-error'), '');
  let report;
  try {
    report = await api('POST', '/api/v1/panic', body);
  } catch (err) {
    button.disabled = false;
    if (err.status !== 0 && err.status !== 401) setMessage($('panic-error'), `PANIC failed: ${describe(err)}`);
    return;
  }
  showPanicReport(report);
  refreshAgents();
  refreshConsents();
}

function showPanicReport(r) {
  const agents = Array.isArray(r.agents) ? r.agents : [];
  const steps = Array.isArray(r.steps) ? r.steps : [];
  const upstream = Array.isArray(r.upstream) ? r.upstream : [];
  const result = $('panic-result');
  result.replaceChildren(
    el('p', { className: 'message', dataset: { kind: r.ok === false ? 'error' : 'ok' } },
      `PANIC ${text(r.panic_id)} done: ${agents.length ? agents.map(shortAgent).join(', ') : 'no agent'} cut off`,
      r.local_ms !== undefined ? ` in ${r.local_ms} ms.` : '.'),
    el('table', { className: 'report' },
      el('tbody', {}, ...steps.map((s) => typeof s === 'object' && s !== null
        ? el('tr', {}, el('th', { scope: 'row' }, text(s.step)), el('td', { className: 'num' }, text(s.count)), el('td', {}, text(s.detail)))
        : el('tr', {}, el('td', { colSpan: 3 }, text(s))))),
    ),
    upstream.length
      ? el('ul', {}, ...upstream.map((u) => el('li', {}, `upstream ${text(u.service)} ${text(u.kind)}: ${text(u.result)} ${u.detail ?? ''}`)))
      : el('p', { className: 'muted' }, 'Upstream: nothing the agents received needed revoking.'),
  );
  show($('panic-form'), false);
  show(result, true);
  show($('panic-done'), true);
  $('panic-close').focus();
}

// ---------------------------------------------------------------------------------------
// Wiring (no inline handlers: the CSP forbids them)

function bindStatic() {
  $('replay-form').addEventListener('submit', replayCandidate);
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) {
      setMessage($('signin-message'), 'Paste a token first.');
      return;
    }
    trySignIn(token, 'That token was not accepted. Check that you pasted the whole admin token.');
  });
  $('signout-button').addEventListener('click', () => {
    // End a dashboard session on the server too (a pasted admin token is not a session;
    // the server leaves it alone).
    if (state.token) {
      fetch('/api/v1/dashboard/session', {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${state.token}` },
        cache: 'no-store',
        credentials: 'omit',
      }).catch(() => {});
    }
    signOut('Signed out.');
  });
  $('panic-button').addEventListener('click', openPanic);
  $('panic-cancel').addEventListener('click', () => $('panic-dialog').close());
  $('panic-close').addEventListener('click', () => $('panic-dialog').close());
  $('panic-confirm').addEventListener('click', confirmPanic);
  $('fleet-scope').addEventListener('change', switchScope);
  $('panic-one').addEventListener('change', updatePanicLabel);
  $('panic-all').addEventListener('change', updatePanicLabel);
  $('panic-agent').addEventListener('change', updatePanicLabel);
  $('record-close').addEventListener('click', () => $('record-dialog').close());
  $('audit-refresh').addEventListener('click', refreshAudit);
  for (const id of ['filter-text', 'filter-effect', 'filter-agent']) {
    $(id).addEventListener('input', applyFilters);
    $(id).addEventListener('change', applyFilters);
  }
  const tbody = $('decisions');
  const open = (row) => row && openRecord(row.dataset.seq);
  tbody.addEventListener('click', (ev) => open(ev.target.closest('tr[data-seq]')));
  tbody.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      const row = ev.target.closest('tr[data-seq]');
      if (row) {
        ev.preventDefault();
        open(row);
      }
    }
  });
}

boot();
