/**
 * The delivery core shared by the Grantex destination and the AbsoluteJS
 * sink: a bounded buffer, one sender posting NDJSON batches to
 * `POST /v1/streams/{stream}/events`, retries, and a report of every event
 * it could not deliver.
 *
 * What it is not: a durable queue. Events wait in memory until trailkeep
 * acknowledges them (trailkeep acknowledges only committed, chained
 * events); a process killed before that loses what it held, and says so
 * only if it gets to `close()`.
 */
import { newEventId } from './ids.js';

/** An event as trailkeep takes it (README "The event"). */
export interface TrailkeepEvent {
  /** Unique per stream; set by the client before the first attempt when absent. */
  id: string;
  /** Dotted name such as `grant.created`. */
  type: string;
  /** RFC 3339; trailkeep takes `createdAt` as an alias (Grantex). */
  time?: string;
  createdAt?: string;
  actor?: string | Record<string, unknown>;
  subject?: string | Record<string, unknown>;
  data?: Record<string, unknown>;
}

/** An event before the client has given it an id. */
export type TrailkeepEventInput = Omit<TrailkeepEvent, 'id'> & { id?: string };

/** trailkeep's JSON error (`{"error":{...}}`), as the server sent it. */
export interface TrailkeepError {
  code: string;
  message: string;
  /** The event the error is about, counted from 0 in the request. */
  index?: number | null;
  field?: string | null;
}

/**
 * Why an event was not delivered.
 *
 * - `refused`: trailkeep answered a permanent 4xx (400 invalid event, 401,
 *   403, 404, 413 for a single event); `status` and `error` say what.
 * - `buffer_full`: the buffer held `maxBufferEvents` (with `whenFull: 'reject'`).
 * - `closed`: offered after `close()` was called.
 * - `unreachable`: `close()` gave up after `closeTimeoutMs` without an
 *   answer; `cause` is the last failure. With `maybeStored` an attempt's
 *   outcome is unknown (a timeout, a cut answer): trailkeep may have stored
 *   it. Sending the same event again is safe: its id makes it a duplicate.
 */
export type UndeliveredReason = 'refused' | 'buffer_full' | 'closed' | 'unreachable';

/** One event the client could not deliver, and why. */
export interface Undelivered {
  /** The event as it was (or would have been) sent, its id included. */
  event: TrailkeepEvent;
  reason: UndeliveredReason;
  status?: number;
  error?: TrailkeepError;
  cause?: string;
  maybeStored?: boolean;
}

/** What `close()` returns. */
export interface DeliveryReport {
  /** Events trailkeep acknowledged (stored now, or stored before: duplicates). */
  delivered: number;
  /** Of those, how many trailkeep already had (a retry after a lost answer). */
  duplicates: number;
  /**
   * Every event not delivered since the client was created, oldest first;
   * the newest max(`maxBufferEvents`, 10,000) are kept, `undeliveredTotal`
   * counts all.
   */
  undelivered: Undelivered[];
  undeliveredTotal: number;
}

/** What `flush()` returns. */
export interface FlushResult {
  /** True when every event offered before the call was delivered or reported. */
  settled: boolean;
  /** Events still waiting (buffered or in flight). */
  pending: number;
}

/** A failed attempt that will be retried. */
export interface RetryInfo {
  /** How many attempts this batch has failed so far. */
  attempt: number;
  /** How long the client waits before the next attempt. */
  delayMs: number;
  /** HTTP status, when trailkeep answered. */
  status?: number;
  /** What failed: a transport error or trailkeep's error code. */
  cause: string;
  events: number;
}

export interface TrailkeepClientOptions {
  /** trailkeep's base URL, e.g. `http://127.0.0.1:7470`. */
  url: string;
  /** The stream to append to. */
  stream: string;
  /** An `ingest` API key (`trailkeep keys create --scope ingest --stream S`). */
  token: string;
  /** Most events held (buffered and in flight). Default 10,000. */
  maxBufferEvents?: number;
  /**
   * When the buffer is full: `'reject'` (default) throws `BufferFullError`
   * and reports the event as `buffer_full`; `'wait'` makes the caller wait
   * for room (back-pressure; `close()` reports waiting events as `closed`).
   */
  whenFull?: 'reject' | 'wait';
  /** Most events per request. Default 500 (trailkeep takes up to 10,000). */
  maxBatchEvents?: number;
  /** Most NDJSON bytes per request. Default 1 MiB (trailkeep takes up to 8 MiB). */
  maxBatchBytes?: number;
  /** Longest an event waits for its batch to fill. Default 100 ms. */
  flushIntervalMs?: number;
  /** First retry delay; doubles per failed attempt, with jitter. Default 200 ms. */
  retryInitialMs?: number;
  /** Longest retry delay (a longer `Retry-After` is still honoured). Default 30 s. */
  retryMaxMs?: number;
  /** Longest a request may take. Default 10 s. */
  requestTimeoutMs?: number;
  /** How long `flush()` and `close()` keep trying before they report. Default 10 s. */
  closeTimeoutMs?: number;
  /**
   * Called with the events the client gives up on, as soon as it does.
   * Default: one line on stderr per call (count, reason, first ids).
   */
  onUndelivered?: (items: Undelivered[]) => void;
  /** Called on every failed attempt that will be retried. */
  onRetry?: (info: RetryInfo) => void;
}

/** Thrown by an offer the client refuses (full buffer, or closed). */
export class UndeliveredError extends Error {
  readonly items: Undelivered[];
  constructor(message: string, items: Undelivered[]) {
    super(message);
    this.name = 'UndeliveredError';
    this.items = items;
  }
}

/** The buffer held `maxBufferEvents`; `items` are the refused events. */
export class BufferFullError extends UndeliveredError {
  constructor(items: Undelivered[], max: number) {
    super(
      `trailkeep client buffer is full (${max} events waiting for trailkeep): ${items.length} event(s) refused; raise maxBufferEvents or use whenFull: 'wait'`,
      items,
    );
    this.name = 'BufferFullError';
  }
}

/** The client was closed; `items` are the refused events. */
export class ClientClosedError extends UndeliveredError {
  constructor(items: Undelivered[]) {
    super(`trailkeep client is closed: ${items.length} event(s) refused`, items);
    this.name = 'ClientClosedError';
  }
}

interface Pending {
  /** Order of arrival, from 1. */
  n: number;
  event: TrailkeepEvent;
  line: string;
}

interface Waiter {
  events: TrailkeepEvent[];
  resolve: () => void;
  reject: (e: Error) => void;
}

const DEFAULTS = {
  maxBufferEvents: 10_000,
  maxBatchEvents: 500,
  maxBatchBytes: 1 << 20,
  flushIntervalMs: 100,
  retryInitialMs: 200,
  retryMaxMs: 30_000,
  requestTimeoutMs: 10_000,
  closeTimeoutMs: 10_000,
};

/**
 * Returns the delay before retry number `attempt` (1-based): capped
 * exponential backoff with jitter (between half and all of the step), or
 * the server's `Retry-After` when it sent one.
 */
export function retryDelayMs(
  attempt: number,
  initialMs: number,
  maxMs: number,
  retryAfterMs: number | undefined,
  random: () => number = Math.random,
): number {
  if (retryAfterMs !== undefined) return retryAfterMs;
  const step = Math.min(maxMs, initialMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(step / 2 + random() * (step / 2));
}

/**
 * Returns `Retry-After` in milliseconds (delta-seconds or an HTTP date),
 * or undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, nowMs: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

/** Returns what failed in a fetch, without the request (and so without the token). */
function describeFetchError(e: unknown): string {
  if (e instanceof Error) {
    if (e.name === 'TimeoutError') return 'request timed out';
    if (e.name === 'AbortError') return 'request aborted';
    const cause = (e as { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as { code?: unknown }).code;
      return typeof code === 'string' ? `${code}: ${cause.message}` : cause.message;
    }
    return e.message;
  }
  return String(e);
}

function defaultOnUndelivered(items: Undelivered[]): void {
  const first = items[0];
  if (first === undefined) return;
  const ids = items.slice(0, 5).map((i) => i.event.id).join(', ');
  const why = first.error ? `${first.error.code}: ${first.error.message}` : (first.cause ?? first.reason);
  process.stderr.write(
    `trailkeep client: ${items.length} event(s) not delivered (${first.reason}; ${why}): ${ids}${items.length > 5 ? ', …' : ''}\n`,
  );
}

type Outcome =
  | { kind: 'ok'; duplicates: number }
  | { kind: 'retry'; status?: number; cause: string; retryAfterMs?: number }
  | { kind: 'refused'; status: number; error: TrailkeepError };

/**
 * Sends events to one trailkeep stream. `offer()` buffers; one sender posts
 * batches in order and retries them with the same ids until trailkeep
 * answers or `close()` gives up; nothing is dropped without being reported.
 */
export class TrailkeepClient {
  private readonly endpoint: string;
  private readonly token: string;
  private readonly o: typeof DEFAULTS & { whenFull: 'reject' | 'wait' };
  private readonly onUndelivered: (items: Undelivered[]) => void;
  private readonly onRetry: ((info: RetryInfo) => void) | undefined;

  private buffer: Pending[] = [];
  private inFlight: Pending[] = [];
  private waiters: Waiter[] = [];
  private nextN = 1;
  private delivered = 0;
  private duplicates = 0;
  private undelivered: Undelivered[] = [];
  private undeliveredTotal = 0;
  private attemptsFailed = 0;
  private lastFailure = 'none';

  private closing = false;
  private deadline = Infinity;
  private urgentThrough = 0;
  private closed: Promise<DeliveryReport> | null = null;
  private readonly stopSending = new AbortController();
  private wake: (() => void) | null = null;
  private settleWaiters: { through: number; resolve: () => void }[] = [];
  private loop: Promise<void> | null = null;

  constructor(options: TrailkeepClientOptions) {
    if (!options.url) throw new TypeError('trailkeep client: `url` is required (e.g. http://127.0.0.1:7470)');
    if (!options.stream) throw new TypeError('trailkeep client: `stream` is required');
    if (!options.token) throw new TypeError('trailkeep client: `token` is required (an ingest key)');
    const base = options.url.replace(/\/+$/, '');
    this.endpoint = `${base}/v1/streams/${encodeURIComponent(options.stream)}/events`;
    this.token = options.token;
    this.o = {
      maxBufferEvents: options.maxBufferEvents ?? DEFAULTS.maxBufferEvents,
      maxBatchEvents: options.maxBatchEvents ?? DEFAULTS.maxBatchEvents,
      maxBatchBytes: options.maxBatchBytes ?? DEFAULTS.maxBatchBytes,
      flushIntervalMs: options.flushIntervalMs ?? DEFAULTS.flushIntervalMs,
      retryInitialMs: options.retryInitialMs ?? DEFAULTS.retryInitialMs,
      retryMaxMs: options.retryMaxMs ?? DEFAULTS.retryMaxMs,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      closeTimeoutMs: options.closeTimeoutMs ?? DEFAULTS.closeTimeoutMs,
      whenFull: options.whenFull ?? 'reject',
    };
    for (const k of ['maxBufferEvents', 'maxBatchEvents', 'maxBatchBytes'] as const) {
      if (!Number.isInteger(this.o[k]) || this.o[k] < 1) {
        throw new RangeError(`trailkeep client: \`${k}\` must be a positive integer, got ${this.o[k]}`);
      }
    }
    this.onUndelivered = options.onUndelivered ?? defaultOnUndelivered;
    this.onRetry = options.onRetry;
  }

  /** Returns counters: delivered, duplicates, pending (buffered + in flight), failed attempts, undelivered. */
  stats(): { delivered: number; duplicates: number; pending: number; attemptsFailed: number; undelivered: number } {
    return {
      delivered: this.delivered,
      duplicates: this.duplicates,
      pending: this.pending(),
      attemptsFailed: this.attemptsFailed,
      undelivered: this.undeliveredTotal,
    };
  }

  /**
   * Buffers events for delivery, giving each an id first when it has none.
   * Returns the events as they will be sent.
   *
   * @throws BufferFullError when the buffer has no room for all of them and
   *   `whenFull` is `'reject'` (those that fit are kept; the rest are
   *   reported). ClientClosedError after `close()`.
   * With `whenFull: 'wait'`, the returned promise waits for room.
   */
  offer(inputs: TrailkeepEventInput[]): Promise<TrailkeepEvent[]> | TrailkeepEvent[] {
    const events = inputs.map((e) => (e.id ? (e as TrailkeepEvent) : { ...e, id: newEventId() }));
    if (this.closing) {
      const items = events.map((event): Undelivered => ({ event, reason: 'closed' }));
      this.report(items);
      throw new ClientClosedError(items);
    }
    if (this.o.whenFull === 'wait') {
      if (this.waiters.length === 0 && this.pending() + events.length <= this.o.maxBufferEvents) {
        this.admit(events);
        return events;
      }
      return new Promise<TrailkeepEvent[]>((resolve, reject) => {
        this.waiters.push({ events, resolve: () => resolve(events), reject });
        this.admitWaiters();
      });
    }
    const room = Math.max(0, this.o.maxBufferEvents - this.pending());
    this.admit(events.slice(0, room));
    if (room < events.length) {
      const items = events.slice(room).map((event): Undelivered => ({ event, reason: 'buffer_full' }));
      this.report(items);
      throw new BufferFullError(items, this.o.maxBufferEvents);
    }
    return events;
  }

  /**
   * Sends what is buffered now and waits until every event offered before
   * the call is delivered or reported, or `closeTimeoutMs` passed (then the
   * events stay buffered and `settled` is false). Never throws.
   */
  async flush(): Promise<FlushResult> {
    const through = this.nextN - 1;
    if (this.oldestPending() > through) return { settled: true, pending: this.pending() };
    this.urgentThrough = Math.max(this.urgentThrough, through);
    this.poke();
    let timer: NodeJS.Timeout | undefined;
    const settled = await new Promise<boolean>((resolve) => {
      const waiter = { through, resolve: () => resolve(true) };
      this.settleWaiters.push(waiter);
      timer = setTimeout(() => {
        this.settleWaiters = this.settleWaiters.filter((w) => w !== waiter);
        resolve(false);
      }, this.o.closeTimeoutMs);
    });
    clearTimeout(timer);
    return { settled, pending: this.pending() };
  }

  /**
   * Stops taking events, delivers what is buffered (for at most
   * `closeTimeoutMs`), reports what is left as `unreachable`, and returns
   * the report. Calling it again returns the same report.
   */
  close(): Promise<DeliveryReport> {
    if (this.closed) return this.closed;
    this.closing = true;
    this.deadline = Date.now() + this.o.closeTimeoutMs;
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) {
      const items = w.events.map((event): Undelivered => ({ event, reason: 'closed' }));
      this.report(items);
      w.reject(new ClientClosedError(items));
    }
    this.urgentThrough = Infinity;
    const giveUp = setTimeout(() => this.stopSending.abort(), this.o.closeTimeoutMs);
    this.poke();
    this.closed = (async () => {
      await (this.loop ?? Promise.resolve());
      clearTimeout(giveUp);
      return {
        delivered: this.delivered,
        duplicates: this.duplicates,
        undelivered: [...this.undelivered],
        undeliveredTotal: this.undeliveredTotal,
      };
    })();
    return this.closed;
  }

  private pending(): number {
    return this.buffer.length + this.inFlight.length;
  }

  private oldestPending(): number {
    return this.inFlight[0]?.n ?? this.buffer[0]?.n ?? Infinity;
  }

  private admit(events: TrailkeepEvent[]): void {
    for (const event of events) {
      this.buffer.push({ n: this.nextN++, event, line: JSON.stringify(event) });
    }
    if (events.length > 0) this.start();
  }

  private admitWaiters(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      // A batch larger than the whole buffer is let in alone, once the buffer is empty.
      const fits = this.pending() + w.events.length <= this.o.maxBufferEvents || this.pending() === 0;
      if (!fits) return;
      this.waiters.shift();
      this.admit(w.events);
      w.resolve();
    }
  }

  private report(items: Undelivered[]): void {
    if (items.length === 0) return;
    this.undeliveredTotal += items.length;
    this.undelivered.push(...items);
    const keep = Math.max(this.o.maxBufferEvents, 10_000);
    if (this.undelivered.length > keep) this.undelivered.splice(0, this.undelivered.length - keep);
    try {
      this.onUndelivered(items);
    } catch {
      // A throwing callback must not stop delivery of the other events;
      // the items are in close()'s report all the same.
    }
  }

  /** Wakes the sender if it is waiting for a batch to fill or for a retry. */
  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private start(): void {
    if (this.loop === null) {
      this.loop = this.run().finally(() => {
        this.loop = null;
        // Events offered while the loop was ending.
        if (this.buffer.length > 0 && !this.stopSending.signal.aborted) this.start();
      });
    } else {
      if (this.buffer.length >= this.o.maxBatchEvents) this.poke();
    }
  }

  /** Sleeps up to `ms`, or until poked or closing gives up. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.stopSending.signal.removeEventListener('abort', done);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wake = done;
      this.stopSending.signal.addEventListener('abort', done);
    });
  }

  private async run(): Promise<void> {
    while (this.buffer.length > 0) {
      if (this.stopSending.signal.aborted) {
        this.giveUp(this.buffer.splice(0), `not sent before the close deadline; last failure: ${this.lastFailure}`, false);
        break;
      }
      const oldest = this.buffer[0]!;
      if (this.buffer.length < this.o.maxBatchEvents && oldest.n > this.urgentThrough) {
        await this.sleep(this.o.flushIntervalMs);
        if (this.buffer.length === 0) break;
      }
      this.inFlight = this.takeBatch();
      await this.deliver();
      this.inFlight = [];
      this.notifySettled();
      this.admitWaiters();
    }
    this.notifySettled();
  }

  private takeBatch(): Pending[] {
    let bytes = 0;
    let count = 0;
    for (const p of this.buffer) {
      const size = Buffer.byteLength(p.line) + 1;
      if (count > 0 && (count >= this.o.maxBatchEvents || bytes + size > this.o.maxBatchBytes)) break;
      bytes += size;
      count++;
    }
    return this.buffer.splice(0, count);
  }

  private notifySettled(): void {
    const oldest = this.oldestPending();
    const ready = this.settleWaiters.filter((w) => w.through < oldest);
    if (ready.length === 0) return;
    this.settleWaiters = this.settleWaiters.filter((w) => w.through >= oldest);
    for (const w of ready) w.resolve();
  }

  private giveUp(batch: Pending[], cause: string, maybeStored: boolean): void {
    this.report(
      batch.map((p): Undelivered => ({ event: p.event, reason: 'unreachable', cause, ...(maybeStored ? { maybeStored } : {}) })),
    );
  }

  /** Delivers `this.inFlight` (which it may shrink), retrying until trailkeep answers or closing gives up. */
  private async deliver(): Promise<void> {
    let attempt = 0;
    let lastCause = 'not sent';
    // Whether a failed attempt may have been stored all the same (a
    // timeout, a cut answer, a 500) as opposed to certainly not (refused
    // connection; 408, 429 and 503, for which trailkeep stores nothing).
    let maybeStored = false;
    while (this.inFlight.length > 0) {
      // The deadline itself, not only its timer: a timer can fire late,
      // and past the deadline the retry delay is 0.
      if (this.closing && Date.now() >= this.deadline) this.stopSending.abort();
      if (this.stopSending.signal.aborted) {
        this.giveUp(this.inFlight, lastCause, maybeStored);
        this.inFlight = [];
        return;
      }
      const outcome = await this.post(this.inFlight);
      if (outcome.kind === 'retry' && this.stopSending.signal.aborted) {
        // Cut by close()'s deadline: trailkeep may have stored it.
        this.giveUp(this.inFlight, attempt > 0 ? lastCause : outcome.cause, true);
        this.inFlight = [];
        return;
      }
      if (outcome.kind === 'ok') {
        this.delivered += this.inFlight.length;
        this.duplicates += outcome.duplicates;
        return;
      }
      if (outcome.kind === 'refused') {
        const { status, error } = outcome;
        const index = error.index;
        if ((status === 400 || status === 413) && typeof index === 'number' && index >= 0 && index < this.inFlight.length) {
          // trailkeep refuses a request whole at its first invalid (or too
          // large) event and stores nothing: report that one, send the
          // others again.
          const [bad] = this.inFlight.splice(index, 1);
          this.report([{ event: bad!.event, reason: 'refused', status, error }]);
          continue;
        }
        if (status === 413 && this.inFlight.length > 1) {
          // The request is over this server's limits (bytes or events per
          // request): send the first half now, the second half next (order
          // kept).
          const half = Math.ceil(this.inFlight.length / 2);
          this.buffer.unshift(...this.inFlight.splice(half));
          continue;
        }
        this.report(this.inFlight.map((p): Undelivered => ({ event: p.event, reason: 'refused', status, error })));
        this.inFlight = [];
        return;
      }
      attempt++;
      this.attemptsFailed++;
      if (outcome.status === undefined ? !outcome.cause.startsWith('ECONNREFUSED') : ![408, 429, 503].includes(outcome.status)) {
        maybeStored = true;
      }
      lastCause = outcome.status !== undefined ? `HTTP ${outcome.status}: ${outcome.cause}` : outcome.cause;
      this.lastFailure = lastCause;
      // At least 10 ms: a `Retry-After: 0` must not become a busy loop.
      let delayMs = Math.max(10, retryDelayMs(attempt, this.o.retryInitialMs, this.o.retryMaxMs, outcome.retryAfterMs));
      if (this.closing) delayMs = Math.min(delayMs, Math.max(0, this.deadline - Date.now()));
      this.onRetry?.({
        attempt,
        delayMs,
        cause: outcome.cause,
        events: this.inFlight.length,
        ...(outcome.status !== undefined ? { status: outcome.status } : {}),
      });
      // A poke (flush, close) must not cut a backoff short: only closing's
      // deadline does (through stopSending).
      const until = Date.now() + delayMs;
      while (Date.now() < until && !this.stopSending.signal.aborted) {
        await this.sleep(until - Date.now());
      }
    }
  }

  private async post(batch: Pending[]): Promise<Outcome> {
    const body = batch.map((p) => p.line).join('\n') + '\n';
    let res: Response;
    try {
      res = await fetch(this.endpoint, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${this.token}`,
          'content-type': 'application/x-ndjson',
        },
        body,
        signal: AbortSignal.any([AbortSignal.timeout(this.o.requestTimeoutMs), this.stopSending.signal]),
      });
    } catch (e) {
      return { kind: 'retry', cause: describeFetchError(e) };
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      // The answer was cut: whether it was stored is unknown, so retry
      // (the ids make a second store impossible).
      return { kind: 'retry', status: res.status, cause: `answer cut: ${describeFetchError(e)}` };
    }
    if (res.ok) {
      let duplicates = 0;
      try {
        const parsed = JSON.parse(text) as { accepted?: { duplicate?: boolean }[] };
        duplicates = (parsed.accepted ?? []).filter((a) => a.duplicate === true).length;
      } catch {
        // A 2xx is trailkeep's acknowledgement; its body only adds counts.
      }
      return { kind: 'ok', duplicates };
    }
    const error = parseError(res.status, text);
    const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
    if (retryable) {
      const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
      return {
        kind: 'retry',
        status: res.status,
        cause: `${error.code}: ${error.message}`,
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      };
    }
    return { kind: 'refused', status: res.status, error };
  }
}

function parseError(status: number, text: string): TrailkeepError {
  try {
    const parsed = JSON.parse(text) as { error?: Partial<TrailkeepError> };
    const e = parsed.error;
    if (e && typeof e.code === 'string') {
      return {
        code: e.code,
        message: typeof e.message === 'string' ? e.message : '',
        index: typeof e.index === 'number' ? e.index : null,
        field: typeof e.field === 'string' ? e.field : null,
      };
    }
  } catch {
    // Not trailkeep's JSON (a proxy in between, say): keep the start of it.
  }
  return { code: `http_${status}`, message: text.slice(0, 200), index: null, field: null };
}
