// Drives the AgentGate dashboard in headless Chromium (Debian `chromium`) with playwright-core,
// one step at a time for tests/cases/dashboard.rs.
//
// Protocol: prints `READY` once the browser runs; then reads one JSON command per stdin line,
// `{"n": 1, "cmd": "...", "args": {...}}`, and answers one stdout line
// `{"n": 1, "ok": true, "result": ...}` or `{"n": 1, "ok": false, "error": "..."}`. Stdin
// closing ends it. Env: AGENTGATE_ADMIN (http://host:port), AGENTGATE_SCREENSHOTS (a dir),
// CHROMIUM (default /usr/bin/chromium).
//
// Every browser console error and uncaught page error is collected (CSP violations land
// there); `errors` returns those not expected by the step that caused them.

import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

// playwright-core lives in tests/clients/node_modules (installed by scripts/test), not next
// to this file: resolve it from there so the script runs from any directory.
const requireFromClients = createRequire(new URL('../clients/package.json', import.meta.url));
const playwright = await import(pathToFileURL(requireFromClients.resolve('playwright-core')).href);
const { chromium } = playwright.default ?? playwright;

const ADMIN = process.env.AGENTGATE_ADMIN;
const SHOTS = process.env.AGENTGATE_SCREENSHOTS;
const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 15_000;

if (!ADMIN || !SHOTS) {
  console.error('dashboard.mjs: AGENTGATE_ADMIN and AGENTGATE_SCREENSHOTS must be set');
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({ executablePath: EXECUTABLE, headless: true, args: ['--no-sandbox'] });
const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
context.setDefaultTimeout(TIMEOUT);

/** What the current step is; console errors are judged by it. */
let phase = 'start';
const errors = [];
/** Every response to an /api/ request: {phase, method, path, status}. */
const apiCalls = [];
let page = null;

function watch(p) {
  p.on('console', (msg) => {
    if (msg.type() === 'error') errors.push({ phase, text: msg.text() });
  });
  p.on('pageerror', (err) => errors.push({ phase, text: `uncaught: ${err.message}` }));
  p.on('response', (resp) => {
    const url = new URL(resp.url());
    if (url.pathname.startsWith('/api/')) {
      apiCalls.push({ phase, method: resp.request().method(), path: url.pathname, status: resp.status() });
    }
  });
  // `confirm()` of the agents panel: accept (no step uses it unless on purpose).
  p.on('dialog', (d) => d.accept());
}

/** Errors that a step provokes on purpose: the 401 of a rejected token. */
function expected(e) {
  return e.phase === 'wrong_token' && /status of 401/.test(e.text);
}

async function newPage() {
  if (page) await page.close();
  page = await context.newPage();
  watch(page);
  return page;
}

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, name) });
}

const live = () => page.locator('#stream-status[data-state="live"]');

const commands = {
  /** `/` without a token: the sign-in form, no data, no API call answered 2xx. */
  async open_anonymous() {
    phase = 'anonymous';
    const p = await newPage();
    const resp = await p.goto(`${ADMIN}/`, { waitUntil: 'networkidle' });
    await p.locator('#signin').waitFor({ state: 'visible' });
    await p.locator('#token-input[type="password"]').waitFor({ state: 'visible' });
    await shot('0-signin.png');
    return {
      status: resp.status(),
      headers: resp.headers(),
      app_visible: await p.locator('#app').isVisible(),
      decisions: await p.locator('#decisions tr').count(),
      api_calls: apiCalls.filter((c) => c.phase === 'anonymous'),
    };
  },

  /** Pastes a wrong token: an error on the sign-in form, still no data. */
  async wrong_token({ token }) {
    phase = 'wrong_token';
    await page.fill('#token-input', token);
    await page.click('#signin-button');
    const message = page.locator('#signin-message');
    await message.waitFor({ state: 'visible' });
    await page.waitForLoadState('networkidle');
    return {
      message: await message.textContent(),
      signin_visible: await page.locator('#signin').isVisible(),
      app_visible: await page.locator('#app').isVisible(),
      api_calls: apiCalls.filter((c) => c.phase === 'wrong_token'),
    };
  },

  /** Opens the one-time link in a new tab and waits for the live stream. */
  async open_link({ url }) {
    phase = 'signed_in';
    const p = await newPage();
    await p.goto(url);
    await live().waitFor();
    await p.locator('#signin').waitFor({ state: 'hidden' });
    await p.locator('#agents tr[data-agent]').first().waitFor();
    await p.locator('#audit-status[data-kind]').waitFor();
    await p.locator('#policy-status .kv').waitFor();
    await shot('1-signed-in.png');
    return {
      url: p.url(),
      signin_visible: await p.locator('#signin').isVisible(),
      stream: await p.locator('#stream-status').textContent(),
      scope: await p.locator('#scope').textContent(),
      instance: await p.locator('#instance-id').textContent(),
      audit: await p.locator('#audit-status').textContent(),
      policy: await p.locator('#policy-status').textContent(),
      cookies: (await context.cookies()).length,
      local_storage: await p.evaluate(() => localStorage.length),
      session_storage: await p.evaluate(() => Object.keys(sessionStorage)),
    };
  },

  /** Waits for a decision row of `action` (and `effect`), with its latency once it came. */
  async wait_decision({ action, effect, screenshot }) {
    const sel = `#decisions tr[data-action="${action}"]${effect ? `[data-effect="${effect}"]` : ''}`;
    const row = page.locator(sel).first();
    await row.waitFor();
    if (effect !== 'deny') await row.locator('td.latency', { hasText: 'ms' }).waitFor();
    if (screenshot) await shot(screenshot);
    return {
      seq: Number(await row.getAttribute('data-seq')),
      effect: await row.getAttribute('data-effect'),
      policy_effect: await row.getAttribute('data-policy-effect'),
      instance: await row.getAttribute('data-instance'),
      cells: await row.locator('td').allTextContents(),
    };
  },

  /** Switches the live decisions to the whole fleet (or back) and waits for the stream. */
  async fleet_scope({ on }) {
    phase = 'fleet_scope';
    await page.locator('#fleet-toggle').waitFor({ state: 'visible' });
    const toggle = page.locator('#fleet-scope');
    if (on) await toggle.check();
    else await toggle.uncheck();
    await live().waitFor();
    return { decisions: await page.locator('#decisions tr').count() };
  },

  /** Opens a decision row's audit record with the keyboard (focus + Enter). */
  async open_record({ seq }) {
    const row = page.locator(`#decisions tr[data-seq="${seq}"]`);
    await row.focus();
    await page.keyboard.press('Enter');
    const dialog = page.locator('#record-dialog[open]');
    await dialog.waitFor();
    await dialog.locator('#record-meta dd').first().waitFor();
    const result = {
      json: JSON.parse(await page.locator('#record-json').textContent()),
      meta: await page.locator('#record-meta dd').allTextContents(),
    };
    await page.keyboard.press('Escape');
    await page.locator('#record-dialog').waitFor({ state: 'hidden' });
    return result;
  },

  /** Waits for a pending consent with its three buttons; returns its id and text. */
  async wait_consent({ action }) {
    const card = page.locator('#consents .consent', { hasText: action }).first();
    await card.waitFor();
    const id = await card.getAttribute('data-consent-id');
    for (const a of ['approve', 'approve-10m', 'deny']) {
      await card.locator(`button[data-action="${a}"][data-consent="${id}"]`).waitFor();
    }
    // No focus ring from the previous step in the picture.
    await page.evaluate(() => document.activeElement?.blur());
    await shot('3-consent.png');
    return { id, text: await card.textContent() };
  },

  /** Clicks Approve on consent `id`; waits until it left the pending list. */
  async approve({ id }) {
    await page.click(`#consents button[data-action="approve"][data-consent="${id}"]`);
    await page.locator(`#consents [data-consent-id="${id}"]`).waitFor({ state: 'detached' });
    return {};
  },

  /** Sets the decision filters; returns the actions of the rows still shown. */
  async filter({ text = '', effect = 'all', agent = '' }) {
    await page.fill('#filter-text', text);
    await page.selectOption('#filter-effect', effect);
    await page.selectOption('#filter-agent', agent);
    return page.locator('#decisions tr:not([hidden])').evaluateAll((rows) => rows.map((r) => r.dataset.action));
  },

  /** Replays recorded traffic against `rego` in the policy panel; returns the summary line
   *  and the transitions shown. */
  async replay({ rego }) {
    await page.locator('details.replay summary').click();
    await page.fill('#replay-rego', rego);
    await page.click('#replay-form button[type=submit]');
    const summary = page.locator('#replay-result > p:not(.status)');
    await summary.waitFor();
    const rows = await page.locator('#replay-result tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [...tr.children].slice(0, 3).map((td) => td.textContent)));
    await shot('5-replay.png');
    return { summary: await summary.textContent(), rows };
  },

  async screenshot({ name }) {
    await shot(name);
    return {};
  },

  /** PANIC for one agent through the dialog (Escape first closes it untouched). */
  async panic({ agent, reason }) {
    await page.click('#panic-button');
    const dialog = page.locator('#panic-dialog');
    await page.locator('#panic-dialog[open]').waitFor();
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });

    await page.click('#panic-button');
    await page.locator('#panic-dialog[open]').waitFor();
    await page.check('#panic-all');
    const allLabel = await page.locator('#panic-confirm').textContent();
    await page.check('#panic-one');
    await page.selectOption('#panic-agent', agent);
    await page.fill('#panic-reason', reason);
    const label = await page.locator('#panic-confirm').textContent();
    await page.click('#panic-confirm');
    const result = page.locator('#panic-result');
    await result.waitFor({ state: 'visible' });
    await shot('5-panic.png');
    return { label, all_label: allLabel, result: await result.textContent() };
  },

  /** Closes the PANIC report and waits for the agent to show as revoked. */
  async wait_revoked({ agent }) {
    await page.click('#panic-close');
    await page.locator('#panic-dialog').waitFor({ state: 'hidden' });
    await page.locator(`#agents tr[data-agent="${agent}"][data-status="revoked"]`).waitFor();
    await live().waitFor();
    await shot('6-after-panic.png');
    return {};
  },

  /** Console/page errors no step expected, and every API call seen. */
  async errors() {
    return { unexpected: errors.filter((e) => !expected(e)), all: errors, api_calls: apiCalls };
  },
};

function reply(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

process.stdout.write('READY\n');
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    reply({ n: null, ok: false, error: `bad command line: ${e.message}` });
    continue;
  }
  const fn = commands[msg.cmd];
  if (!fn) {
    reply({ n: msg.n, ok: false, error: `unknown command ${msg.cmd}` });
    continue;
  }
  try {
    reply({ n: msg.n, ok: true, result: await fn(msg.args ?? {}) });
  } catch (e) {
    // A picture of the failure, beside the step screenshots.
    if (page) await page.screenshot({ path: join(SHOTS, `failed-${msg.cmd}.png`) }).catch(() => {});
    const seen = errors.filter((x) => !expected(x)).map((x) => `[${x.phase}] ${x.text}`);
    const extra = seen.length ? `\nbrowser console/page errors so far:\n${seen.join('\n')}` : '';
    reply({ n: msg.n, ok: false, error: `${e?.stack ?? e}${extra}` });
  }
}
await browser.close();
