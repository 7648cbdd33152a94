// A real OAuth 2.0 / OpenID Connect provider (the `oidc-provider` npm package) for the
// end-to-end tests: the token endpoint the proxy's vault refreshes and exchanges
// credentials at, and the revocation endpoint PANIC calls.
//
//   node tests/support/oidc_provider.mjs [--access-ttl SECONDS]
//        [--ciba [--ciba-delivery poll|ping] [--ciba-notify URL] [--ciba-interval SECONDS]
//                [--ciba-users alice,bob,...]]
//
// Listens on 127.0.0.1:<free port> and prints one line `READY http://127.0.0.1:<port>`
// (the issuer). Exits when stdin closes or on SIGTERM.
//
// Endpoints (oidc-provider's own): POST /token (refresh_token, authorization_code and
// the Auth0 federated-connection token exchange), POST /token/revocation (RFC 7009).
// Test hooks (no auth, JSON): POST /test/refresh-token, GET /test/stats,
// POST /test/active, POST /test/fault — see `testHooks` below.
//
// With --ciba: OpenID CIBA (oidc-provider's features.ciba, poll and ping delivery) —
// discovery at /.well-known/openid-configuration, the backchannel authentication
// endpoint at POST /bc-authorize (Auth0's path), polling at POST /token with
// grant_type urn:openid:params:grant-type:ciba. Clients `agentgate-ciba`
// (client_secret_basic) and `agentgate-ciba-post` (client_secret_post), secret
// `agentgate-secret`. Requests are approved or denied through oidc-provider's own
// provider.backchannelResult() by the hooks under /test/ciba/ (see `cibaHooks`).
// Rich Authorization Requests are on, with one type `agentgate_action` (any fields).

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

// oidc-provider lives in tests/clients/node_modules (installed by scripts/test), not
// next to this file: resolve it from there so the script runs from any directory.
const requireFromClients = createRequire(new URL('../clients/package.json', import.meta.url));
const { default: Provider, errors } = await import(
  pathToFileURL(requireFromClients.resolve('oidc-provider')).href
);

// oidc-provider prints NOTICEs with console.info; stdout carries only READY.
console.info = console.error;

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const ACCESS_TTL = Number(flag('--access-ttl', '3600'));
if (!Number.isInteger(ACCESS_TTL) || ACCESS_TTL <= 0) {
  throw new Error(`--access-ttl wants a positive integer, got ${flag('--access-ttl')}`);
}

const CIBA = args.includes('--ciba');
const CIBA_DELIVERY = flag('--ciba-delivery', 'poll');
if (!['poll', 'ping'].includes(CIBA_DELIVERY)) {
  throw new Error(`--ciba-delivery wants poll or ping, got ${CIBA_DELIVERY}`);
}
const CIBA_NOTIFY = flag('--ciba-notify', null);
// The `interval` added to every backchannel authentication response (oidc-provider
// itself sends none, which means 5 s per CIBA §7.3) and enforced: a poll for the same
// auth_req_id sooner than that after the previous one is answered slow_down, and
// raises that request's interval by 5 s (CIBA §11). 0 = stock oidc-provider: no
// `interval` in the response, no slow_down ever.
const CIBA_INTERVAL = Number(flag('--ciba-interval', '1'));
if (!Number.isInteger(CIBA_INTERVAL) || CIBA_INTERVAL < 0) {
  throw new Error(`--ciba-interval wants a non-negative integer, got ${flag('--ciba-interval')}`);
}
// Polls this much early still count as on time (timer granularity between processes).
const CIBA_INTERVAL_SLACK_MS = 200;
// The end-users CIBA knows; a login_hint naming anyone else is unknown_user_id.
const CIBA_USERS = new Set(
  flag('--ciba-users', 'alice,bob,carol,auth0|alice,auth0|bob,auth0|carol').split(',').filter(Boolean),
);

const GRANT_REFRESH = 'refresh_token';
const GRANT_CIBA = 'urn:openid:params:grant-type:ciba';
const CIBA_CLIENTS = ['agentgate-ciba', 'agentgate-ciba-post'];
// Auth0's limits: binding_message ≤ 64 characters of [A-Za-z0-9+-_.,:#].
const BINDING_MESSAGE = /^[A-Za-z0-9+\-_.,:#]{1,64}$/;
// CIBA requested_expiry: honoured up to Auth0's maximum; Auth0's default without it.
const CIBA_MAX_EXPIRY = 259200;
const CIBA_DEFAULT_EXPIRY = 300;
// The resource server of CIBA requests that send no `audience`.
const CIBA_RESOURCE = 'urn:agentgate:consent';
const GRANT_EXCHANGE =
  'urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token';
const TOKEN_TYPE_REFRESH = 'urn:ietf:params:oauth:token-type:refresh_token';
const TOKEN_TYPE_FEDERATED = 'http://auth0.com/oauth/token-type/federated-connection-access-token';
const CLIENT_SECRET = 'agentgate-secret';

// Everything the tests can observe (GET /test/stats), plus state behind the hooks.
const stats = {
  refresh_grants: 0, // successful refresh_token grants
  refresh_failures: 0, // refresh_token grants the provider refused
  exchanges: 0, // successful federated exchanges
  exchange_requests: [], // every exchange reaching the grant handler: {connection, scope, login_hint, ok}
  issued_access_tokens: [], // access_token of every 200 from /token, in order
  revocations: [], // every POST /token/revocation: {token, token_type_hint}
  token_requests: 0, // every POST /token, faults included
};
const federated = new Map(); // fed_ token -> {revoked}
// How POST /token misbehaves; `count` = CIBA polls left for "slow_down".
let fault = { mode: null, delay_ms: 0, count: 0 };

// CIBA: every backchannel authentication request the provider accepted, by auth_req_id
// (see `cibaView` for what GET /test/ciba/requests shows), and every ping it sent.
const cibaRequests = new Map();
const cibaPings = []; // {url, authorization, body, status | error}

const hex = (n) => randomBytes(n).toString('hex');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const client = (client_id, token_endpoint_auth_method) => ({
  client_id,
  client_secret: CLIENT_SECRET,
  token_endpoint_auth_method,
  grant_types: [GRANT_REFRESH, 'authorization_code', GRANT_EXCHANGE],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
});

// Registered as poll clients: oidc-provider's client schema demands an https
// backchannel_client_notification_endpoint, while the proxy's is plain http on loopback.
// The delivery mode and endpoint are set on the live Client objects instead
// (`setCibaDelivery`, at start and by POST /test/ciba/client); oidc-provider reads both
// from there for every request and ping.
const cibaClient = (client_id, token_endpoint_auth_method) => ({
  client_id,
  client_secret: CLIENT_SECRET,
  token_endpoint_auth_method,
  grant_types: [GRANT_CIBA],
  response_types: [],
  redirect_uris: [],
  backchannel_token_delivery_mode: 'poll',
  authorization_details_types: ['agentgate_action'],
});

// features.ciba callbacks.
const ciba = {
  enabled: true,
  deliveryModes: ['poll', 'ping'],
  // A plain account id, or Auth0's {"format":"iss_sub","iss":…,"sub":…} (iss not checked).
  async processLoginHint(ctx, loginHint) {
    let sub = loginHint;
    if (loginHint.trimStart().startsWith('{')) {
      let hint;
      try {
        hint = JSON.parse(loginHint);
      } catch {
        throw new errors.InvalidRequest('login_hint is not valid JSON');
      }
      if (hint?.format !== 'iss_sub' || typeof hint.sub !== 'string') {
        throw new errors.InvalidRequest('login_hint JSON must be {"format":"iss_sub","iss":…,"sub":…}');
      }
      sub = hint.sub;
    }
    // undefined -> oidc-provider answers unknown_user_id.
    return CIBA_USERS.has(sub) ? sub : undefined;
  },
  async processLoginHintToken() {
    throw new errors.InvalidRequest('login_hint_token is not supported');
  },
  async verifyUserCode() {}, // user_code is not used (backchannel_user_code_parameter off)
  async validateRequestContext() {},
  // Required, and Auth0's rules (stricter than oidc-provider's default 1-20 characters).
  async validateBindingMessage(ctx, bindingMessage) {
    if (bindingMessage === undefined) {
      throw new errors.InvalidBindingMessage('binding_message is required');
    }
    if (!BINDING_MESSAGE.test(bindingMessage)) {
      throw new errors.InvalidBindingMessage(
        'binding_message must be 1-64 characters of A-Z a-z 0-9 + - _ . , : #',
      );
    }
  },
  // "Sends the push notification": records the request for the /test/ciba hooks.
  async triggerAuthenticationDevice(ctx, request, account) {
    const { params } = ctx.oidc;
    let details = params.authorization_details ?? null;
    if (typeof details === 'string') {
      try {
        details = JSON.parse(details);
      } catch {}
    }
    const now = Date.now();
    cibaRequests.set(request.jti, {
      auth_req_id: request.jti,
      client_id: request.clientId,
      account: account.accountId,
      login_hint: params.login_hint ?? null,
      binding_message: params.binding_message ?? null,
      requested_expiry: params.requested_expiry ?? null,
      expires_in: request.expiration,
      scope: request.scope ?? null,
      audience: params.audience ?? null,
      authorization_details: details,
      client_notification_token: params.client_notification_token ?? null,
      client_auth: ctx.get('authorization') ? 'client_secret_basic' : 'client_secret_post',
      status: 'pending', // -> approved | denied (expired: shown by cibaView)
      created_ms: now,
      expires_ms: now + request.expiration * 1000,
      interval: CIBA_INTERVAL,
      polls: 0,
      poll_at_ms: [], // ms since the request, of every token endpoint call for it
      answers: [], // per poll: "tokens" or the error code
      slow_downs: 0,
      last_poll_ms: null,
      pings: [], // {status | error} of every ping sent for it
      answered_by_hook: null,
    });
  },
};

const cibaView = (r) => ({
  ...r,
  status: r.status === 'pending' && Date.now() >= r.expires_ms ? 'expired' : r.status,
  last_poll_ms: undefined,
});

// oidc-provider's fetch (used for pings only) with its SSRF guard removed — the
// notification endpoints here are on 127.0.0.1 — and every ping recorded.
async function cibaFetch(url, options) {
  delete options.dispatcher;
  const ping = {
    url,
    authorization: options.headers.get('authorization'),
    body: typeof options.body === 'string' ? options.body : null,
  };
  cibaPings.push(ping);
  let id = null;
  try {
    id = JSON.parse(ping.body).auth_req_id;
  } catch {}
  const record = cibaRequests.get(id);
  try {
    const response = await globalThis.fetch(url, options);
    ping.status = response.status;
    record?.pings.push({ status: response.status });
    return response;
  } catch (err) {
    ping.error = String(err?.cause?.message ?? err?.message ?? err);
    record?.pings.push({ error: ping.error });
    throw err;
  }
}

const provider = new Provider(issuer, {
  clients: [
    client('agentgate', 'client_secret_basic'),
    client('agentgate-post', 'client_secret_post'),
    ...(CIBA ? [cibaClient(CIBA_CLIENTS[0], 'client_secret_basic'), cibaClient(CIBA_CLIENTS[1], 'client_secret_post')] : []),
  ],
  // Any subject is a valid account (the tests mint tokens for "alice", "bob", ...);
  // CIBA's login_hint is narrower (CIBA_USERS).
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  // Each refresh consumes the presented refresh token and returns a new one; presenting a
  // consumed one again is invalid_grant and revokes the whole grant (reuse detection).
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ACCESS_TTL,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    BackchannelAuthenticationRequest: (ctx) => {
      const requested = Number(ctx?.oidc?.params?.requested_expiry);
      return requested > 0 ? Math.min(CIBA_MAX_EXPIRY, requested) : CIBA_DEFAULT_EXPIRY;
    },
  },
  features: {
    revocation: { enabled: true },
    devInteractions: { enabled: false },
    ...(CIBA && {
      ciba,
      richAuthorizationRequests: {
        enabled: true,
        types: { agentgate_action: { validate() {} } }, // any fields
        // The approved details are the requested ones; they land in the access token
        // and the token response.
        authorizationDetailsForGrantSource: (ctx, source) => source.rar,
        authorizationDetailsForAccessToken: (ctx, token, source) => source?.rar,
        authorizationDetailsForIntrospection: (ctx, token) => token.rar,
      },
      // oidc-provider's RAR needs a resource server: CIBA requests get one (the Auth0
      // `audience` when sent), nothing else does.
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx) => {
          const { params, route } = ctx.oidc;
          const isCiba = route === 'backchannel_authentication' || params?.grant_type === GRANT_CIBA;
          return isCiba ? (params.audience || CIBA_RESOURCE) : undefined;
        },
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'openid',
          accessTokenFormat: 'opaque',
          accessTokenTTL: ACCESS_TTL,
        }),
      },
    }),
  },
  ...(CIBA && {
    extraParams: ['audience'], // Auth0's; kept so it is recorded
    fetch: cibaFetch,
  }),
  // The defaults, spelled out because the tests configure these URLs; Auth0's path for CIBA.
  routes: { token: '/token', revocation: '/token/revocation', backchannel_authentication: '/bc-authorize' },
});

// Delivery mode and notification endpoint of the CIBA clients (`ids`, default both).
async function setCibaDelivery(delivery, endpoint, ids = CIBA_CLIENTS) {
  if (!['poll', 'ping'].includes(delivery)) throw new Error(`unknown delivery ${JSON.stringify(delivery)}`);
  if (endpoint != null) new URL(endpoint); // throws on garbage
  for (const id of ids) {
    const c = await provider.Client.find(id);
    if (!c) throw new Error(`unknown CIBA client ${id}`);
    c.backchannelTokenDeliveryMode = delivery;
    if (endpoint !== undefined) c.backchannelClientNotificationEndpoint = endpoint ?? undefined;
  }
  const c = await provider.Client.find(ids[0]);
  return { delivery, notification_endpoint: c.backchannelClientNotificationEndpoint ?? null };
}
if (CIBA) await setCibaDelivery(CIBA_DELIVERY, CIBA_NOTIFY);

// Auth0 Token Vault: trade a user's Auth0 refresh token for the access token Auth0 holds
// for one of the user's federated connections. The refresh token is NOT consumed or
// rotated (Auth0 requires rotation off for this flow).
provider.registerGrantType(
  GRANT_EXCHANGE,
  async (ctx) => {
    const { params, client } = ctx.oidc;
    const request = {
      connection: params.connection ?? null,
      scope: params.scope ?? null,
      login_hint: params.login_hint ?? null,
      ok: false,
    };
    stats.exchange_requests.push(request);
    if (params.subject_token_type !== TOKEN_TYPE_REFRESH) {
      throw new errors.InvalidRequest(`subject_token_type must be ${TOKEN_TYPE_REFRESH}`);
    }
    if (params.requested_token_type !== TOKEN_TYPE_FEDERATED) {
      throw new errors.InvalidRequest(`requested_token_type must be ${TOKEN_TYPE_FEDERATED}`);
    }
    if (!params.connection) throw new errors.InvalidRequest('missing required parameter connection');
    if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter subject_token');

    const refresh = await provider.RefreshToken.find(params.subject_token);
    const live =
      refresh?.isValid &&
      refresh.clientId === client.clientId &&
      (await provider.Grant.find(refresh.grantId));
    if (!live) {
      const err = new errors.InvalidGrant('subject_token is unknown, expired, consumed or revoked');
      err.status = err.statusCode = 401; // what Auth0 answers here
      throw err;
    }

    const access_token = `fed_${params.connection}_${hex(16)}`;
    federated.set(access_token, { revoked: false });
    stats.exchanges += 1;
    request.ok = true;
    ctx.body = {
      access_token,
      expires_in: ACCESS_TTL,
      scope: params.scope ?? '',
      issued_token_type: TOKEN_TYPE_FEDERATED,
      token_type: 'Bearer',
    };
  },
  ['subject_token', 'subject_token_type', 'requested_token_type', 'connection', 'login_hint', 'scope'],
);

async function readJson(ctx) {
  let text = '';
  for await (const chunk of ctx.req) text += chunk;
  return text ? JSON.parse(text) : {};
}

async function readText(ctx) {
  let text = '';
  for await (const chunk of ctx.req) text += chunk;
  return text;
}

// Whether a token of any kind this provider issued is still usable.
async function isActive(token) {
  if (federated.has(token)) return !federated.get(token).revoked;
  const access = await provider.AccessToken.find(token);
  if (access) return !access.isExpired;
  const refresh = await provider.RefreshToken.find(token);
  return Boolean(refresh?.isValid && (await provider.Grant.find(refresh.grantId)));
}

// A hook failure with its own status (hooks fail with 400 otherwise).
const hookError = (status, error, extra = {}) =>
  Object.assign(new Error(error), { status, body: { error, ...extra } });

// The CIBA request a hook body names: {"auth_req_id"}, or {"binding_code"} = the part of
// binding_message before the first ':' (the pending one if several match).
function findCibaRecord(body) {
  if (body.auth_req_id) return cibaRequests.get(body.auth_req_id);
  if (body.binding_code) {
    const matches = [...cibaRequests.values()].filter(
      (r) => (r.binding_message ?? '').split(':')[0] === body.binding_code,
    );
    return matches.findLast((r) => cibaView(r).status === 'pending') ?? matches.at(-1);
  }
  throw new Error('auth_req_id or binding_code required');
}

// The end-user's answer on the authentication device, given to oidc-provider through
// its own API: provider.backchannelResult(request, Grant | AccessDenied). In ping mode
// oidc-provider then POSTs the notification; a failed ping is reported as ping_error
// (the answer itself is stored either way).
async function answerCiba(body, approve) {
  const record = findCibaRecord(body);
  if (!record) throw hookError(404, 'no such CIBA request');
  const { status } = cibaView(record);
  if (status !== 'pending') {
    throw hookError(409, status === 'expired' ? 'expired' : 'already_answered', { status });
  }
  const request = await provider.BackchannelAuthenticationRequest.find(record.auth_req_id, {
    ignoreExpiration: true,
  });
  if (!request) throw hookError(404, 'CIBA request no longer stored');

  let result;
  const options = {};
  if (approve) {
    result = new provider.Grant({ accountId: request.accountId, clientId: request.clientId });
    if (request.scope) {
      result.addOIDCScope(request.scope);
      for (const resource of [request.resource ?? []].flat()) result.addResourceScope(resource, request.scope);
    }
    if (Array.isArray(record.authorization_details)) {
      for (const detail of record.authorization_details) result.addRar(detail);
      options.rar = record.authorization_details;
    }
    await result.save();
  } else {
    result = new errors.AccessDenied(body.reason ?? 'the end-user denied the request');
  }

  const client = await provider.Client.find(request.clientId);
  const ping = client?.backchannelTokenDeliveryMode === 'ping';
  record.status = approve ? 'approved' : 'denied';
  record.answered_by_hook = body.auth_req_id ? 'auth_req_id' : 'binding_code';
  const reply = { ok: true, auth_req_id: record.auth_req_id, status: record.status };
  try {
    await provider.backchannelResult(request, result, options);
  } catch (err) {
    if (!ping) {
      record.status = 'pending';
      throw err;
    }
    reply.ping_error = String(err?.cause?.message ?? err?.message ?? err);
  }
  return reply;
}

const testHooks = {
  // {"account", "scope", "client_id"} -> {"refresh_token"}: what a finished authorization
  // code flow leaves behind (a Grant plus a RefreshToken bound to it), minted directly.
  'POST /test/refresh-token': async (body) => {
    const account = body.account ?? 'alice';
    const scope = body.scope ?? 'openid offline_access';
    const client = await provider.Client.find(body.client_id ?? 'agentgate');
    if (!client) throw new Error(`unknown client ${body.client_id}`);
    const grant = new provider.Grant({ accountId: account, clientId: client.clientId });
    grant.addOIDCScope(scope);
    const grantId = await grant.save();
    const refresh = new provider.RefreshToken({
      accountId: account,
      client,
      grantId,
      scope,
      gty: 'authorization_code',
    });
    return { refresh_token: await refresh.save() };
  },
  'GET /test/stats': async () => stats,
  'POST /test/active': async (body) => ({ active: await isActive(body.token) }),
  // {"mode": null|"down"|"slow"|"garbage"|"expired"|"slow_down", "delay_ms", "count"}:
  // how POST /token behaves. "slow_down" answers the next `count` (default 1) CIBA polls
  // with 400 {"error":"slow_down"} (each raising that request's interval by 5 s, as a
  // real slow_down does), other grants normally; it ends by itself.
  'POST /test/fault': async (body) => {
    if (![null, undefined, 'down', 'slow', 'garbage', 'expired', 'slow_down'].includes(body.mode)) {
      throw new Error(`unknown fault mode ${JSON.stringify(body.mode)}`);
    }
    fault = { mode: body.mode ?? null, delay_ms: body.delay_ms ?? 0, count: body.count ?? 1 };
    return fault;
  },
};

// Only with --ciba.
const cibaHooks = {
  // [{auth_req_id, client_id, account, login_hint, binding_message, requested_expiry,
  //   expires_in, scope, audience, authorization_details, client_notification_token,
  //   status: pending|approved|denied|expired, polls, poll_at_ms, answers, slow_downs,
  //   interval, pings, created_ms, expires_ms, answered_by_hook}] in request order.
  'GET /test/ciba/requests': async () => [...cibaRequests.values()].map(cibaView),
  // [{url, authorization, body, status | error}]: every ping oidc-provider sent.
  'GET /test/ciba/pings': async () => cibaPings,
  // {"auth_req_id"} | {"binding_code"} -> {ok, auth_req_id, status, ping_error?}; 404 / 409.
  'POST /test/ciba/approve': async (body) => answerCiba(body, true),
  // Same, plus optional "reason" (the access_denied error_description).
  'POST /test/ciba/deny': async (body) => answerCiba(body, false),
  // {"delivery": "poll"|"ping", "notification_endpoint": URL|null, "client_id"?}: changes
  // the CIBA clients (both unless client_id) from now on.
  'POST /test/ciba/client': async (body) => {
    const current = await provider.Client.find(body.client_id ?? CIBA_CLIENTS[0]);
    return setCibaDelivery(
      body.delivery ?? current?.backchannelTokenDeliveryMode ?? 'poll',
      body.notification_endpoint,
      body.client_id ? [body.client_id] : undefined,
    );
  },
};
if (CIBA) Object.assign(testHooks, cibaHooks);

// Reads a form body before oidc-provider does, leaving it in ctx.req.body for it.
async function preRead(ctx) {
  const text = await readText(ctx);
  ctx.req.body = text;
  return new URLSearchParams(text);
}

// The client_id a request names (Basic header, else the form).
function requestClientId(ctx, form) {
  const header = ctx.get('authorization');
  if (/^basic /i.test(header)) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    try {
      return decodeURIComponent(decoded.split(':')[0].replace(/\+/g, ' '));
    } catch {}
  }
  return form.get('client_id') ?? undefined;
}

// oidc-provider accepts client_secret_basic and client_secret_post interchangeably for
// any secret-based client; Auth0 holds an application to its registered method, and so
// do the CIBA clients here (answers 401 invalid_client and returns true otherwise).
function wrongClientAuth(ctx, form) {
  const header = ctx.get('authorization');
  const clientId = requestClientId(ctx, form);
  const registered = { 'agentgate-ciba': 'client_secret_basic', 'agentgate-ciba-post': 'client_secret_post' }[clientId];
  const used = header ? 'client_secret_basic' : form.has('client_secret') ? 'client_secret_post' : 'none';
  if (!registered || used === registered) return false;
  ctx.status = 401;
  ctx.set('cache-control', 'no-store');
  ctx.body = {
    error: 'invalid_client',
    error_description: `client ${clientId} authenticates with ${registered}, not ${used}`,
  };
  return true;
}

const cibaError = (ctx, error, error_description) => {
  ctx.status = 400;
  ctx.set('cache-control', 'no-store');
  ctx.body = { error, error_description };
};

// POST /token under a fault: answers itself (except "slow"), without touching the
// provider's storage. Returns true when the request is handled. `form` is the request
// body when already read (with --ciba), else read here when needed.
async function applyFault(ctx, form, record) {
  switch (fault.mode) {
    case 'down':
      ctx.status = 503;
      ctx.body = '';
      return true;
    case 'slow':
      await sleep(fault.delay_ms);
      return false;
    case 'garbage':
      ctx.status = 200;
      ctx.type = 'application/json';
      ctx.body = 'not json{';
      return true;
    case 'expired': {
      form ??= new URLSearchParams(await readText(ctx));
      ctx.status = 200;
      ctx.body = {
        access_token: `expired_${hex(16)}`,
        token_type: 'Bearer',
        expires_in: 0,
        scope: form.get('scope') ?? '',
        ...(form.get('grant_type') === GRANT_EXCHANGE && { issued_token_type: TOKEN_TYPE_FEDERATED }),
      };
      return true;
    }
    case 'slow_down': {
      if (form?.get('grant_type') !== GRANT_CIBA) return false;
      fault.count -= 1;
      if (fault.count <= 0) fault = { mode: null, delay_ms: 0, count: 0 };
      if (record) {
        record.slow_downs += 1;
        record.interval += 5;
      }
      cibaError(ctx, 'slow_down', 'you are polling too quickly and should back off at a reasonable rate');
      return true;
    }
    default:
      return false;
  }
}

// Runs in front of every provider route (provider.use inserts before them).
provider.use(async (ctx, next) => {
  const hook = testHooks[`${ctx.method} ${ctx.path}`];
  if (hook) {
    try {
      ctx.body = await hook(ctx.method === 'POST' ? await readJson(ctx) : {});
    } catch (err) {
      ctx.status = err?.status ?? 400;
      ctx.body = err?.body ?? { error: String(err?.message ?? err) };
    }
    return;
  }

  if (ctx.method === 'POST' && ctx.path === '/token') {
    stats.token_requests += 1;
    // With --ciba the body is read here (CIBA faults, the interval and the client
    // authentication check need it before the provider runs) and handed on:
    // oidc-provider parses ctx.req.body when the stream is already consumed.
    let form;
    let record;
    if (CIBA) {
      form = await preRead(ctx);
      if (wrongClientAuth(ctx, form)) return;
      // A poll counts for its request only when made by the request's client.
      if (form.get('grant_type') === GRANT_CIBA) {
        record = cibaRequests.get(form.get('auth_req_id'));
        if (record?.client_id !== requestClientId(ctx, form)) record = undefined;
      }
    }
    const now = Date.now();
    const previousPoll = record?.last_poll_ms;
    if (record) {
      record.polls += 1;
      record.poll_at_ms.push(now - record.created_ms);
      record.last_poll_ms = now;
    }
    const faultMode = fault.mode;
    const handled = await applyFault(ctx, form, record);
    if (!handled && CIBA_INTERVAL > 0 && record && previousPoll != null
        && now - previousPoll < record.interval * 1000 - CIBA_INTERVAL_SLACK_MS) {
      record.slow_downs += 1;
      record.interval += 5;
      cibaError(ctx, 'slow_down', `polled after ${now - previousPoll} ms; the interval is ${record.interval - 5} s`);
    } else if (!handled) {
      await next();
    }
    // ctx.oidc.params holds the parsed request once the provider got that far.
    const grantType = ctx.oidc?.params?.grant_type;
    if (record) {
      let answer = ctx.status === 200 ? 'tokens' : (ctx.body?.error ?? String(ctx.status));
      if (handled && faultMode !== 'slow_down') answer = `fault:${faultMode}`;
      record.answers.push(answer);
    }
    if (handled) return;
    if (ctx.status === 200 && ctx.body?.access_token) {
      stats.issued_access_tokens.push(ctx.body.access_token);
    }
    if (grantType === GRANT_REFRESH) {
      if (ctx.status === 200) stats.refresh_grants += 1;
      else stats.refresh_failures += 1;
    }
    return;
  }

  if (ctx.method === 'POST' && ctx.path === '/token/revocation') {
    await next();
    const token = ctx.oidc?.params?.token ?? null;
    stats.revocations.push({ token, token_type_hint: ctx.oidc?.params?.token_type_hint ?? null });
    // The provider answers 200 for tokens it does not know (RFC 7009 §2.2), fed_ ones
    // included; 200 also means the client authenticated, so the revocation counts.
    if (ctx.status === 200 && federated.has(token)) federated.get(token).revoked = true;
    return;
  }

  // CIBA §7.3: `interval` (oidc-provider sends none, i.e. 5 s).
  if (CIBA && ctx.method === 'POST' && ctx.path === '/bc-authorize') {
    if (wrongClientAuth(ctx, await preRead(ctx))) return;
    await next();
    if (ctx.status === 200 && ctx.body?.auth_req_id && CIBA_INTERVAL > 0) {
      ctx.body = { ...ctx.body, interval: CIBA_INTERVAL };
    }
    return;
  }

  await next();
});

server.on('request', provider.callback());

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();

console.log(`READY ${issuer}`);
