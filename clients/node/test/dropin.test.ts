/**
 * The adapters as their hosts use them, against a real trailkeep: a Grantex
 * EventSource with a TrailkeepDestination beside another destination, and
 * AbsoluteJS's createAudit with a TrailkeepAuditSink.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { TrailkeepAuditSink, TrailkeepDestination, trailkeepAuditSink, type Undelivered } from '../src/index.js';
import { Server, cleanup, provision, readBack } from './harness.js';
import { GrantexHost, createAudit, type AuditSink, type EventDestination, type GrantexEvent } from './upstream.js';

after(cleanup);

// Compile-time: the adapters are what the hosts' signatures take.
const _destinationFits: (d: TrailkeepDestination) => EventDestination = (d) => d;
const _sinkFits: (s: TrailkeepAuditSink) => AuditSink = (s) => s;
void _destinationFits;
void _sinkFits;

test('Grantex: TrailkeepDestination beside another destination, events stored with their Grantex ids', async () => {
  const store = provision();
  const server = await Server.start(store.dataDir);
  const source = new GrantexHost();
  const seen: GrantexEvent[] = [];
  source.addDestination({ name: 'other', send: async (e) => void seen.push(...e) });
  const destination = new TrailkeepDestination({
    url: server.url,
    stream: 'grantex',
    token: store.ingest,
    batchSize: 25,
    flushIntervalMs: 10,
  });
  source.addDestination(destination);
  const sent: GrantexEvent[] = Array.from({ length: 100 }, (_, i) => ({
    id: `evt_grantex_${i}`,
    type: i % 2 ? 'grant.created' : 'token.issued',
    createdAt: `2026-12-01T10:00:00.${String(i).padStart(3, '0')}Z`,
    data: i === 0 ? {} : { grantId: `grnt_${i}`, scopes: ['calendar:read'] },
  }));
  for (const e of sent) await source.dispatch(e);
  // Grantex re-sends an event (a reconnect replay): stored once.
  await source.dispatch(sent[5]!);
  await source.stop();
  assert.equal(seen.length, 101);
  const report = await destination.report(); // closed by stop(): its report
  assert.deepEqual(report, { delivered: 101, duplicates: 1, undelivered: [], undeliveredTotal: 0 });
  const stored = await readBack(server.url, 'grantex', store.read);
  assert.deepEqual(
    stored.map((e) => e.id),
    sent.map((e) => e.id),
  );
  assert.equal(stored[1]!.type, 'grant.created');
  assert.equal(stored[1]!.time, '2026-12-01T10:00:00.001Z');
  assert.deepEqual(stored[1]!.data, sent[1]!.data);
  await server.kill9();
});

test('Grantex: an event the destination cannot take is reported although EventSource discards the rejection', async () => {
  const store = provision();
  const server = await Server.start(store.dataDir);
  const reported: Undelivered[] = [];
  const destination = new TrailkeepDestination({
    url: server.url,
    stream: 'grantex',
    token: store.ingest,
    flushIntervalMs: 10,
    onUndelivered: (items) => reported.push(...items),
  });
  const source = new GrantexHost();
  source.addDestination(destination);
  await source.stop();
  // After stop, the destination is closed: EventSource swallows send()'s
  // rejection, the callback still hears of the event.
  await source.dispatch({ id: 'evt_late', type: 'grant.revoked', createdAt: '2026-12-01T10:00:00.000Z', data: {} });
  assert.deepEqual(
    reported.map((u) => [u.event.id, u.reason]),
    [['evt_late', 'closed']],
  );
  await server.kill9();
});

test('AbsoluteJS: createAudit({ sinks: [trailkeepAuditSink(...)] }) stores every event, mapped', async () => {
  const store = provision();
  const server = await Server.start(store.dataDir);
  const errors: unknown[] = [];
  const sink = trailkeepAuditSink({ url: server.url, stream: 'app', token: store.ingest, flushIntervalMs: 10 });
  const audit = createAudit({ sinks: [sink], onError: (e) => errors.push(e) });
  const at = Date.parse('2026-12-01T10:00:00.250Z');
  for (let i = 0; i < 50; i++) {
    await audit.append({ at: at + i, kind: 'auth.login', actor: `user_${i}`, target: 'tenant_1', metadata: { ip: '10.0.0.1', i } });
  }
  await audit.append({ kind: 'runtime.exit' });
  await audit.close();
  assert.deepEqual(errors, []);
  const report = await sink.report();
  assert.deepEqual(report, { delivered: 51, duplicates: 0, undelivered: [], undeliveredTotal: 0 });
  const stored = await readBack(server.url, 'app', store.read);
  assert.equal(stored.length, 51);
  assert.deepEqual(
    { type: stored[3]!.type, time: stored[3]!.time, actor: stored[3]!.actor, subject: stored[3]!.subject, data: stored[3]!.data },
    { type: 'auth.login', time: '2026-12-01T10:00:00.253Z', actor: 'user_3', subject: 'tenant_1', data: { ip: '10.0.0.1', i: 3 } },
  );
  assert.equal(stored[50]!.type, 'runtime.exit');
  await server.kill9();
});

test("AbsoluteJS: a refused append reaches createAudit's onError", async () => {
  const proxyless = new TrailkeepAuditSink({
    url: 'http://127.0.0.1:9',
    stream: 'app',
    token: 'tk_0000000000000000_unused',
    maxBufferEvents: 1,
    closeTimeoutMs: 100,
    onUndelivered: () => {},
  });
  const errors: string[] = [];
  const audit = createAudit({ sinks: [proxyless], onError: (e, name) => errors.push(`${name}: ${(e as Error).name}`) });
  await audit.append({ kind: 'auth.login' });
  await audit.append({ kind: 'auth.login' });
  assert.deepEqual(errors, ['trailkeep: BufferFullError']);
  await audit.close();
  const report = await proxyless.report();
  assert.deepEqual(
    report.undelivered.map((u) => u.reason),
    ['buffer_full', 'unreachable'],
  );
});
