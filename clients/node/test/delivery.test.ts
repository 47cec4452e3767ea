/**
 * The client against a real trailkeep (TRAILKEEP_BIN) started by the test:
 * delivery and read-back, a lost answer, a kill -9 and restart mid-stream,
 * a server that never comes back, the buffer bound, refusals, Retry-After.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import {
  BufferFullError,
  ClientClosedError,
  TrailkeepClient,
  type RetryInfo,
  type TrailkeepEventInput,
  type Undelivered,
} from '../src/index.js';
import { Proxy, Server, cleanup, configFile, provision, readBack, waitFor } from './harness.js';

after(cleanup);

const fast = { flushIntervalMs: 10, retryInitialMs: 20, retryMaxMs: 200 };

function events(n: number, from = 0, type = 'grant.created'): TrailkeepEventInput[] {
  return Array.from({ length: n }, (_, i) => ({ type, subject: `agent_${from + i}`, data: { n: from + i } }));
}

/** Asserts the stream holds exactly `ids`, once each, in that order, seqs 1..n. */
async function assertStored(url: string, stream: string, read: string, ids: string[]): Promise<void> {
  const stored = await readBack(url, stream, read);
  assert.equal(stored.length, ids.length, 'stored count');
  assert.equal(new Set(stored.map((e) => e.id)).size, stored.length, 'an id stored twice');
  assert.deepEqual(
    stored.map((e) => e.id),
    ids,
  );
  assert.deepEqual(
    stored.map((e) => e.seq),
    ids.map((_, i) => i + 1),
  );
}

describe('against a real trailkeep', () => {
  test('batches are delivered in order and read back as sent', async () => {
    const store = provision();
    const server = await Server.start(store.dataDir);
    const client = new TrailkeepClient({ url: server.url, stream: 'auth', token: store.ingest, maxBatchEvents: 100, ...fast });
    const sent = [];
    for (let i = 0; i < 10; i++) sent.push(...(client.offer(events(100, i * 100)) as { id: string }[]));
    const flushed = await client.flush();
    assert.deepEqual(flushed, { settled: true, pending: 0 });
    const report = await client.close();
    assert.deepEqual(report, { delivered: 1000, duplicates: 0, undelivered: [], undeliveredTotal: 0 });
    await assertStored(server.url, 'auth', store.read, sent.map((e) => e.id));
    const stored = await readBack(server.url, 'auth', store.read);
    assert.deepEqual(stored[7]!.data, { n: 7 });
    assert.equal(stored[7]!.subject, 'agent_7');
    assert.match(stored[7]!.id, /^evt_[0-9A-HJKMNP-TV-Z]{26}$/);
    await server.kill9();
  });

  test('a retry after a lost answer is answered as duplicates, never stored twice', async () => {
    const store = provision();
    const server = await Server.start(store.dataDir);
    const proxy = await Proxy.start();
    proxy.upstream = server.port;
    proxy.loseNextAnswers(1);
    const retries: RetryInfo[] = [];
    const client = new TrailkeepClient({
      url: proxy.url,
      stream: 'auth',
      token: store.ingest,
      ...fast,
      onRetry: (r) => retries.push(r),
    });
    const sent = client.offer(events(50)) as { id: string }[];
    const report = await client.close();
    assert.equal(proxy.dropped, 1, 'the proxy lost one answer');
    assert.ok(retries.length >= 1, 'the batch was retried');
    // Stored by the first attempt, acknowledged by the second as duplicates.
    assert.deepEqual(report, { delivered: 50, duplicates: 50, undelivered: [], undeliveredTotal: 0 });
    await assertStored(server.url, 'auth', store.read, sent.map((e) => e.id));
    await proxy.close();
    await server.kill9();
  });

  test('kill -9 and restart mid-stream: nothing lost, nothing doubled', async () => {
    const store = provision();
    let server = await Server.start(store.dataDir);
    // A stable address in front of the server, as a load balancer would
    // be: the restarted server gets a new port behind it.
    const proxy = await Proxy.start();
    proxy.upstream = server.port;
    const client = new TrailkeepClient({ url: proxy.url, stream: 'orders', token: store.ingest, maxBatchEvents: 50, ...fast });
    const sent: { id: string }[] = [];
    const offer = (n: number) => sent.push(...(client.offer(events(n, sent.length, 'order.placed')) as { id: string }[]));

    // Sending while the server dies: the batch in flight is cut.
    offer(1000);
    await waitFor('some events delivered', () => client.stats().delivered >= 200);
    await server.kill9();
    proxy.upstream = null;
    proxy.resetAll();
    // The client keeps taking events while trailkeep is down, and keeps
    // failing to send them.
    const failedBefore = client.stats().attemptsFailed;
    offer(500);
    await waitFor('attempts failing while trailkeep is down', () => client.stats().attemptsFailed >= failedBefore + 3);
    assert.ok(client.stats().pending > 0);

    server = await Server.start(store.dataDir);
    proxy.upstream = server.port;
    offer(500);
    const report = await client.close();
    assert.deepEqual(report.undelivered, []);
    assert.equal(report.delivered, 2000);
    await assertStored(server.url, 'orders', store.read, sent.map((e) => e.id));
    await proxy.close();
    await server.kill9();
  });

  test('close() reports every event it could not deliver when trailkeep never comes back', async () => {
    const store = provision();
    const server = await Server.start(store.dataDir);
    const reported: Undelivered[] = [];
    const client = new TrailkeepClient({
      url: server.url,
      stream: 'auth',
      token: store.ingest,
      ...fast,
      closeTimeoutMs: 1000,
      onUndelivered: (items) => reported.push(...items),
    });
    const first = client.offer(events(20)) as { id: string }[];
    assert.equal((await client.flush()).settled, true);
    await server.kill9();
    const lost = client.offer(events(30, 20)) as { id: string }[];
    const report = await client.close();
    assert.equal(report.delivered, 20);
    assert.equal(report.undeliveredTotal, 30);
    assert.deepEqual(
      report.undelivered.map((u) => u.event.id),
      lost.map((e) => e.id),
    );
    for (const u of report.undelivered) {
      assert.equal(u.reason, 'unreachable');
      // The last failure. (The first attempt may have gone out on a pooled
      // connection the kill cut, so `maybeStored` may be set: an unknown
      // outcome is never reported as a certain loss.)
      assert.match(u.cause ?? '', /ECONNREFUSED/);
    }
    assert.deepEqual(reported, report.undelivered, 'the callback saw the same events');
    // The report keeps the full event (its id included) for a later resend.
    assert.deepEqual(report.undelivered[0]!.event.data, { n: 20 });
    // Closed: further events are refused and reported, not dropped.
    assert.throws(() => client.offer(events(1)), ClientClosedError);
    assert.equal(reported.at(-1)!.reason, 'closed');
    assert.deepEqual(await client.close(), report, 'close() again returns the same report');

    const again = await Server.start(store.dataDir);
    await assertStored(again.url, 'auth', store.read, first.map((e) => e.id));
    await again.kill9();
  });

  test('close() returns by its deadline when every attempt fails at once', async () => {
    // Regression: past the deadline the retry delay was 0 and, before the
    // deadline's timer fired, the failing attempts (refused at once) could
    // follow each other without ever letting it fire: close() never
    // returned (the process spun until it ran out of memory). Hit within
    // a few rounds before the fix.
    for (let i = 0; i < 10; i++) {
      const client = new TrailkeepClient({
        url: 'http://127.0.0.1:9', // nothing listens: refused at connect
        stream: 'auth',
        token: 'tk_0000000000000000_unused',
        maxBufferEvents: 1,
        closeTimeoutMs: 100,
        onUndelivered: () => {},
      });
      client.offer(events(1));
      const started = Date.now();
      await client.flush();
      const report = await client.close();
      assert.equal(report.undeliveredTotal, 1);
      assert.ok(Date.now() - started < 2000, `close() took ${Date.now() - started} ms`);
    }
  });

  test('the buffer is bounded: a full buffer refuses and reports', async () => {
    const proxy = await Proxy.start(); // no server behind it: nothing is ever delivered
    const reported: Undelivered[] = [];
    const client = new TrailkeepClient({
      url: proxy.url,
      stream: 'auth',
      token: 'tk_0000000000000000_unused',
      maxBufferEvents: 10,
      ...fast,
      closeTimeoutMs: 300,
      onUndelivered: (items) => reported.push(...items),
    });
    client.offer(events(8));
    const err = (() => {
      try {
        client.offer(events(5, 8));
      } catch (e) {
        return e;
      }
      return null;
    })();
    assert.ok(err instanceof BufferFullError, String(err));
    // The two that fit are kept; the three that did not are reported.
    assert.deepEqual(
      err.items.map((i) => [i.reason, i.event.data]),
      [10, 11, 12].map((n) => ['buffer_full', { n }]),
    );
    assert.deepEqual(reported, err.items);
    assert.equal(client.stats().pending, 10);
    const report = await client.close();
    assert.equal(report.undeliveredTotal, 13);
    assert.deepEqual(
      report.undelivered.map((u) => u.reason),
      [...Array(3).fill('buffer_full'), ...Array(10).fill('unreachable')],
    );
    await proxy.close();
  });

  test("whenFull: 'wait' holds the caller until there is room, and loses nothing", async () => {
    const store = provision();
    const server = await Server.start(store.dataDir);
    const proxy = await Proxy.start(); // trailkeep unreachable at first
    const client = new TrailkeepClient({
      url: proxy.url,
      stream: 'auth',
      token: store.ingest,
      maxBufferEvents: 10,
      whenFull: 'wait',
      ...fast,
    });
    const first = client.offer(events(10)) as { id: string }[];
    let admitted = false;
    const waiting = (client.offer(events(5, 10)) as Promise<{ id: string }[]>).then((e) => {
      admitted = true;
      return e;
    });
    await waitFor('attempts failing', () => client.stats().attemptsFailed >= 3);
    assert.equal(admitted, false, 'admitted past the bound');
    assert.equal(client.stats().pending, 10);
    proxy.upstream = server.port;
    const second = await waiting;
    const report = await client.close();
    assert.deepEqual(report, { delivered: 15, duplicates: 0, undelivered: [], undeliveredTotal: 0 });
    await assertStored(server.url, 'auth', store.read, [...first, ...second].map((e) => e.id));
    await proxy.close();
    await server.kill9();
  });

  test("a refused event is reported with trailkeep's error; the rest of its batch is delivered", async () => {
    const store = provision();
    const server = await Server.start(store.dataDir);
    const retries: RetryInfo[] = [];
    const client = new TrailkeepClient({ url: server.url, stream: 'auth', token: store.ingest, ...fast, onRetry: (r) => retries.push(r) });
    const batch = events(5);
    batch[2] = { type: 'not a type!', data: { n: 2 } };
    const sent = client.offer(batch) as { id: string }[];
    const report = await client.close();
    assert.equal(report.delivered, 4);
    assert.equal(report.undelivered.length, 1);
    const [u] = report.undelivered;
    assert.equal(u!.event.id, sent[2]!.id);
    assert.equal(u!.reason, 'refused');
    assert.equal(u!.status, 400);
    assert.equal(u!.error?.code, 'invalid_type');
    assert.equal(u!.error?.index, 2);
    assert.equal(u!.error?.field, 'type');
    assert.match(u!.error?.message ?? '', /dotted name/);
    assert.deepEqual(retries, [], 'a 400 is not retried');
    await assertStored(server.url, 'auth', store.read, [0, 1, 3, 4].map((i) => sent[i]!.id));
    await server.kill9();
  });

  test("a batch over the server's request limit is split; an event over its event limit is reported alone", async () => {
    const store = provision();
    const config = configFile(store.dataDir, '[ingest]\nmax_request_bytes = 4096\nmax_event_bytes = 2048\n');
    const server = await Server.start(store.dataDir, ['--config', config]);
    const client = new TrailkeepClient({ url: server.url, stream: 'auth', token: store.ingest, ...fast });
    const batch: TrailkeepEventInput[] = events(40).map((e) => ({ ...e, data: { ...e.data, pad: 'x'.repeat(200) } }));
    batch[17] = { type: 'grant.created', data: { n: 17, pad: 'x'.repeat(3000) } };
    const sent = client.offer(batch) as { id: string }[];
    const report = await client.close();
    assert.equal(report.delivered, 39);
    assert.deepEqual(
      report.undelivered.map((u) => [u.event.id, u.reason, u.status, u.error?.code]),
      [[sent[17]!.id, 'refused', 413, 'event_too_large']],
    );
    await assertStored(server.url, 'auth', store.read, sent.filter((_, i) => i !== 17).map((e) => e.id));
    await server.kill9();
  });

  test('a key trailkeep does not know is refused with 401 and not retried', async () => {
    const store = provision();
    const server = await Server.start(store.dataDir);
    const client = new TrailkeepClient({ url: server.url, stream: 'auth', token: 'tk_0123456789abcdef_notakey', ...fast });
    client.offer(events(3));
    const report = await client.close();
    assert.equal(report.delivered, 0);
    assert.equal(client.stats().attemptsFailed, 0);
    assert.deepEqual(
      report.undelivered.map((u) => [u.reason, u.status, u.error?.code]),
      Array(3).fill(['refused', 401, 'unauthorized']),
    );
    // The token is never echoed into what the client reports.
    assert.doesNotMatch(JSON.stringify(report), /notakey/);
    await server.kill9();
  });

  test('429 with Retry-After is waited out, then delivered', async () => {
    const store = provision();
    const config = configFile(store.dataDir, '[server]\nrequests_per_second = 1\n');
    const server = await Server.start(store.dataDir, ['--config', config]);
    const retries: RetryInfo[] = [];
    const client = new TrailkeepClient({
      url: server.url,
      stream: 'auth',
      token: store.ingest,
      maxBatchEvents: 10,
      ...fast,
      onRetry: (r) => retries.push(r),
    });
    const sent = client.offer(events(20)) as { id: string }[];
    const report = await client.close();
    assert.deepEqual(report.undelivered, []);
    assert.ok(retries.length >= 1, 'the second request was rate limited');
    for (const r of retries) {
      assert.equal(r.status, 429);
      assert.equal(r.delayMs, 1000, 'Retry-After: 1 honoured instead of the 20 ms backoff');
    }
    await assertStored(server.url, 'auth', store.read, sent.map((e) => e.id));
    await server.kill9();
  });
});
