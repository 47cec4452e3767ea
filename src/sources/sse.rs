//! The SSE source: connect, read `text/event-stream`, append in batches,
//! store the resume position after each commit, reconnect on any drop.
//!
//! Parsing of the event-stream format (multi-line `data:`, `event:`, `id:`,
//! `retry:`, comments, CRLF) is `eventsource-stream`'s. Every event that
//! cannot be stored (not JSON, not an object, invalid) is counted, logged
//! with its position and kept in the rejected record; nothing is skipped
//! silently. Events whose type the filter excludes are counted as filtered.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource as _};
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::backfill::{self, later};
use super::mapping::{Fields, Mapped, map_item};
use super::{Secret, SourceConfig};
use crate::ingest::Appender;
use crate::store::{RejectedEvent, SourceState, Store};

/// Most events appended in one group.
const MAX_BATCH: usize = 500;
/// How long to wait for more ready events before appending a batch.
const LINGER: Duration = Duration::from_millis(2);

enum End {
    /// The upstream closed the stream.
    Eof,
    /// Shutdown was requested.
    Shutdown,
}

struct Runner {
    node: crate::node::NodeId,
    cfg: SourceConfig,
    key: Secret,
    client: reqwest::Client,
    appender: Appender,
    store: Arc<dyn Store>,
    state: SourceState,
    server_retry: Option<Duration>,
    connections: u64,
    keeper: crate::lease::LeaseKeeper,
    /// The lease this connection runs under (its writes are fenced by it).
    lease: Option<crate::store::Lease>,
    lease_lost: bool,
}

/// Runs the source until `shutdown` turns true.
///
/// Exactly one node runs a source: the one holding the lease `source:NAME`
/// (kept by a [`crate::lease::LeaseKeeper`]); the others stand by. The
/// source's state is read only after taking the lease (it is where the last
/// holder left it), and every state write is fenced by the lease.
pub async fn run(
    node: crate::node::NodeId,
    cfg: SourceConfig,
    key: Secret,
    client: reqwest::Client,
    appender: Appender,
    store: Arc<dyn Store>,
    mut shutdown: watch::Receiver<bool>,
) {
    let keeper = crate::lease::LeaseKeeper::keep(
        store.clone(),
        &format!("source:{}", cfg.name),
        &node,
        cfg.lease_ttl,
    )
    .await;
    let mut r = Runner {
        keeper,
        node,
        cfg,
        key,
        client,
        appender,
        store,
        state: SourceState::default(),
        server_retry: None,
        connections: 0,
        lease: None,
        lease_lost: false,
    };
    for name in [
        "trailkeep_source_connected",
        "trailkeep_source_last_event_timestamp_seconds",
        "trailkeep_source_events_total",
        "trailkeep_source_reconnects_total",
    ] {
        crate::telemetry::register(name, "source", &r.cfg.name);
    }
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        match r.keeper.held() {
            Some(l) => {
                let fresh = r.lease.as_ref().is_none_or(|o| o.token != l.token);
                r.lease = Some(l);
                r.lease_lost = false;
                if fresh {
                    r.load_state().await;
                    if let Some(t) = r.state.last_event_time.as_deref().and_then(unix_time) {
                        last_event_gauge(&r.cfg.name).set(t);
                    }
                    tracing::info!(source = %r.cfg.name, node = %r.node, "running the source here");
                }
            }
            None => {
                r.lease = None;
                // Another node runs this source: stand by.
                tokio::select! {
                    () = r.keeper.changed() => continue,
                    _ = shutdown.changed() => break,
                }
            }
        }
        let before = r.connections;
        let outcome = r.connect_once(&mut shutdown).await;
        r.state.connected = false;
        metrics::gauge!("trailkeep_source_connected", "source" => r.cfg.name.clone()).set(0.0);
        match outcome {
            Ok(End::Shutdown) => {
                r.persist().await;
                break;
            }
            Ok(End::Eof) => {
                tracing::info!(source = %r.cfg.name, "upstream closed the event stream; reconnecting")
            }
            Err(e) => {
                tracing::warn!(source = %r.cfg.name, error = %e, "event source failed; reconnecting");
                r.state.last_error = Some(e);
                r.state.last_error_at = Some(super::now());
            }
        }
        if r.lease_lost {
            tracing::warn!(source = %r.cfg.name, "lost the source's lease to another node; standing by");
            r.lease = None;
            continue;
        }
        r.state.reconnects += 1;
        metrics::counter!("trailkeep_source_reconnects_total", "source" => r.cfg.name.clone())
            .increment(1);
        r.persist().await;
        failures = if r.connections > before {
            0
        } else {
            failures.saturating_add(1)
        };
        let delay = r.reconnect_delay(failures);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
    }
    // Hand the source over at once rather than after the lease expires.
    r.keeper.release().await;
}

/// Returns a uniformly random duration in `[0, max]` (full jitter).
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return max;
    }
    let frac = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(frac)
}

impl Runner {
    /// Capped exponential backoff with full jitter; never below the
    /// server's `retry:`.
    fn reconnect_delay(&self, failures: u32) -> Duration {
        reconnect_delay(
            self.cfg.reconnect_initial,
            self.cfg.reconnect_max,
            self.server_retry,
            failures,
        )
    }

    /// Reads the state as the last holder left it.
    async fn load_state(&mut self) {
        let stored = self
            .store
            .source_states()
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|s| s.name == self.cfg.name));
        self.state = match stored {
            Some(s) if s.stream == self.cfg.stream => SourceState {
                connected: false,
                ..s
            },
            // A new source, or one pointed at another stream: start afresh.
            _ => SourceState {
                name: self.cfg.name.clone(),
                stream: self.cfg.stream.clone(),
                ..SourceState::default()
            },
        };
        self.persist().await;
    }

    /// Writes the state, fenced by the lease; a fenced write means another
    /// node took the source over.
    async fn persist(&mut self) {
        self.state.updated = super::now();
        match self
            .store
            .put_source_state(self.state.clone(), self.lease.as_ref())
            .await
        {
            Ok(()) => {}
            Err(crate::store::StoreError::Fenced(_)) => self.lease_lost = true,
            Err(e) => {
                tracing::warn!(source = %self.cfg.name, error = %e, "cannot store source state")
            }
        }
    }

    /// Checks that the keeper still holds the lease this connection runs
    /// under; losing it (expired, or another token) ends the connection.
    fn still_held(&mut self) -> Result<(), String> {
        let same = match (self.keeper.held(), &self.lease) {
            (Some(now), Some(ours)) => now.token == ours.token,
            _ => false,
        };
        if same {
            Ok(())
        } else {
            self.lease_lost = true;
            Err("lease lost to another node".into())
        }
    }

    async fn connect_once(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<End, String> {
        let mut url = self.cfg.url.clone();
        if !self.cfg.types.is_empty() {
            url.query_pairs_mut()
                .append_pair(&self.cfg.types_param, &self.cfg.types.join(","));
        }
        let mut req = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-cache");
        req = self.cfg.authorize(req, &self.key);
        if let Some(id) = &self.state.last_event_id {
            req = req.header("last-event-id", id.as_str());
        }
        let policy = self.cfg.policy();
        let resp = tokio::select! {
            r = policy.send(req) => r.map_err(|e| e.to_string())?,
            _ = shutdown.changed() => return Ok(End::Shutdown),
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("upstream answered HTTP {status}"));
        }
        self.connections += 1;
        self.state.connected = true;
        metrics::gauge!("trailkeep_source_connected", "source" => self.cfg.name.clone()).set(1.0);
        self.persist().await;
        if self.lease_lost {
            return Err("lease lost to another node".into());
        }
        tracing::info!(source = %self.cfg.name, resume_from = ?self.state.last_event_id, "event source connected");
        if self.cfg.backfill.is_some() {
            self.backfill().await;
        }
        let mut events = frames(limited(
            resp.bytes_stream(),
            self.cfg.max_line_bytes,
            self.cfg.max_event_bytes,
        ));
        let mut n = 0u64;
        let mut last_id = self.state.last_event_id.clone();
        // Per the SSE spec a frame without `id:` inherits the previous id
        // (see `map_frame`).
        let mut prev_frame_id = String::new();
        loop {
            let first = loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return Ok(End::Shutdown),
                    () = self.keeper.changed() => self.still_held()?,
                    item = events.next() => break item,
                }
            };
            let Some(first) = first else {
                return Ok(End::Eof);
            };
            let mut items = vec![first];
            let mut ended = false;
            while items.len() < MAX_BATCH {
                match tokio::time::timeout(LINGER, events.next()).await {
                    Ok(Some(it)) => items.push(it),
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let received = super::now();
            let mut batch = Vec::new();
            let mut failure = None;
            for item in items {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(EventStreamError::Transport(BodyError::Transport(ReadError::Http(e)))) => {
                        failure = Some(format!("stream dropped: {}", crate::net::describe(&e)));
                        break;
                    }
                    Err(EventStreamError::Transport(BodyError::Transport(
                        ReadError::TooLarge(what),
                    ))) => {
                        // Rejected like malformed input; the rest of the
                        // event is never read (the connection is dropped).
                        n += 1;
                        self.reject(
                            &received,
                            &position(self.connections, n, last_id.as_deref()),
                            what.clone(),
                            "",
                        )
                        .await?;
                        failure = Some(what);
                        break;
                    }
                    Err(e) => {
                        // Invalid UTF-8 or unparsable framing: record, then reconnect.
                        let e = match e {
                            EventStreamError::Transport(utf8) => utf8.to_string(),
                            other => other.to_string(),
                        };
                        n += 1;
                        self.reject(
                            &received,
                            &position(self.connections, n, last_id.as_deref()),
                            format!("malformed event stream: {e}"),
                            "",
                        )
                        .await?;
                        failure = Some(format!("malformed event stream: {e}"));
                        break;
                    }
                };
                n += 1;
                if let Some(r) = ev.retry {
                    self.server_retry = Some(r);
                }
                if !ev.id.is_empty() {
                    last_id = Some(ev.id.clone());
                }
                let pos = || position(self.connections, n, last_id.as_deref());
                match map_frame(
                    &ev,
                    &mut prev_frame_id,
                    &self.cfg.fields,
                    &self.cfg.name,
                    |t| self.cfg.wants(t),
                    &received,
                ) {
                    None => continue,
                    Some(Mapped::Event(e)) => batch.push(e),
                    Some(Mapped::Filtered) => {
                        self.state.filtered += 1;
                        metrics::counter!("trailkeep_source_events_total", "source" => self.cfg.name.clone(), "outcome" => "filtered").increment(1);
                    }
                    Some(Mapped::Rejected(reason)) => {
                        self.reject(&received, &pos(), reason, &ev.data).await?
                    }
                }
            }
            if !batch.is_empty() {
                let times: Vec<String> = batch.iter().map(|e| e.time.clone()).collect();
                let res = self
                    .appender
                    .append(self.cfg.stream.clone(), batch)
                    .await
                    .map_err(|e| e.to_string())?;
                for (a, t) in res.accepted.iter().zip(&times) {
                    if a.duplicate {
                        self.state.duplicates += 1;
                    } else {
                        self.state.taken += 1;
                        self.state.last_event_time = later(self.state.last_event_time.take(), t);
                    }
                }
                let new = res.accepted.iter().filter(|a| !a.duplicate).count() as u64;
                metrics::counter!("trailkeep_source_events_total", "source" => self.cfg.name.clone(), "outcome" => "taken").increment(new);
                if new > 0 {
                    last_event_gauge(&self.cfg.name)
                        .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
                }
            }
            // Only now, after the commit, does the resume position advance.
            self.state.last_event_id = last_id.clone();
            self.persist().await;
            if self.lease_lost {
                return Err("lease lost to another node".into());
            }
            self.still_held()?;
            if let Some(f) = failure {
                return Err(f);
            }
            if ended {
                return Ok(End::Eof);
            }
        }
    }

    async fn reject(
        &mut self,
        at: &str,
        position: &str,
        reason: String,
        raw: &str,
    ) -> Result<(), String> {
        tracing::warn!(source = %self.cfg.name, %position, %reason, "rejected an upstream event");
        self.state.rejected += 1;
        metrics::counter!("trailkeep_source_events_total", "source" => self.cfg.name.clone(), "outcome" => "rejected").increment(1);
        let rec = RejectedEvent {
            source: self.cfg.name.clone(),
            at: at.to_owned(),
            position: position.to_owned(),
            reason,
            raw: super::truncate(raw, 64 * 1024),
        };
        self.store
            .add_rejected(rec)
            .await
            .map_err(|e| format!("cannot record a rejected event: {e}"))
    }

    async fn backfill(&mut self) {
        let since = self.state.last_event_time.clone();
        let res = backfill::run(
            &self.cfg,
            &self.client,
            &self.key,
            &self.appender,
            self.store.as_ref(),
            since.as_deref(),
            &|_| {},
        )
        .await;
        match res {
            Ok(s) => {
                self.state.taken += s.taken;
                self.state.duplicates += s.duplicates;
                self.state.filtered += s.filtered;
                self.state.rejected += s.rejected;
                if let Some(t) = s.last_event_time {
                    self.state.last_event_time = later(self.state.last_event_time.take(), &t);
                }
                tracing::info!(source = %self.cfg.name, taken = s.taken, duplicates = s.duplicates, pages = s.pages, "backfill done");
            }
            Err(e) => {
                tracing::warn!(source = %self.cfg.name, error = %e, "backfill failed; streaming continues");
                self.state.last_error = Some(format!("backfill: {e}"));
                self.state.last_error_at = Some(super::now());
            }
        }
        self.persist().await;
    }
}

/// Capped exponential backoff with full jitter: uniform in
/// `[0, min(max, initial * 2^failures)]`, but never below the server's
/// `retry:` (itself capped by `max`).
fn reconnect_delay(
    initial: Duration,
    max: Duration,
    server_retry: Option<Duration>,
    failures: u32,
) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.min(16)).min(max);
    let d = jitter(exp);
    match server_retry {
        Some(r) => d.max(r.min(max)),
        None => d,
    }
}

/// Why the upstream's bytes stopped being read.
#[derive(Debug)]
enum ReadError {
    /// The transport failed.
    Http(reqwest::Error),
    /// A line or an event outgrew its limit.
    TooLarge(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(e) => f.write_str(&crate::net::describe(e)),
            Self::TooLarge(m) => f.write_str(m),
        }
    }
}

/// Why an SSE body stopped, below the event-stream format.
#[derive(Debug)]
pub(crate) enum BodyError<E> {
    /// The connection failed.
    Transport(E),
    /// A byte at this offset of the body can never be UTF-8.
    Utf8(u64),
}

impl<E: std::fmt::Display> std::fmt::Display for BodyError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => e.fmt(f),
            Self::Utf8(at) => write!(f, "not UTF-8 at byte {at} of the body"),
        }
    }
}

/// Counts line and event sizes of an event stream as the bytes arrive.
#[derive(Debug, Default)]
struct Sizes {
    line: usize,
    event: usize,
    after_cr: bool,
}

impl Sizes {
    /// Takes `chunk`; an error when a line or an event outgrows its limit.
    fn take(&mut self, chunk: &[u8], max_line: usize, max_event: usize) -> Result<(), String> {
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false, // the LF of a CRLF
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if self.line == 0 {
                        self.event = 0; // a blank line ends the event
                    }
                    self.line = 0;
                }
                _ => {
                    self.after_cr = false;
                    self.line += 1;
                    self.event += 1;
                    if self.line > max_line {
                        return Err(format!(
                            "a line over max_line_bytes ({max_line} bytes); not read further"
                        ));
                    }
                    if self.event > max_event {
                        return Err(format!(
                            "an event over max_event_bytes ({max_event} bytes); not read further"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The upstream's bytes, cut off with [`ReadError::TooLarge`] as soon as a
/// line or an event (its lines up to the blank line) outgrows its limit:
/// the parser never buffers more than that.
fn limited(
    inner: impl futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>>,
    max_line: usize,
    max_event: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, ReadError>> {
    let mut sizes = Sizes::default();
    let mut over = false;
    inner
        .map(move |chunk| {
            let chunk = chunk.map_err(ReadError::Http)?;
            sizes
                .take(&chunk, max_line, max_event)
                .map_err(ReadError::TooLarge)?;
            Ok(chunk)
        })
        .take_while(move |r| {
            // Nothing after the first refusal.
            let go = !over;
            over |= matches!(r, Err(ReadError::TooLarge(_)));
            std::future::ready(go)
        })
}

/// The frames of an SSE body, as its chunks arrive.
///
/// The body is checked for UTF-8 first: `eventsource-stream` 0.2 keeps
/// everything from a byte that can never be UTF-8 in its buffer until the
/// connection closes, so an open stream would go silent (no events, no
/// error) while the buffer grew (a fuzzing finding, FUZZING.md). The
/// complete part of the chunk before such a byte is still passed on, then
/// the body ends with [`BodyError::Utf8`]. A character cut by a chunk
/// boundary is not an error.
pub(crate) fn frames<S, E>(
    body: S,
) -> impl futures_util::Stream<Item = Result<eventsource_stream::Event, EventStreamError<BodyError<E>>>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
{
    // (bytes of an incomplete character carried from the previous chunk,
    // offset of the chunk in the body, whether the body already failed)
    let state = (Vec::<u8>::new(), 0u64, false);
    body.scan(state, |(carry, offset, failed), item| {
        let out = if *failed {
            None
        } else {
            Some(match item {
                Err(e) => vec![Err(BodyError::Transport(e))],
                Ok(chunk) => {
                    let start = *offset;
                    *offset += chunk.len() as u64;
                    let joined;
                    let (bytes, skip) = if carry.is_empty() {
                        (&chunk[..], 0)
                    } else {
                        joined = [&carry[..], &chunk[..]].concat();
                        (&joined[..], carry.len())
                    };
                    match std::str::from_utf8(bytes) {
                        Ok(_) => {
                            carry.clear();
                            vec![Ok(chunk)]
                        }
                        Err(e) if e.error_len().is_none() => {
                            *carry = bytes[e.valid_up_to()..].to_vec();
                            vec![Ok(chunk)]
                        }
                        Err(e) => {
                            *failed = true;
                            // The carried bytes were passed on with the
                            // previous chunk; `valid_up_to` counts them.
                            let valid = e.valid_up_to().saturating_sub(skip);
                            let at = (start + e.valid_up_to() as u64).saturating_sub(skip as u64);
                            vec![Ok(chunk.slice(..valid)), Err(BodyError::Utf8(at))]
                        }
                    }
                }
            })
        };
        std::future::ready(out)
    })
    .flat_map(futures_util::stream::iter)
    .eventsource()
}

/// What one frame's data becomes: `None` for a frame without data (a
/// keep-alive, or `id:`/`retry:` alone), else the mapped event, or a
/// refusal when the data is not JSON or does not map. `prev_frame_id`
/// carries the previous frame's id: per the SSE spec a frame without `id:`
/// inherits it, and only an id that changed was set by this frame and may
/// name its event.
pub(crate) fn map_frame(
    ev: &eventsource_stream::Event,
    prev_frame_id: &mut String,
    fields: &Fields,
    source: &str,
    wants: impl Fn(&str) -> bool,
    received: &str,
) -> Option<Mapped> {
    if ev.data.is_empty() {
        return None;
    }
    let value: serde_json::Value = match serde_json::from_str(&ev.data) {
        Ok(v) => v,
        Err(e) => return Some(Mapped::Rejected(format!("data is not JSON: {e}"))),
    };
    // The parsed value no longer says how a number was written; its text
    // does (see `jcs::number_change`).
    if let Some(c) = crate::jcs::first_changed_number(ev.data.as_bytes()) {
        return Some(Mapped::Rejected(super::mapping::number_reason(&c)));
    }
    let fresh_id = !ev.id.is_empty() && ev.id != *prev_frame_id;
    prev_frame_id.clone_from(&ev.id);
    let sse_id = fresh_id.then_some(ev.id.as_str());
    Some(map_item(value, fields, source, sse_id, wants, received))
}

fn position(connection: u64, n: u64, last_id: Option<&str>) -> String {
    format!(
        "connection {connection}, event {n}, after id {}",
        last_id.unwrap_or("-")
    )
}

/// `trailkeep_source_last_event_timestamp_seconds` of a source.
fn last_event_gauge(source: &str) -> metrics::Gauge {
    metrics::gauge!("trailkeep_source_last_event_timestamp_seconds", "source" => source.to_owned())
}

/// An RFC 3339 time as Unix seconds.
fn unix_time(t: &str) -> Option<f64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp() as f64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Polls [`frames`] over `chunks` on a connection that stays open,
    /// returning every item until it would wait.
    fn open_connection(chunks: &[&[u8]]) -> Vec<Result<eventsource_stream::Event, String>> {
        use futures_util::Stream as _;
        use std::task::{Context, Poll, Waker};
        let body = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(c))),
        )
        .chain(futures_util::stream::pending());
        let mut s = std::pin::pin!(frames(body));
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(item)) = s.as_mut().poll_next(&mut cx) {
            out.push(item.map_err(|e| e.to_string()));
        }
        out
    }

    /// Fuzzing finding (FUZZING.md, `sse`): `eventsource-stream` 0.2 keeps
    /// everything from a byte that is not UTF-8 in its buffer until the
    /// connection closes, so an open stream went silent (no events, no
    /// error, nothing recorded) and the buffer grew with every chunk.
    #[test]
    fn invalid_utf8_is_reported_while_the_connection_is_open() {
        let items = open_connection(&[
            b"data: {\"type\":\"a\"}\n\ndata: \xff\n\n",
            b"data: {\"type\":\"b\"}\n\n",
        ]);
        assert_eq!(
            items
                .first()
                .and_then(|i| i.as_ref().ok())
                .map(|e| e.data.as_str()),
            Some("{\"type\":\"a\"}"),
            "{items:?}"
        );
        assert!(
            items
                .get(1)
                .is_some_and(|i| i.as_ref().is_err_and(|e| e.contains("UTF-8"))),
            "{items:?}"
        );
        assert_eq!(items.len(), 2, "the stream ends at the error: {items:?}");
        // A character cut by a chunk boundary is not an error.
        let items = open_connection(&[b"data: \"\xc3", b"\xa9\"\n\n"]);
        assert_eq!(
            items
                .iter()
                .map(|i| i.as_ref().map(|e| e.data.as_str()))
                .collect::<Vec<_>>(),
            [Ok("\"\u{e9}\"")]
        );
    }

    #[test]
    fn sizes_count_lines_and_events_across_chunks() {
        let mut s = Sizes::default();
        // Events separated by blank lines (LF, CRLF, CR) never add up.
        for _ in 0..100 {
            s.take(b"data: 0123456789\r\n", 20, 40).unwrap();
            s.take(b"data: x\r", 20, 40).unwrap();
            s.take(b"\n\r\n", 20, 40).unwrap();
            s.take(b"id: 1\n\n", 20, 40).unwrap();
        }
        // One line, split over chunks, over the line limit.
        let mut s = Sizes::default();
        s.take(b"data: 0123456789", 20, 40).unwrap();
        assert!(
            s.take(b"0123456789", 20, 40)
                .unwrap_err()
                .contains("max_line_bytes")
        );
        // Short lines, no blank line: over the event limit.
        let mut s = Sizes::default();
        let e = (0..10)
            .find_map(|_| s.take(b"data: 0123456789\n", 20, 40).err())
            .unwrap();
        assert!(e.contains("max_event_bytes"), "{e}");
    }

    #[test]
    fn backoff_is_capped_jittered_and_honours_retry() {
        for failures in 0..40 {
            let d = reconnect_delay(100 * MS, 5_000 * MS, None, failures);
            assert!(
                d <= (100 * MS)
                    .saturating_mul(1 << failures.min(16))
                    .min(5_000 * MS),
                "{failures}: {d:?}"
            );
        }
        // The server's retry: is a floor, capped by the maximum.
        for failures in 0..10 {
            assert!(reconnect_delay(10 * MS, 5_000 * MS, Some(700 * MS), failures) >= 700 * MS);
            assert!(
                reconnect_delay(10 * MS, 500 * MS, Some(Duration::from_secs(60)), failures)
                    <= 500 * MS
            );
        }
        // Full jitter spreads the draws.
        let draws: std::collections::HashSet<u128> = (0..20)
            .map(|_| reconnect_delay(MS, Duration::from_secs(10), None, 20).as_nanos())
            .collect();
        assert!(draws.len() > 10, "{draws:?}");
    }
}
