/**
 * @trailkeep/client: sends audit events from Node apps to trailkeep.
 *
 * - {@link TrailkeepDestination} for Grantex's `EventSource.addDestination()`;
 * - {@link TrailkeepAuditSink} for AbsoluteJS's `createAudit({ sinks })`;
 * - {@link TrailkeepClient}, the delivery core both use.
 */
export {
  TrailkeepClient,
  UndeliveredError,
  BufferFullError,
  ClientClosedError,
  retryDelayMs,
  parseRetryAfter,
  type TrailkeepClientOptions,
  type TrailkeepEvent,
  type TrailkeepEventInput,
  type TrailkeepError,
  type Undelivered,
  type UndeliveredReason,
  type DeliveryReport,
  type FlushResult,
  type RetryInfo,
} from './client.js';
export { TrailkeepDestination, fromGrantexEvent, type GrantexEvent, type TrailkeepDestinationOptions } from './grantex.js';
export { TrailkeepAuditSink, trailkeepAuditSink, fromAuditEvent, type AuditEvent } from './absolute.js';
export { newEventId } from './ids.js';
