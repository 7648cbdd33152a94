// A real OAuth 2.0 / OpenID Connect provider (the `oidc-provider` npm package) for the
// end-to-end tests: the token endpoint the proxy's vault refreshes and exchanges
// credentials at, and the revocation endpoint PANIC calls.
//
//   node tests/support/oidc_provider.mjs [--access-ttl SECONDS]
//
// Listens on 127.0.0.1:<free port> and prints one line `READY http://127.0.0.1:<port>`
// (the issuer). Exits when stdin closes or on SIGTERM.
//
// Endpoints (oidc-provider's own): POST /token (refresh_token, authorization_code and
// the Auth0 federated-connection token exchange), POST /token/revocation (RFC 7009).
// Test hooks (no auth, JSON): POST /test/refresh-token, GET /test/stats,
// POST /test/active, POST /test/fault — see `testHooks` below.

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

const GRANT_REFRESH = 'refresh_token';
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
let fault = { mode: null, delay_ms: 0 };

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

const provider = new Provider(issuer, {
  clients: [client('agentgate', 'client_secret_basic'), client('agentgate-post', 'client_secret_post')],
  // Any subject is a valid account (the tests mint tokens for "alice", "bob", ...).
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  // Each refresh consumes the presented refresh token and returns a new one; presenting a
  // consumed one again is invalid_grant and revokes the whole grant (reuse detection).
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ACCESS_TTL,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
  },
  features: {
    revocation: { enabled: true },
    devInteractions: { enabled: false },
  },
  // The defaults, spelled out because the tests configure these URLs.
  routes: { token: '/token', revocation: '/token/revocation' },
});

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

async function readForm(ctx) {
  let text = '';
  for await (const chunk of ctx.req) text += chunk;
  return new URLSearchParams(text);
}

// Whether a token of any kind this provider issued is still usable.
async function isActive(token) {
  if (federated.has(token)) return !federated.get(token).revoked;
  const access = await provider.AccessToken.find(token);
  if (access) return !access.isExpired;
  const refresh = await provider.RefreshToken.find(token);
  return Boolean(refresh?.isValid && (await provider.Grant.find(refresh.grantId)));
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
  // {"mode": null|"down"|"slow"|"garbage"|"expired", "delay_ms"}: how POST /token behaves.
  'POST /test/fault': async (body) => {
    if (![null, undefined, 'down', 'slow', 'garbage', 'expired'].includes(body.mode)) {
      throw new Error(`unknown fault mode ${JSON.stringify(body.mode)}`);
    }
    fault = { mode: body.mode ?? null, delay_ms: body.delay_ms ?? 0 };
    return fault;
  },
};

// POST /token under a fault: answers itself (except "slow"), without touching the
// provider's storage. Returns true when the request is handled.
async function applyFault(ctx) {
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
      const form = await readForm(ctx);
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
      ctx.status = 400;
      ctx.body = { error: String(err?.message ?? err) };
    }
    return;
  }

  if (ctx.method === 'POST' && ctx.path === '/token') {
    stats.token_requests += 1;
    if (await applyFault(ctx)) return;
    await next();
    // ctx.oidc.params holds the parsed request once the provider got that far.
    const grantType = ctx.oidc?.params?.grant_type;
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
