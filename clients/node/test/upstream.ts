/**
 * The host contracts the adapters must satisfy, restated from the hosts'
 * published type declarations (neither package is on the npm registry this
 * project can reach, so they cannot be dev dependencies):
 *
 * - Grantex `@grantex/destinations` 0.1.x (`src/types.ts`, `src/source.ts`):
 *   `EventSource.addDestination(destination: EventDestination)`; the source
 *   awaits `Promise.allSettled(destinations.map(d => d.send([event])))` per
 *   event, and `stop()` awaits `flush?.()` then `close?.()` of each.
 * - AbsoluteJS `@absolutejs/audit` (`src/index.ts`): `createAudit({ sinks:
 *   AuditSink[] })`; `append` awaits every sink's `append(event)` and reports
 *   a throw to `onError`; `close()` awaits each sink's `flush?.()` then
 *   `close?.()`.
 *
 * The hosts below drive a destination or sink exactly that way, and the
 * `satisfies`/assignments in dropin.test.ts fail to compile if the adapters
 * drift from the contracts.
 */

export interface GrantexEvent {
  id: string;
  type: string;
  createdAt: string;
  data: Record<string, unknown>;
}

export interface EventDestination {
  name: string;
  send(events: GrantexEvent[]): Promise<void>;
  flush?(): Promise<void>;
  close?(): Promise<void>;
}

/** Grantex's EventSource dispatch and stop, without the SSE connection. */
export class GrantexHost {
  private readonly destinations: EventDestination[] = [];
  addDestination(destination: EventDestination): void {
    this.destinations.push(destination);
  }
  async dispatch(event: GrantexEvent): Promise<void> {
    await Promise.allSettled(this.destinations.map((d) => d.send([event])));
  }
  async stop(): Promise<void> {
    for (const d of this.destinations) {
      await d.flush?.();
      await d.close?.();
    }
  }
}

export type AuditEvent = {
  at: number;
  kind: string;
  actor?: string;
  target?: string;
  metadata?: Record<string, unknown>;
};

export type AuditSink = {
  append: (event: AuditEvent) => Promise<void> | void;
  list?: (filter?: unknown) => Promise<AuditEvent[]> | AuditEvent[];
  prune?: (before: number) => Promise<number> | number;
  flush?: () => Promise<void> | void;
  close?: () => Promise<void> | void;
  readonly name?: string;
};

/** AbsoluteJS's createAudit fan-out, flush and close. */
export function createAudit(options: {
  sinks: AuditSink[];
  onError?: (error: unknown, sinkName: string, event: AuditEvent) => void;
}): { append: (e: Omit<AuditEvent, 'at'> & { at?: number }) => Promise<void>; close: () => Promise<void> } {
  const onError = options.onError ?? (() => {});
  return {
    append: async (partial) => {
      const event: AuditEvent = { ...partial, at: partial.at ?? Date.now() };
      await Promise.allSettled(
        options.sinks.map(async (sink, i) => {
          try {
            await sink.append(event);
          } catch (e) {
            onError(e, sink.name ?? `sink-${i}`, event);
            throw e;
          }
        }),
      );
    },
    close: async () => {
      await Promise.allSettled(
        options.sinks.map(async (sink) => {
          await sink.flush?.();
          await sink.close?.();
        }),
      );
    },
  };
}
