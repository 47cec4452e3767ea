/**
 * Event ids, made by the client before an event's first attempt.
 *
 * `evt_` + a ULID (48-bit milliseconds, 80 random bits, Crockford base32),
 * the same form trailkeep gives events that arrive without an id: sortable
 * by time, and unique without coordination between processes. Because the
 * id is fixed before the first request, a retried batch that trailkeep had
 * already stored is answered as duplicates instead of being stored twice.
 */
import { randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** Returns a new `evt_` + ULID id for an event created at `nowMs`. */
export function newEventId(nowMs: number = Date.now()): string {
  return `evt_${ulid(nowMs)}`;
}

/** Returns a ULID (26 characters) for the time `nowMs`. */
export function ulid(nowMs: number): string {
  let time = '';
  let t = Math.floor(nowMs);
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32]! + time;
    t = Math.floor(t / 32);
  }
  // 80 random bits = 16 characters of 5 bits.
  const bytes = randomBytes(10);
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let rand = '';
  for (let i = 0; i < 16; i++) {
    rand = CROCKFORD[Number(bits & 31n)]! + rand;
    bits >>= 5n;
  }
  return time + rand;
}
