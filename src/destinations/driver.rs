//! The driver every destination shares.
//!
//! One task per destination, under the lease `destination:NAME` (so one
//! node drives it). Each round, per stream the filter takes: read the
//! committed events after the cursor, cut a batch (max events, max bytes;
//! a batch that is not full waits until its oldest event is `max_age` old),
//! keep the events whose type passes, and deliver. A retryable failure is
//! retried with capped exponential backoff and full jitter, never shorter
//! than the receiver's `Retry-After` (itself capped at `backoff_max`), until it is accepted or the driver
//! stops (the cursor then stays: the batch is sent again after a restart).
//! A permanent failure becomes a dead letter and the cursor moves past it in
//! the same transaction. The cursor moves only after the destination
//! accepted: delivery is at least once and never skips.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::{Batch, DeliveryError, Destination, OutEvent};
use crate::event::filter::Filter;
use crate::event::{format_received, stored_json};
use crate::store::{DeadLetter, DeliveryCursor, Lease, Store, StoreError};

/// Driver settings of one destination.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// Destination name.
    pub name: String,
    /// Streams and types it takes.
    pub filter: Filter,
    /// Most events per batch.
    pub max_events: usize,
    /// Most bytes of event JSON per batch.
    pub max_bytes: usize,
    /// A batch that is not full waits until its oldest event is this old.
    pub max_age: Duration,
    /// How often to look for new events when idle.
    pub poll: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Let hot deletion pass this destination's cursor.
    pub archive_past: bool,
    /// Lease time to live.
    pub lease_ttl: Duration,
    /// Streams delivered at the same time (each stream's batches stay in order).
    pub concurrency: usize,
    /// The archive, to feed a destination whose cursor fell behind the hot
    /// store (its events were archived and deleted past it, `archive_past`).
    pub archive: Option<Arc<dyn ColdFeed>>,
    /// Changes after each commit of this node (wired in by `server`): an
    /// idle driver wakes on it at once instead of at its next poll.
    pub commits: Option<watch::Receiver<u64>>,
}

impl DriverSettings {
    /// Defaults for `name`: 500 events, 4 MiB, 1 s, poll 200 ms, backoff 500 ms to 60 s.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            filter: Filter::default(),
            max_events: 500,
            max_bytes: 4 << 20,
            max_age: Duration::from_secs(1),
            poll: Duration::from_millis(200),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            archive_past: false,
            lease_ttl: Duration::from_secs(15),
            concurrency: 1,
            archive: None,
            commits: None,
        }
    }
}

/// Why archived events could not be read for a destination.
pub type ColdFeedError = Box<dyn std::error::Error + Send + Sync>;

/// Where a destination whose cursor fell behind the hot store reads the
/// events it missed: the archive, wired in by `server` (destinations do
/// not read archive objects themselves; the archive checks what it hands
/// over: manifest signature, object SHA-256, every hash and link).
#[async_trait::async_trait]
pub trait ColdFeed: Send + Sync + std::fmt::Debug {
    /// Events of `stream` from `from_seq` on, at most `max`, from the
    /// archived batch that holds `from_seq`; `None` when none holds it.
    ///
    /// # Errors
    /// What failed (the archive's own error, as the source), logged and
    /// retried by the driver.
    async fn read(
        &self,
        stream: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Option<Vec<crate::store::StoredEvent>>, ColdFeedError>;
}

/// What the driver has done, for status pages and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriverStatus {
    /// Events accepted by the destination since this driver started (the
    /// stored total is the cursors' `delivered`).
    pub delivered: u64,
    /// Batches accepted.
    pub batches: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Batches sent to the dead letters.
    pub dead_letters: u64,
    /// Last failure: what happened, never a credential, a URL's query or
    /// userinfo, or the receiver's body.
    pub last_error: Option<String>,
    /// The receiver's answer to the last failure: status and a redacted
    /// excerpt of its body (at most 512 characters). Admins only.
    pub last_error_detail: Option<String>,
    /// When.
    pub last_error_at: Option<String>,
    /// Whether an operator paused it.
    pub paused: bool,
}

/// A handle on a running driver: status, pause, resume.
#[derive(Clone, Default)]
pub struct DriverHandle {
    status: Arc<Mutex<DriverStatus>>,
}

impl DriverHandle {
    /// The current status.
    pub fn status(&self) -> DriverStatus {
        self.lock().clone()
    }

    /// Pauses (after the batch in flight) or resumes delivery.
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    /// Test hook (the `testing` feature): records `error` as the last
    /// failure, as a failed delivery would.
    #[cfg(feature = "testing")]
    pub fn record_error_for_test(&self, error: &str) {
        let mut s = self.lock();
        s.last_error = Some(error.to_owned());
        s.last_error_at = Some("2026-01-01T00:00:00Z".to_owned());
        s.last_error_detail = Some(format!("500: {error}"));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DriverStatus> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

const LEASE_PREFIX: &str = "destination:";

/// Reads a stored body. One that is not an event is corruption: it stops
/// the destination (and says where) rather than going out, or being
/// filtered out, as an event with an empty type (issue #14).
fn fields_of<'a>(
    stream: &str,
    seq: u64,
    body: &'a str,
) -> Result<crate::event::StoredFields<'a>, StoreError> {
    crate::event::StoredFields::read(body).map_err(|e| {
        StoreError::Corrupt(format!(
            "stream {stream} seq {seq}: the stored body is not an event ({e}); run trailkeep verify"
        ))
    })
}

/// Why a round stopped early.
enum Stop {
    Shutdown,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Runs `dest` until `stop` turns true. Returns after the batch in flight.
pub async fn run(
    store: Arc<dyn Store>,
    node: crate::node::NodeId,
    dest: Arc<dyn Destination>,
    settings: DriverSettings,
    handle: DriverHandle,
    mut stop: watch::Receiver<bool>,
) {
    // The lease is taken and renewed in the background every third of its
    // TTL (a few writes a minute, not one per poll), also while a batch is
    // being retried for a long time; a standby node tries as often.
    let keeper = crate::lease::LeaseKeeper::keep(
        store.clone(),
        &format!("{LEASE_PREFIX}{}", settings.name),
        &node,
        settings.lease_ttl,
    )
    .await;
    let mut commits = settings.commits.clone();
    if let Some(c) = &mut commits {
        c.mark_unchanged();
    }
    loop {
        if *stop.borrow() {
            break;
        }
        let held = keeper.held();
        let worked = match (&held, handle.status().paused) {
            (Some(lease), false) => {
                match round(&store, dest.as_ref(), &settings, &handle, lease, &mut stop).await {
                    Ok(w) => w,
                    Err(Stop::Shutdown) => break,
                    Err(Stop::Store(e)) => {
                        record_error(&handle, &format!("store: {e}"), None);
                        tracing::error!(destination = %settings.name, error = %crate::report::Chain(&e), "destination round failed; will retry");
                        false
                    }
                }
            }
            _ => false,
        };
        if !worked {
            // Idle: the next commit of this node, the poll (another node's
            // commits, a partial batch coming of age) or the stop.
            tokio::select! {
                () = tokio::time::sleep(settings.poll) => {}
                _ = stop.changed() => {}
                () = committed(&mut commits) => {}
            }
        }
    }
    keeper.release().await;
}

/// Resolves at the next commit (never without a commit signal). A commit
/// while the driver was busy counts: `changed` sees what it has not seen.
async fn committed(commits: &mut Option<watch::Receiver<u64>>) {
    match commits {
        Some(c) => {
            if c.changed().await.is_err() {
                // The appender is gone (stopping): poll and stop as before.
                *commits = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

fn record_error(handle: &DriverHandle, message: &str, detail: Option<&str>) {
    let mut s = handle.lock();
    // Destinations keep URLs out of messages; this is the backstop.
    s.last_error = Some(crate::net::redact_urls(message));
    s.last_error_detail = detail.map(str::to_owned);
    s.last_error_at = Some(format_received(time::OffsetDateTime::now_utc()));
}

/// Returns the receiver's `Retry-After` capped at the destination's longest
/// backoff: a receiver cannot stall a destination (and with it hot
/// deletion) for longer than the operator allows.
fn capped_retry_after(
    settings: &DriverSettings,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    retry_after.map(|r| r.min(settings.backoff_max))
}

/// One pass over the streams; `Ok(true)` when something was delivered.
async fn round(
    store: &Arc<dyn Store>,
    dest: &dyn Destination,
    settings: &DriverSettings,
    handle: &DriverHandle,
    lease: &Lease,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, Stop> {
    let cursors: HashMap<String, u64> = store
        .delivery_cursors()
        .await?
        .into_iter()
        .filter(|c| c.destination == settings.name)
        .map(|c| (c.stream, c.seq))
        .collect();
    let behind: Vec<(String, u64)> = store
        .streams()
        .await?
        .into_iter()
        .filter(|info| settings.filter.stream(&info.name))
        .filter_map(|info| {
            let cursor = cursors.get(&info.name).copied().unwrap_or(0);
            (cursor < info.head_seq).then_some((info.name, cursor))
        })
        .collect();
    // Up to `concurrency` streams at a time; each stream's batches stay in order.
    let one = |(stream, cursor): (String, u64)| {
        let mut stop = stop.clone();
        async move {
            let Some((mut batch, _)) =
                next_batch(store.as_ref(), settings, &stream, cursor).await?
            else {
                return Ok::<bool, Stop>(false);
            };
            // A stream that is behind gets a run of full batches: the next
            // one is read (and cut) while the previous one is in flight,
            // and sent only once the previous one's cursor is stored, so
            // one request is in flight and a crash resends at most that
            // batch. A partial batch ends the run (it is cut again next
            // round, with what was committed meanwhile), as do a pause, a
            // stop and `MAX_RUN` batches (so other streams get their turn).
            for run in 1.. {
                let end = batch.end_seq;
                let ahead = async {
                    if run < MAX_RUN {
                        next_batch(store.as_ref(), settings, &stream, end).await
                    } else {
                        Ok(None)
                    }
                };
                let (sent, ahead) = futures_util::future::join(
                    deliver(
                        store.as_ref(),
                        dest,
                        settings,
                        handle,
                        lease,
                        batch,
                        &mut stop,
                    ),
                    ahead,
                )
                .await;
                sent?;
                match ahead? {
                    Some((next, true)) if !*stop.borrow() && !handle.status().paused => {
                        batch = next;
                    }
                    _ => break,
                }
            }
            Ok(true)
        }
    };
    let results: Vec<Result<bool, Stop>> =
        futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(
            futures_util::stream::iter(behind.into_iter().map(one)),
            settings.concurrency.max(1),
        ))
        .await;
    let mut worked = false;
    for r in results {
        worked |= r?;
    }
    Ok(worked)
}

/// Most batches of one stream delivered back to back in one round.
const MAX_RUN: usize = 16;

/// Cuts the next batch after `cursor` and says whether it is full (max
/// events or max bytes), or `None` while a partial batch is younger than
/// `max_age` (or the events left the hot store: not yet fed from the
/// archive).
async fn next_batch(
    store: &dyn Store,
    settings: &DriverSettings,
    stream: &str,
    cursor: u64,
) -> Result<Option<(Batch, bool)>, Stop> {
    let rows = store
        .read_events(stream, cursor + 1, settings.max_events)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let rows = if first.seq == cursor + 1 {
        rows
    } else {
        match from_archive(settings, stream, cursor).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!(destination = %settings.name, stream, cursor, oldest_hot = first.seq,
                    "destination is behind the hot store and the archive does not hold the gap");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(destination = %settings.name, stream, cursor, error = %crate::report::Chain(&*e),
                    "destination is behind the hot store; reading the archive failed, will retry");
                return Ok(None);
            }
        }
    };
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut end = cursor;
    let mut oldest: Option<String> = None;
    let mut full = rows.len() >= settings.max_events;
    for row in rows {
        if row.seq != end + 1 {
            break;
        }
        let json = stored_json(&row.body, &row.hash);
        if !events.is_empty() && bytes + json.len() > settings.max_bytes {
            full = true;
            break;
        }
        let meta = fields_of(stream, row.seq, &row.body)?;
        oldest.get_or_insert_with(|| meta.received.clone().into_owned());
        end = row.seq;
        if settings.filter.takes(stream, &meta.event_type) {
            bytes += json.len();
            events.push(OutEvent {
                seq: row.seq,
                id: meta.id.into_owned(),
                event_type: meta.event_type.into_owned(),
                received: meta.received.into_owned(),
                json,
            });
        }
    }
    if !full {
        let age_ok = oldest
            .as_deref()
            .and_then(|r| {
                time::OffsetDateTime::parse(r, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_none_or(|t| time::OffsetDateTime::now_utc() - t >= settings.max_age);
        if !age_ok {
            return Ok(None);
        }
    }
    Ok(Some((
        Batch {
            destination: settings.name.clone(),
            stream: stream.to_owned(),
            start_seq: cursor + 1,
            end_seq: end,
            events,
        },
        full,
    )))
}

/// Events after `cursor` from the archive (see [`ColdFeed`]).
async fn from_archive(
    settings: &DriverSettings,
    stream: &str,
    cursor: u64,
) -> Result<Option<Vec<crate::store::StoredEvent>>, ColdFeedError> {
    match &settings.archive {
        Some(feed) => feed.read(stream, cursor + 1, settings.max_events).await,
        None => Ok(None),
    }
}

/// Full jitter: a random delay in `[0, min(max, initial * 2^attempt)]`,
/// at least `floor`.
fn backoff(settings: &DriverSettings, attempt: u32, floor: Option<Duration>) -> Duration {
    let cap = settings
        .backoff_initial
        .saturating_mul(1u32 << attempt.min(20))
        .min(settings.backoff_max);
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    let frac = u64::from_le_bytes(r) as f64 / u64::MAX as f64;
    cap.mul_f64(frac).max(floor.unwrap_or(Duration::ZERO))
}

/// While a batch is retried, a WARN at most this often.
const RETRY_WARN_EVERY: Duration = Duration::from_secs(30);

async fn deliver(
    store: &dyn Store,
    dest: &dyn Destination,
    settings: &DriverSettings,
    handle: &DriverHandle,
    lease: &Lease,
    batch: Batch,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Stop> {
    let mut attempt = 0u32;
    let mut last_warn: Option<std::time::Instant> = None;
    loop {
        let outcome = if batch.events.is_empty() {
            Ok(()) // everything filtered out: nothing to send, the cursor still moves
        } else {
            dest.deliver(&batch).await
        };
        match outcome {
            Ok(()) => {
                store
                    .put_delivery_cursor(
                        DeliveryCursor {
                            destination: settings.name.clone(),
                            stream: batch.stream.clone(),
                            seq: batch.end_seq,
                            archive_past: settings.archive_past,
                            delivered: batch.events.len() as u64,
                        },
                        Some(lease),
                    )
                    .await?;
                if attempt > 0 {
                    tracing::info!(destination = %settings.name, stream = %batch.stream, start = batch.start_seq, end = batch.end_seq, retries = attempt, "delivered after retries");
                }
                let mut s = handle.lock();
                s.delivered += batch.events.len() as u64;
                s.batches += u64::from(!batch.events.is_empty());
                return Ok(());
            }
            Err(DeliveryError::Permanent {
                status,
                message,
                detail,
            }) => {
                let message = crate::net::redact_urls(&message);
                tracing::warn!(destination = %settings.name, stream = %batch.stream, start = batch.start_seq, end = batch.end_seq, error = %message, "refused for good; dead letter");
                record_error(handle, &message, detail.as_deref());
                // Dead letters are admin-only: they keep the receiver's answer.
                let message = match &detail {
                    Some(d) => format!("{message}; {d}"),
                    None => message,
                };
                store
                    .add_dead_letter(
                        DeadLetter {
                            id: 0,
                            destination: settings.name.clone(),
                            stream: batch.stream.clone(),
                            start_seq: batch.start_seq,
                            end_seq: batch.end_seq,
                            status,
                            error: message,
                            at: format_received(time::OffsetDateTime::now_utc()),
                            resolved: None,
                        },
                        settings.archive_past,
                        Some(lease),
                    )
                    .await?;
                handle.lock().dead_letters += 1;
                metrics::counter!("trailkeep_destination_dead_letters_total", "destination" => settings.name.clone())
                    .increment(1);
                return Ok(());
            }
            Err(DeliveryError::Retryable {
                message,
                retry_after,
                detail,
            }) => {
                let message = crate::net::redact_urls(&message);
                record_error(handle, &message, detail.as_deref());
                handle.lock().retries += 1;
                metrics::counter!("trailkeep_destination_retries_total", "destination" => settings.name.clone())
                    .increment(1);
                let wait = backoff(settings, attempt, capped_retry_after(settings, retry_after));
                attempt = attempt.saturating_add(1);
                // An outage must show in the log at WARN, once when it
                // starts and then every half minute, not once per attempt.
                if last_warn.is_none_or(|t| t.elapsed() >= RETRY_WARN_EVERY) {
                    last_warn = Some(std::time::Instant::now());
                    tracing::warn!(destination = %settings.name, stream = %batch.stream, start = batch.start_seq, end = batch.end_seq, attempt, error = %message, ?wait, "delivery failed; retrying");
                } else {
                    tracing::debug!(destination = %settings.name, attempt, error = %message, ?wait, "delivery failed; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return Err(Stop::Shutdown),
                }
                if *stop.borrow() {
                    return Err(Stop::Shutdown);
                }
            }
        }
    }
}

/// Sends one dead letter again (operator's retry): the same seq range,
/// filtered as the destination filters now. Resolves it when accepted.
///
/// # Errors
/// The delivery failure, or store errors.
pub async fn retry_dead_letter(
    store: &dyn Store,
    dest: &dyn Destination,
    settings: &DriverSettings,
    letter: &DeadLetter,
) -> Result<(), String> {
    let mut events = Vec::new();
    let mut next = letter.start_seq;
    while next <= letter.end_seq {
        let rows = store
            .read_events(&letter.stream, next, 1000)
            .await
            .map_err(|e| e.to_string())?;
        let Some(first) = rows.first() else { break };
        if first.seq != next {
            return Err(format!("seq {next} is no longer in the hot store"));
        }
        for row in rows.into_iter().take_while(|r| r.seq <= letter.end_seq) {
            next = row.seq + 1;
            let meta = fields_of(&letter.stream, row.seq, &row.body).map_err(|e| e.to_string())?;
            if settings.filter.takes(&letter.stream, &meta.event_type) {
                events.push(OutEvent {
                    seq: row.seq,
                    id: meta.id.into_owned(),
                    event_type: meta.event_type.into_owned(),
                    received: meta.received.into_owned(),
                    json: stored_json(&row.body, &row.hash),
                });
            }
        }
    }
    let batch = Batch {
        destination: settings.name.clone(),
        stream: letter.stream.clone(),
        start_seq: letter.start_seq,
        end_seq: letter.end_seq,
        events,
    };
    dest.deliver(&batch).await.map_err(|e| e.to_string())?;
    store
        .resolve_dead_letter(letter.id, &format_received(time::OffsetDateTime::now_utc()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests;
