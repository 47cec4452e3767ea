/**
 * `TrailkeepDestination`: a destination for Grantex's
 * `@grantex/destinations` `EventSource.addDestination()`, beside (or
 * instead of) its Datadog, Splunk, S3, BigQuery and Kafka destinations.
 *
 * It implements Grantex's `EventDestination` contract as that package
 * declares it (`name`, `send(events)`, optional `flush()` and `close()`;
 * `EventSource.stop()` calls `flush()` then `close()`). Grantex's
 * `EventSource` awaits `send()` for every event but discards its errors
 * (`Promise.allSettled`), so this destination never relies on a rejection
 * being seen: every event it cannot deliver also goes to `onUndelivered`
 * and into `close()`'s report.
 */
import {
  TrailkeepClient,
  type DeliveryReport,
  type TrailkeepClientOptions,
  type TrailkeepEvent,
} from './client.js';
import { newEventId } from './ids.js';

/** A Grantex event (`@grantex/destinations` `GrantexEvent`). */
export interface GrantexEvent {
  id: string;
  type: string;
  createdAt: string;
  data: Record<string, unknown>;
}

export interface TrailkeepDestinationOptions extends TrailkeepClientOptions {
  /** Grantex's name for `maxBatchEvents` (`DestinationConfig.batchSize`). */
  batchSize?: number;
}

/** Returns the trailkeep event for a Grantex event: same id, type, `createdAt` and `data`. */
export function fromGrantexEvent(e: GrantexEvent): TrailkeepEvent {
  const { id, type, createdAt, data, ...rest } = e as GrantexEvent & Record<string, unknown>;
  const out: TrailkeepEvent = { id: typeof id === 'string' && id !== '' ? id : newEventId(), type };
  if (createdAt !== undefined) out.createdAt = createdAt;
  // trailkeep refuses unknown top-level fields rather than drop them:
  // anything else Grantex adds travels under `data`.
  const extra = Object.keys(rest).length > 0 ? rest : undefined;
  if (data !== undefined || extra !== undefined) out.data = { ...extra, ...data };
  return out;
}

/**
 * Sends Grantex events to a trailkeep stream, with Grantex's event ids (so
 * an event Grantex re-sends is stored once).
 *
 * ```ts
 * source.addDestination(new TrailkeepDestination({
 *   url: 'https://trailkeep.internal:7470', stream: 'grantex', token: process.env.TRAILKEEP_TOKEN!,
 * }));
 * ```
 */
export class TrailkeepDestination {
  readonly name = 'trailkeep';
  /** The delivery core: `stats()`, and `close()`'s report. */
  readonly client: TrailkeepClient;

  constructor(options: TrailkeepDestinationOptions) {
    const { batchSize, ...rest } = options;
    this.client = new TrailkeepClient({
      ...rest,
      ...(rest.maxBatchEvents === undefined && batchSize !== undefined ? { maxBatchEvents: batchSize } : {}),
    });
  }

  /**
   * Buffers the events for delivery; resolves once they are buffered (not
   * once delivered: that is what `flush()` waits for).
   *
   * @throws BufferFullError / ClientClosedError (the refused events are
   *   reported to `onUndelivered` as well, since Grantex's EventSource
   *   discards this rejection).
   */
  async send(events: GrantexEvent[]): Promise<void> {
    await this.client.offer(events.map(fromGrantexEvent));
  }

  /** Delivers what is buffered; waits at most `closeTimeoutMs`. Never throws. */
  async flush(): Promise<void> {
    await this.client.flush();
  }

  /**
   * Delivers what is left (for at most `closeTimeoutMs`); what it could not
   * deliver goes to `onUndelivered`. Grantex's contract returns nothing:
   * the report is {@link report}.
   */
  async close(): Promise<void> {
    await this.client.close();
  }

  /** Closes (if not yet closed) and returns the delivery report: what was delivered, and every event that was not. */
  report(): Promise<DeliveryReport> {
    return this.client.close();
  }
}
