/** Pure parts: backoff, Retry-After, ids, and the two event mappings. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fromAuditEvent, fromGrantexEvent, newEventId, parseRetryAfter, retryDelayMs } from '../src/index.js';

test('backoff doubles per attempt up to the cap, with jitter in the upper half', () => {
  assert.equal(retryDelayMs(1, 200, 30_000, undefined, () => 0), 100);
  assert.equal(retryDelayMs(1, 200, 30_000, undefined, () => 1), 200);
  assert.equal(retryDelayMs(4, 200, 30_000, undefined, () => 1), 1600);
  assert.equal(retryDelayMs(40, 200, 30_000, undefined, () => 1), 30_000);
  assert.equal(retryDelayMs(40, 200, 30_000, undefined, () => 0), 15_000);
  // The server's Retry-After wins, even above the cap.
  assert.equal(retryDelayMs(1, 200, 30_000, 60_000), 60_000);
});

test('Retry-After: delta-seconds and HTTP dates', () => {
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter('3'), 3000);
  assert.equal(parseRetryAfter(' 0 '), 0);
  const now = Date.parse('2026-12-01T10:00:00Z');
  assert.equal(parseRetryAfter('Tue, 01 Dec 2026 10:00:05 GMT', now), 5000);
  assert.equal(parseRetryAfter('Tue, 01 Dec 2026 09:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon'), undefined);
});

test('ids: evt_ + ULID, time-sortable, unique', () => {
  const a = newEventId(Date.parse('2026-12-01T10:00:00Z'));
  const b = newEventId(Date.parse('2026-12-01T10:00:01Z'));
  assert.match(a, /^evt_[0-9A-HJKMNP-TV-Z]{26}$/);
  assert.ok(a.slice(0, 14) < b.slice(0, 14));
  const many = new Set(Array.from({ length: 10_000 }, () => newEventId(0)));
  assert.equal(many.size, 10_000);
  // The ULID time part of the epoch is all zeros.
  assert.ok(newEventId(0).startsWith('evt_0000000000'));
});

test('a Grantex event keeps its id, type, createdAt and data (an empty data too)', () => {
  assert.deepEqual(fromGrantexEvent({ id: 'evt_1', type: 'grant.created', createdAt: '2026-12-01T10:00:00.120Z', data: {} }), {
    id: 'evt_1',
    type: 'grant.created',
    createdAt: '2026-12-01T10:00:00.120Z',
    data: {},
  });
  // Fields trailkeep would refuse at the top level travel under data.
  const withExtra = { id: 'evt_2', type: 'a.b', createdAt: 'x', data: { k: 1 }, object: 'grant' };
  assert.deepEqual(fromGrantexEvent(withExtra).data, { object: 'grant', k: 1 });
  // No id: one is made (stable from here on).
  assert.match(fromGrantexEvent({ type: 'a.b', createdAt: 'x', data: {} } as never).id, /^evt_/);
});

test('an AbsoluteJS audit event maps kind/at/actor/target/metadata', () => {
  const at = Date.parse('2026-12-01T10:00:00.007Z');
  const e = fromAuditEvent({ at, kind: 'secrets.rotated', actor: 'ops', target: 'db', metadata: { __integrity: { hash: 'h' } } });
  assert.deepEqual({ ...e, id: undefined }, {
    id: undefined,
    type: 'secrets.rotated',
    time: '2026-12-01T10:00:00.007Z',
    actor: 'ops',
    subject: 'db',
    data: { __integrity: { hash: 'h' } },
  });
  assert.ok(e.id.startsWith(newEventId(at).slice(0, 14)), 'the id carries the event time');
});
