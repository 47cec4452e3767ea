// Records the golden payloads of Grantex's own Datadog and Splunk
// destinations (`@grantex/destinations`, packages/destinations/src in the
// Grantex repository), which trailkeep's `encoding = "grantex"` must
// reproduce (tests/destinations.rs, grantex_encoding_matches_the_golden_payloads).
//
// Usage (see README.md beside this file):
//   GRANTEX_SRC=<grantex checkout>/packages/destinations/src \
//   TS_DIR=<a folder with `npm install typescript@5` done in it> \
//   node tests/data/grantex/record.mjs
//
// The destinations' TypeScript is transpiled as it is (types stripped by
// the TypeScript compiler, nothing else changed) and driven the way
// Grantex's own EventSource drives them: each SSE `data:` line is
// JSON.parse'd and passed to `send([event])`; `close()` flushes the rest.
// Both post to a capture server on 127.0.0.1. Splunk's `hecUrl` points at it
// directly; Datadog's intake URL is fixed to
// `https://http-intake.logs.${site}`, so `fetch` is wrapped to send that one
// host to the capture server instead (method, headers and body untouched).

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { gunzipSync } from 'node:zlib';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = process.env.GRANTEX_SRC;
const tsDir = process.env.TS_DIR;
if (!src || !tsDir) {
  console.error('set GRANTEX_SRC (packages/destinations/src of Grantex) and TS_DIR (where typescript is installed)');
  process.exit(2);
}
const ts = createRequire(join(tsDir, 'package.json'))('typescript');

// The events as Grantex's auth service builds them (lib/events.ts:
// `{id, type, createdAt: new Date().toISOString(), data}`) and publishes
// them (`JSON.stringify(event)`), one SSE `data:` line each.
const events = [
  // A millisecond with a trailing zero; nested objects and arrays.
  { id: 'evt_01JDX0000000000000000000A1', type: 'grant.created', createdAt: new Date(Date.UTC(2026, 10, 23, 10, 0, 0, 120)).toISOString(),
    data: { agent: { id: 'ag_1', name: 'bot' }, grantId: 'grnt_1', scopes: ['read', 'write'] } },
  // An empty data object; a whole second.
  { id: 'evt_01JDX0000000000000000000A2', type: 'token.issued', createdAt: new Date(Date.UTC(2026, 10, 23, 10, 0, 1, 0)).toISOString(), data: {} },
  // Unicode and characters JSON escapes, in values and keys.
  { id: 'evt_01JDX0000000000000000000A3', type: 'sso.login', createdAt: new Date(Date.UTC(2026, 10, 23, 10, 0, 2, 345)).toISOString(),
    data: { ctrl: '\u0001\u001f', note: 'tab\tquote"back\\slash/', user: 'Zoë 🚀 日本', '€': 'euro' } },
  // Numbers: integers past 2^53 that JavaScript (and RFC 8785) write
  // unchanged, exponent forms, a fraction, a negative, and -0.
  { id: 'evt_01JDX0000000000000000000A4', type: 'budget.threshold', createdAt: new Date(Date.UTC(2026, 10, 23, 10, 0, 3, 5)).toISOString(),
    data: { big: 2 ** 53 + 2, huge: 2 ** 60, max: 1e21, negative: -42, ratio: 0.1, tiny: 1.5e-7, zero: -0 } },
  // A timestamp before 1970 (Splunk's time is floored) at .900.
  { id: 'evt_01JDX0000000000000000000A5', type: 'grant.revoked', createdAt: new Date(Date.UTC(1969, 11, 31, 23, 59, 59, 900)).toISOString(),
    data: { grantId: 'grnt_1', reason: null, revoked: true } },
  // Members of data in an order that is not RFC 8785's (and integer-like
  // keys, which JSON.parse moves to the front): sent alone, in its own batch.
  { id: 'evt_01JDX0000000000000000000A6', type: 'grant.created', createdAt: new Date(Date.UTC(2026, 10, 23, 10, 0, 4, 10)).toISOString(),
    data: { zeta: 1, alpha: { y: 2, x: 1 }, 10: 'ten', 9: 'nine' } },
];
const lines = events.map((e) => JSON.stringify(e));
writeFileSync(join(here, 'events.ndjson'), lines.join('\n') + '\n');

async function load(name) {
  const code = ts.transpileModule(readFileSync(join(src, 'destinations', `${name}.ts`), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const dir = mkdtempSync(join(tmpdir(), 'grantex-'));
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, code);
  return import(pathToFileURL(file).href);
}

const captured = [];
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
    const pick = ['content-type', 'content-encoding', 'dd-api-key', 'authorization', 'x-splunk-request-channel'];
    const headers = Object.fromEntries(pick.filter((h) => h in req.headers).map((h) => [h, req.headers[h]]));
    captured.push({ method: req.method, path: req.url, headers, body: body.toString('utf8') });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"text":"Success","code":0}');
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => realFetch(String(url).replace('https://http-intake.logs.capture.invalid', `http://127.0.0.1:${port}`), init);

async function record(dest, file) {
  captured.length = 0;
  for (const line of lines) await dest.send([JSON.parse(line)]);
  await dest.close();
  writeFileSync(join(here, file), JSON.stringify({ requests: captured }, null, 2) + '\n');
  console.log(`${file}: ${captured.length} requests`);
}

const { DatadogDestination } = await load('datadog');
const { SplunkDestination } = await load('splunk');
await record(new DatadogDestination({ apiKey: 'dd-test-key', site: 'capture.invalid', batchSize: 5 }), 'datadog.json');
await record(new SplunkDestination({ hecUrl: `http://127.0.0.1:${port}`, hecToken: 'hec-test-token', batchSize: 5 }), 'splunk.json');
server.close();
