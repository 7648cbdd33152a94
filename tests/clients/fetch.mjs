// One HTTPS request through the proxy with Node's fetch (undici), using
// undici's ProxyAgent with the proxy's CA for the tunnelled TLS.
// Usage: node fetch.mjs URL --proxy http://127.0.0.1:PORT --ca CA.pem [--method M] [--data-file F]
//        [--header NAME:VALUE ...]
// Prints one JSON line: {"status", "headers", "body"}.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fetch, ProxyAgent } from 'undici';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    proxy: { type: 'string' },
    ca: { type: 'string' },
    method: { type: 'string', default: 'GET' },
    'data-file': { type: 'string' },
    header: { type: 'string', multiple: true, default: [] },
  },
});
const [url] = positionals;
const ca = readFileSync(values.ca);
const dispatcher = new ProxyAgent({ uri: values.proxy, requestTls: { ca }, proxyTls: { ca } });
const body = values['data-file'] ? readFileSync(values['data-file']) : undefined;
const headers = values.header.map((h) => {
  const i = h.indexOf(':');
  return [h.slice(0, i), h.slice(i + 1)];
});
const res = await fetch(url, { method: values.method, body, headers, dispatcher });
const text = await res.text();
process.stdout.write(
  JSON.stringify({ status: res.status, headers: Object.fromEntries(res.headers), body: text }) + '\n',
);
await dispatcher.close();
