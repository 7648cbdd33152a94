// An MCP client built with the official TypeScript SDK (Client + StreamableHTTPClientTransport),
// sending its HTTP through a proxy the way an agent would: undici's ProxyAgent (the proxy URL
// carries the agent's token, sent as Proxy-Authorization on CONNECT) trusting --ca for the
// tunnelled TLS, handed to the transport as its `fetch`.
// Usage: node mcp_client.mjs URL [--proxy PROXY_URL] --ca CA.pem [--header NAME:VALUE ...]
//        [--timeout-ms MS] COMMAND
//   COMMAND: list | call TOOL JSON_ARGS | read URI | prompt NAME [JSON_ARGS] | script FILE
//   Without --proxy the client connects directly (still trusting only --ca).
//   A script is a JSON list of steps run in one session:
//     {"op": "list"} | {"op": "call", "tool": T, "args": {...}} | {"op": "read", "uri": U}
//     | {"op": "prompt", "name": N, "args": {...}} | {"op": "ping"}
//     | {"op": "wait", "method": M, "timeout_ms": MS}  (until a notification M has arrived)
// Prints one JSON object: {client, connect, steps: [{op, ok, result | error}], notifications:
// [{step, at_ms, method, params}], http: [{method, url, headers, status, response_headers}],
// protocol_version, session_id, terminate, transport_errors}. A failed step's error is {kind,
// message, code, data, http_status} (what is known). The exit status is 0 whenever the object
// could be printed.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
} from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { Agent, fetch as undiciFetch, ProxyAgent } from 'undici';

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    proxy: { type: 'string' },
    ca: { type: 'string' },
    header: { type: 'string', multiple: true, default: [] },
    'timeout-ms': { type: 'string', default: '60000' },
    // The older HTTP+SSE transport: GET URL opens the stream, POSTs go where it says.
    legacy: { type: 'boolean', default: false },
  },
});
const [url, command, ...rest] = positionals;
const usage = 'usage: mcp_client.mjs URL [--proxy P] --ca F [--header K:V] list|call|read|prompt|script ...';
if (!url || !command || !opt.ca) {
  process.stderr.write(usage + '\n');
  process.exit(2);
}

function stepsFromCommand() {
  switch (command) {
    case 'list':
      return [{ op: 'list' }];
    case 'call':
      return [{ op: 'call', tool: rest[0], args: JSON.parse(rest[1] ?? '{}') }];
    case 'read':
      return [{ op: 'read', uri: rest[0] }];
    case 'prompt':
      return [{ op: 'prompt', name: rest[0], args: JSON.parse(rest[1] ?? '{}') }];
    case 'script':
      return JSON.parse(readFileSync(rest[0], 'utf8'));
    default:
      process.stderr.write(usage + '\n');
      process.exit(2);
  }
}
const steps = stepsFromCommand();
const timeout = Number(opt['timeout-ms']);

const ca = readFileSync(opt.ca);
const dispatcher = opt.proxy
  ? new ProxyAgent({ uri: opt.proxy, requestTls: { ca }, proxyTls: { ca } })
  : new Agent({ connect: { ca } });

// Every HTTP exchange the transport makes, as it made it.
const http = [];
async function proxiedFetch(input, init = {}) {
  const headers = new Headers(init.headers);
  const entry = {
    method: init.method ?? 'GET',
    url: String(input),
    headers: Object.fromEntries(headers),
    status: null,
  };
  http.push(entry);
  try {
    const res = await undiciFetch(input, { ...init, headers, dispatcher });
    entry.status = res.status;
    entry.response_headers = Object.fromEntries(res.headers);
    return res;
  } catch (e) {
    entry.error = String(e.cause?.message ?? e.message);
    throw e;
  }
}

const extraHeaders = Object.fromEntries(
  opt.header.map((h) => {
    const i = h.indexOf(':');
    return [h.slice(0, i).trim(), h.slice(i + 1).trim()];
  }),
);
const transport = opt.legacy
  ? new SSEClientTransport(new URL(url), {
      fetch: proxiedFetch,
      eventSourceInit: { fetch: proxiedFetch },
      requestInit: { headers: extraHeaders },
    })
  : new StreamableHTTPClientTransport(new URL(url), {
  fetch: proxiedFetch,
  requestInit: { headers: extraHeaders },
  // One failed GET stream must not keep the process alive retrying.
  reconnectionOptions: {
    maxRetries: 0,
    initialReconnectionDelay: 1000,
    maxReconnectionDelay: 1000,
    reconnectionDelayGrowFactor: 1,
  },
});
const transportErrors = [];
// Tagged with the step running (null once the steps are done: the GET stream ending after
// the session's DELETE is reported too).
transport.onerror = (e) => transportErrors.push({ step: currentStep, ...describeError(e) });

const client = new Client({ name: 'agentgate-test-node-client', version: '1.0.0' }, { capabilities: {} });
// Every notification in arrival order, tagged with the step running when it came and the
// time it came (ms since start), so a test can tell a trickle from a burst.
const notifications = [];
let currentStep = null;
const waiters = [];
function noteNotification(n) {
  const at_ms = Math.round(performance.now());
  notifications.push({ step: currentStep, at_ms, method: n.method, params: n.params });
  for (const w of waiters.splice(0)) {
    if (w.method === n.method) w.resolve();
    else waiters.push(w);
  }
}
client.fallbackNotificationHandler = async (n) => noteNotification(n);

function describeError(e) {
  const out = { kind: e?.constructor?.name ?? typeof e, message: String(e?.message ?? e) };
  if (e instanceof McpError) {
    out.code = e.code;
    if (e.data !== undefined) out.data = e.data;
  } else if (e instanceof StreamableHTTPError) {
    out.http_status = e.code;
  } else if (e?.cause) {
    out.cause = String(e.cause.message ?? e.cause);
  }
  // The SDK reports an HTTP refusal as "Error POSTing to endpoint: <body>"; name the status.
  const last = http.findLast((h) => h.status !== null && h.status >= 400);
  if (out.http_status === undefined && last && out.message.includes('POSTing')) out.http_status = last.status;
  return out;
}

async function runStep(step) {
  const opts = { timeout };
  switch (step.op) {
    case 'list': {
      const r = await client.listTools(undefined, opts);
      return r;
    }
    case 'call':
      return client.callTool({ name: step.tool, arguments: step.args ?? {} }, undefined, {
        ...opts,
        resetTimeoutOnProgress: true,
        onprogress: (p) => noteNotification({ method: 'notifications/progress', params: p }),
      });
    case 'read':
      return client.readResource({ uri: step.uri }, opts);
    case 'prompt':
      return client.getPrompt({ name: step.name, arguments: step.args ?? {} }, opts);
    case 'ping':
      return client.ping(opts);
    case 'wait': {
      if (notifications.some((n) => n.method === step.method)) return { arrived: true };
      const ms = step.timeout_ms ?? 10000;
      let timer;
      const arrived = await Promise.race([
        new Promise((resolve) => waiters.push({ method: step.method, resolve: () => resolve(true) })),
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(false), ms);
        }),
      ]);
      clearTimeout(timer);
      if (!arrived) throw new Error(`no ${step.method} within ${ms} ms`);
      return { arrived: true };
    }
    default:
      throw new Error(`unknown step op ${JSON.stringify(step.op)}`);
  }
}

const out = { client: 'node', sdk: '@modelcontextprotocol/sdk', steps: [], notifications, http };
try {
  await client.connect(transport, { timeout });
  out.connect = { ok: true, server: client.getServerVersion() ?? null };
} catch (e) {
  out.connect = { ok: false, error: describeError(e) };
}
for (const [i, step] of steps.entries()) {
  currentStep = i;
  if (!out.connect.ok) {
    out.steps.push({ op: step.op, ok: false, error: { kind: 'NotConnected', message: 'connect failed' } });
    continue;
  }
  try {
    out.steps.push({ op: step.op, ok: true, result: await runStep(step) });
  } catch (e) {
    out.steps.push({ op: step.op, ok: false, error: describeError(e) });
  }
}
currentStep = null;
out.protocol_version = transport.protocolVersion ?? null;
out.session_id = transport.sessionId ?? null;
// Ends the session: DELETE with Mcp-Session-Id, as a well-behaved client does.
if (out.connect.ok) {
  try {
    await transport.terminateSession();
    out.terminate = { ok: true };
  } catch (e) {
    out.terminate = { ok: false, error: describeError(e) };
  }
}
await client.close().catch(() => {});
out.transport_errors = transportErrors;
dispatcher.destroy().catch(() => {});
// Exit once the (possibly large) line has been handed to stdout.
process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
