/**
 * `TrailkeepAuditSink`: an `AuditSink` for AbsoluteJS's
 * `createAudit({ sinks })` (`@absolutejs/audit`).
 *
 * It implements the sink contract as that package declares it: `append`
 * (required), optional `flush`, `close` and `name`; it is a forwarder, so
 * it has no `list` or `prune`. `createAudit` reports a sink's thrown error
 * to its `onError` and counts it in `metrics().sinkErrors`, so a refused
 * append is visible there as well as in `onUndelivered`.
 */
import {
  TrailkeepClient,
  type DeliveryReport,
  type TrailkeepClientOptions,
  type TrailkeepEvent,
} from './client.js';
import { newEventId } from './ids.js';

/** An AbsoluteJS audit event (`@absolutejs/audit` `AuditEvent`). */
export interface AuditEvent {
  /** Milliseconds since the epoch. */
  at: number;
  /** Namespaced kind such as `auth.login`. */
  kind: string;
  actor?: string;
  target?: string;
  metadata?: Record<string, unknown>;
}

/**
 * Returns the trailkeep event for an audit event: `kind` → `type`, `at` →
 * `time`, `actor` → `actor`, `target` → `subject`, `metadata` → `data`
 * (an integrity link from `withIntegrity` travels inside it), and a new id.
 */
export function fromAuditEvent(e: AuditEvent): TrailkeepEvent {
  const at = Number.isFinite(e.at) ? e.at : Date.now();
  const out: TrailkeepEvent = { id: newEventId(at), type: e.kind };
  if (Number.isFinite(e.at)) out.time = new Date(e.at).toISOString();
  if (e.actor !== undefined) out.actor = e.actor;
  if (e.target !== undefined) out.subject = e.target;
  if (e.metadata !== undefined) out.data = e.metadata;
  return out;
}

/**
 * Forwards audit events to a trailkeep stream.
 *
 * ```ts
 * const audit = createAudit({ sinks: [trailkeepAuditSink({ url, stream: 'app', token })] });
 * ```
 */
export class TrailkeepAuditSink {
  readonly name = 'trailkeep';
  readonly client: TrailkeepClient;

  constructor(options: TrailkeepClientOptions) {
    this.client = new TrailkeepClient(options);
  }

  /**
   * Buffers the event (with `whenFull: 'wait'`, the returned promise waits
   * for room).
   *
   * @throws BufferFullError / ClientClosedError.
   */
  append = (event: AuditEvent): void | Promise<void> => {
    const r = this.client.offer([fromAuditEvent(event)]);
    if (r instanceof Promise) return r.then(() => undefined);
  };

  /** Delivers what is buffered; waits at most `closeTimeoutMs`. Never throws. */
  flush = async (): Promise<void> => {
    await this.client.flush();
  };

  /**
   * Delivers what is left (for at most `closeTimeoutMs`); what it could not
   * deliver goes to `onUndelivered`. The sink contract returns nothing:
   * the report is {@link report}.
   */
  close = async (): Promise<void> => {
    await this.client.close();
  };

  /** Closes (if not yet closed) and returns the delivery report: what was delivered, and every event that was not. */
  report = (): Promise<DeliveryReport> => this.client.close();
}

/** Returns a {@link TrailkeepAuditSink}. */
export function trailkeepAuditSink(options: TrailkeepClientOptions): TrailkeepAuditSink {
  return new TrailkeepAuditSink(options);
}
