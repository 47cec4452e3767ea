//! One archive run.
//!
//! Per stream, from the seq after the last recorded batch: take the oldest
//! events received before the cutoff, in segments bounded by count, bytes
//! and UTC day of receipt (so each object sits in its `dt=` partition), and
//! for each segment:
//!
//! 1. check every hash and link (corrupt hot data is never archived);
//! 2. put the object create-only, read it back (size, SHA-256);
//! 3. sign the manifest (chained to the previous one), put it create-only,
//!    read it back; a manifest already there from a crashed run is adopted
//!    if it is signed by this log's key and describes the same batch;
//! 4. sign a checkpoint at the segment's last seq, store it hot and put it
//!    at `{stream}/checkpoints/{size:020}`;
//! 5. record the batch in the hot store;
//!
//! and then delete hot events up to the archived seq, never past a
//! destination's cursor unless that destination allows it. A crash after
//! any step leaves either nothing or something the next run finishes: keys
//! are fixed by the seq range and encoding is deterministic.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;

use super::layout;
use super::manifest::{self, Manifest, ObjectInfo};
use super::segment::{Compression, Segment, SegmentBuilder};
use super::{ArchiveError, failpoint};
use crate::chain::checkpoint::Checkpoint;
use crate::chain::checkpoint::origin;
use crate::chain::note::NoteSigner;
use crate::chain::{ZERO_HASH_HEX, merkle};
use crate::event::stored::check_link;
use crate::event::{format_received, stored_json};
use crate::names::StreamName;
use crate::objstore::{Bucket, ProbeResult, PutOutcome};
use crate::store::{ArchiveBatch, Lease, ReaderSource, Store, StoreExt, StoredCheckpoint};

/// Archive settings (`[archive]` in the config file).
#[derive(Clone)]
pub struct ArchiveSettings {
    /// Events received longer ago than this are archived (default 90 days).
    pub older_than: Duration,
    /// Most events per object (default 100,000).
    pub segment_events: u64,
    /// Most uncompressed bytes per object (default 64 MiB).
    pub segment_bytes: u64,
    /// Object compression (default gzip).
    pub compression: Compression,
    /// Shared secret for manifest HMACs, if configured.
    pub hmac_key: Option<Vec<u8>>,
    /// Archive to a store that fails the create-only probe (one archiver only).
    pub single_writer: bool,
    /// How long the archiver lease lasts unless renewed (every third of it
    /// during a run); a crashed archiver blocks others this long.
    pub lease_ttl: Duration,
    /// How often an index is written even when nothing was archived
    /// (default 1 hour); `verify`'s default `--max-age` is twice this.
    pub index_interval: Duration,
    /// The configured destinations (name, filter, `archive_past`): one that
    /// has no cursor on a stream yet holds deletion there at seq 0, and the
    /// config's `archive_past` wins over the one stored with a cursor.
    pub destinations: Vec<(String, crate::event::filter::Filter, bool)>,
}

impl std::fmt::Debug for ArchiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSettings")
            .field("older_than", &self.older_than)
            .field("segment_events", &self.segment_events)
            .field("segment_bytes", &self.segment_bytes)
            .field("compression", &self.compression)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "redacted"))
            .field("single_writer", &self.single_writer)
            .field("lease_ttl", &self.lease_ttl)
            .field("index_interval", &self.index_interval)
            .finish()
    }
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        Self {
            older_than: Duration::from_secs(90 * 86_400),
            segment_events: 100_000,
            segment_bytes: 64 << 20,
            compression: Compression::Gzip,
            hmac_key: None,
            single_writer: false,
            lease_ttl: Duration::from_secs(60),
            index_interval: Duration::from_secs(3600),
            destinations: Vec::new(),
        }
    }
}

/// Hot deletion stopped at a destination's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HeldBack {
    /// Stream.
    pub stream: String,
    /// The destination whose cursor holds deletion back.
    pub destination: String,
    /// Its cursor: events after it stay hot.
    pub cursor_seq: u64,
    /// Archived up to here.
    pub archived_seq: u64,
    /// Why.
    pub reason: String,
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RunReport {
    /// The archive (URL without query).
    pub archive: String,
    /// Events received before this were eligible.
    pub cutoff: String,
    /// Batches recorded by this run.
    pub batches: Vec<ArchiveBatch>,
    /// Events archived by this run.
    pub events_archived: u64,
    /// Uncompressed NDJSON bytes archived.
    pub raw_bytes: u64,
    /// Bytes stored (compressed).
    pub stored_bytes: u64,
    /// Objects found already written by an earlier (crashed) run.
    pub resumed_objects: u64,
    /// Hot events deleted.
    pub deleted: u64,
    /// Where deletion stopped at a cursor.
    pub held_back: Vec<HeldBack>,
    /// Seconds spent reading, checking and compressing events.
    pub encode_secs: f64,
    /// Seconds spent writing and reading back objects, manifests, checkpoints.
    pub write_secs: f64,
    /// Seconds spent deleting archived events from the hot store.
    pub delete_secs: f64,
    /// The index written at the end of the run.
    pub index: Option<super::index::Written>,
}

/// When `serve` runs the archive, as people read it and as a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// `every 1h`, `daily at 03:00 UTC`.
    pub text: String,
    /// Time between two scheduled runs.
    pub period: Duration,
}

/// How one archive run of this process ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// When it ended.
    pub at: OffsetDateTime,
    /// Its report summary when it succeeded, else why it failed (an
    /// [`ArchiveError`]: object keys, seqs, checksums, never a secret).
    pub result: Result<RunSummary, String>,
}

/// What a successful run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSummary {
    /// Batches written.
    pub batches: usize,
    /// Events archived.
    pub events: u64,
    /// Bytes stored (compressed).
    pub stored_bytes: u64,
    /// Events deleted from the hot store.
    pub deleted: u64,
}

/// The archiver as this process saw it: its schedule (set by `serve`),
/// its last run and its last success. Process-local and not stored: it
/// starts empty after a restart, and another node's runs are not in it
/// (a run skipped because another node held the lease is, as `busy_at`).
#[derive(Debug, Clone, Default)]
pub struct ArchiverStatus {
    /// The schedule, when `serve` runs the archive.
    pub schedule: Option<Schedule>,
    /// When the schedule was set (the server started archiving).
    pub scheduled_since: Option<OffsetDateTime>,
    /// The last run that took place here.
    pub last_run: Option<RunOutcome>,
    /// When a run last succeeded here.
    pub last_success: Option<OffsetDateTime>,
    /// When a run last found another node archiving (it holds the lease).
    pub busy_at: Option<OffsetDateTime>,
}

impl ArchiverStatus {
    /// Whether the archive is late at `now`: scheduled, and its last run
    /// failed, or nothing succeeded (or ran elsewhere) for twice the
    /// period (counted from when it was scheduled, before any run).
    pub fn late(&self, now: OffsetDateTime) -> bool {
        let Some(schedule) = &self.schedule else {
            return false;
        };
        if self.last_run.as_ref().is_some_and(|r| r.result.is_err()) {
            return true;
        }
        let last = [self.last_success, self.busy_at]
            .into_iter()
            .flatten()
            .max()
            .or(self.scheduled_since)
            .unwrap_or(now);
        now - last > schedule.period * 2
    }
}

/// Runs archive passes over a hot store into a bucket.
pub struct Archiver {
    store: Arc<dyn Store>,
    bucket: Bucket,
    signer: NoteSigner,
    log_name: String,
    settings: ArchiveSettings,
    probed: tokio::sync::OnceCell<ProbeResult>,
    last_index: std::sync::Mutex<Option<std::time::Instant>>,
    node: crate::node::NodeId,
    status: std::sync::Mutex<ArchiverStatus>,
}

const PAGE: usize = 2000;
/// The lease that lets one process archive at a time.
pub const LEASE: &str = "archiver";

const DELETE_CHUNK: usize = 5000;

/// Deletes archived events of `stream` up to `through` in chunks; returns
/// how many and the seconds it took.
async fn delete_through(
    store: Arc<dyn Store>,
    stream: String,
    through: u64,
    cutoff: String,
    fence: Option<Lease>,
) -> Result<(u64, f64), ArchiveError> {
    let t = std::time::Instant::now();
    let mut total = 0;
    loop {
        let n = store
            .delete_archived(&stream, through, &cutoff, DELETE_CHUNK, fence.as_ref())
            .await?;
        total += n;
        if n == 0 {
            return Ok((total, t.elapsed().as_secs_f64()));
        }
        failpoint("archive.after_delete_chunk");
    }
}

/// Records a run in `/metrics` (`trailkeep_archive_*`); a run that did not
/// take place because another process holds the lease is not a run.
fn record_run(report: &Result<RunReport, ArchiveError>, took: Duration) {
    let outcome = match report {
        Err(ArchiveError::Busy) => return,
        Ok(r) => {
            metrics::gauge!("trailkeep_archive_last_success_timestamp_seconds")
                .set(OffsetDateTime::now_utc().unix_timestamp() as f64);
            let held: u64 = r
                .held_back
                .iter()
                .map(|h| h.archived_seq.saturating_sub(h.cursor_seq))
                .sum();
            metrics::gauge!("trailkeep_archive_held_back_events").set(held as f64);
            "ok"
        }
        Err(_) => "failed",
    };
    metrics::counter!("trailkeep_archive_runs_total", "outcome" => outcome).increment(1);
    metrics::histogram!("trailkeep_archive_run_seconds").record(took.as_secs_f64());
}

impl Archiver {
    /// A new archiver.
    pub fn new(
        store: Arc<dyn Store>,
        bucket: Bucket,
        signer: NoteSigner,
        log_name: String,
        settings: ArchiveSettings,
    ) -> Self {
        Self {
            store,
            bucket,
            signer,
            log_name,
            settings,
            probed: tokio::sync::OnceCell::new(),
            last_index: std::sync::Mutex::new(None),
            node: crate::node::NodeId::random(),
            status: std::sync::Mutex::default(),
        }
    }

    /// Takes the archiver lease as `node` (a serve node's persistent id),
    /// not as the random id of a one-off process.
    #[must_use]
    pub fn with_node(mut self, node: crate::node::NodeId) -> Self {
        self.node = node;
        self
    }

    /// Archived events of `stream` from `from_seq` on, checked against
    /// this archiver's key (see [`super::restore::read_archived`]).
    ///
    /// # Errors
    /// As [`super::restore::read_archived`].
    pub async fn read_archived(
        &self,
        stream: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Option<Vec<crate::store::RestoredEvent>>, ArchiveError> {
        super::restore::read_archived(
            self.store.as_ref(),
            &self.bucket,
            &self.signer.verifier(),
            self.settings.hmac_key.as_deref(),
            stream,
            from_seq,
            max,
        )
        .await
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The hot store it archives from.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Probes the bucket once per archiver and refuses a store that
    /// overwrites, unless single-writer mode is on.
    ///
    /// # Errors
    /// [`ArchiveError::NotCreateOnly`], or the probe's store error.
    pub async fn check_store(&self) -> Result<ProbeResult, ArchiveError> {
        let r = *self.probed.get_or_try_init(|| self.bucket.probe()).await?;
        if r == ProbeResult::Overwrites {
            if !self.settings.single_writer {
                return Err(ArchiveError::NotCreateOnly(
                    self.bucket.display().to_owned(),
                ));
            }
            tracing::warn!(archive = %self.bucket.display(), "store overwrites on create-only writes; archiving in single-writer mode");
        }
        Ok(r)
    }

    /// The settings.
    pub fn settings(&self) -> &ArchiveSettings {
        &self.settings
    }

    /// Notes when `serve` runs this archiver (for [`Archiver::status`]).
    pub fn set_schedule(&self, schedule: Schedule) {
        let mut s = self.status_mut();
        s.schedule = Some(schedule);
        s.scheduled_since = Some(OffsetDateTime::now_utc());
    }

    /// The schedule, last run and last success this process saw.
    pub fn status(&self) -> ArchiverStatus {
        self.status_mut().clone()
    }

    fn status_mut(&self) -> std::sync::MutexGuard<'_, ArchiverStatus> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_run(&self, report: &Result<RunReport, ArchiveError>) {
        let at = OffsetDateTime::now_utc();
        let mut s = self.status_mut();
        match report {
            Err(ArchiveError::Busy) => s.busy_at = Some(at),
            Ok(r) => {
                s.last_success = Some(at);
                s.last_run = Some(RunOutcome {
                    at,
                    result: Ok(RunSummary {
                        batches: r.batches.len(),
                        events: r.events_archived,
                        stored_bytes: r.stored_bytes,
                        deleted: r.deleted,
                    }),
                });
            }
            Err(e) => {
                s.last_run = Some(RunOutcome {
                    at,
                    result: Err(e.to_string()),
                });
            }
        }
    }

    /// Runs one pass with the configured retention, taking the `archiver`
    /// lease for its duration (so one node, or one CLI run, archives at a
    /// time) and renewing it in the background every third of its TTL.
    ///
    /// # Errors
    /// [`ArchiveError::Busy`] when another process holds the lease; else as
    /// [`Archiver::run`].
    pub async fn run_leased(
        &self,
        older_than: Option<Duration>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<RunReport, ArchiveError> {
        let cutoff = OffsetDateTime::now_utc() - older_than.unwrap_or(self.settings.older_than);
        let started = std::time::Instant::now();
        let report = self
            .with_lease(|lease| async move { self.run(cutoff, Some(&lease), progress).await })
            .await;
        record_run(&report, started.elapsed());
        self.note_run(&report);
        let report = report?;
        if let Some(w) = &report.index {
            self.record_index(w).await;
        }
        Ok(report)
    }

    /// Writes an index (see [`super::index`]) under the archiver lease,
    /// unless one was written less than `index_interval` ago by this
    /// archiver (an archive run writes one too).
    ///
    /// # Errors
    /// [`ArchiveError::Busy`] when another process holds the lease; store
    /// and bucket errors.
    pub async fn write_index_leased(&self) -> Result<Option<super::index::Written>, ArchiveError> {
        let recent = self
            .last_index
            .lock()
            .map(|t| t.is_some_and(|t| t.elapsed() < self.settings.index_interval))
            .unwrap_or(false);
        if recent {
            return Ok(None);
        }
        let w = self
            .with_lease(|_| async move { self.write_index().await })
            .await?;
        self.record_index(&w).await;
        Ok(Some(w))
    }

    /// Writes the next index now.
    async fn write_index(&self) -> Result<super::index::Written, ArchiveError> {
        self.check_store().await?;
        let verifier = self.signer.verifier();
        self.put_with_retry(
            &layout::verifier_key(verifier.key_id()),
            Bytes::from(format!("{verifier}\n")),
        )
        .await?;
        let w = super::index::write(
            &self.bucket,
            self.store.as_ref(),
            &self.signer,
            &self.log_name,
            self.settings.hmac_key.as_deref(),
        )
        .await?;
        if let Ok(mut t) = self.last_index.lock() {
            *t = Some(std::time::Instant::now());
        }
        Ok(w)
    }

    /// Records an index in the log's own stream: the copy for destinations
    /// with `checkpoints = true`. The index itself is in the bucket, so a
    /// failed record is logged, not fatal. Done by the operational entry
    /// points (`*_leased`), not by [`Archiver::run`] itself, so a pass
    /// over a quiet store stays a pass that archives nothing.
    async fn record_index(&self, w: &super::index::Written) {
        if let Err(e) = crate::selflog::record_index(
            self.store.as_ref(),
            self.bucket.display(),
            &w.key,
            w.number,
            &w.sha256,
            w.streams,
        )
        .await
        {
            tracing::warn!(key = %w.key, error = %crate::report::Chain(&e), "cannot record the index in the log's own stream");
        }
        // Signed at once, so a CLI run with no server leaves nothing unsigned.
        crate::ingest::checkpointer::sign_self(self.store.as_ref(), &self.signer, &self.log_name)
            .await;
    }

    /// Runs `f` holding the `archiver` lease (one process at a time),
    /// renewed in the background every third of its TTL.
    async fn with_lease<T, F, Fut>(&self, f: F) -> Result<T, ArchiveError>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: std::future::Future<Output = Result<T, ArchiveError>>,
    {
        let keeper = crate::lease::LeaseKeeper::take(
            self.store.clone(),
            LEASE,
            &self.node,
            self.settings.lease_ttl,
        )
        .await?
        .ok_or(ArchiveError::Busy)?;
        // Renewed in the background; if it is lost, the run's fenced writes
        // fail and it stops.
        let lease = keeper.held().ok_or(ArchiveError::Busy)?;
        let out = f(lease).await;
        keeper.release().await;
        out
    }

    /// Runs one pass over events received before `cutoff`. `fence` is the
    /// archiver lease; `progress` gets the events archived so far.
    ///
    /// # Errors
    /// The first failure; batches recorded before it stay recorded, and the
    /// next run goes on from there.
    pub async fn run(
        &self,
        cutoff: OffsetDateTime,
        fence: Option<&Lease>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<RunReport, ArchiveError> {
        self.check_store().await?;
        let run = self.archive_all(cutoff, fence, progress).await;
        // The index is written after a failed run too: it names what was
        // recorded, so verify never sees a recorded batch no index names
        // for longer than one run.
        let index = self.write_index().await;
        let mut report = run?;
        report.index = Some(index?);
        Ok(report)
    }

    async fn archive_all(
        &self,
        cutoff: OffsetDateTime,
        fence: Option<&Lease>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<RunReport, ArchiveError> {
        let cutoff = format_received(cutoff);
        let mut report = RunReport {
            archive: self.bucket.display().to_owned(),
            cutoff: cutoff.clone(),
            ..RunReport::default()
        };
        let verifier = self.signer.verifier();
        self.put_with_retry(
            &layout::verifier_key(verifier.key_id()),
            Bytes::from(format!("{verifier}\n")),
        )
        .await?;
        let mut cursors = self.store.delivery_cursors().await?;
        let mut streams = self.store.streams().await?;
        // The log's own stream last: it records this run's checkpoints.
        streams.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
        // A configured destination that has not delivered a stream yet has
        // no cursor there: it holds deletion at 0 all the same (invariant 7).
        for (name, filter, archive_past) in &self.settings.destinations {
            for c in cursors.iter_mut().filter(|c| c.destination == *name) {
                c.archive_past = *archive_past;
            }
            for info in streams.iter().filter(|i| filter.stream(&i.name)) {
                if !cursors
                    .iter()
                    .any(|c| c.destination == *name && c.stream == info.name)
                {
                    cursors.push(crate::store::DeliveryCursor {
                        destination: name.clone(),
                        stream: info.name.clone(),
                        seq: 0,
                        archive_past: *archive_past,
                        delivered: 0,
                    });
                }
            }
        }
        for info in streams {
            let hold = cursors
                .iter()
                .filter(|c| c.stream == info.name && !c.archive_past)
                .map(|c| c.seq)
                .min()
                .unwrap_or(u64::MAX);
            self.archive_stream(&info.name, &cutoff, hold, fence, &mut report, progress)
                .await?;
            let Some(archived) = self
                .store
                .last_archive_batch(&info.name)
                .await?
                .map(|b| b.end_seq)
            else {
                continue;
            };
            let mut through = archived;
            for c in cursors.iter().filter(|c| c.stream == info.name) {
                if c.seq < archived && !c.archive_past {
                    report.held_back.push(HeldBack {
                        stream: info.name.clone(),
                        destination: c.destination.clone(),
                        cursor_seq: c.seq,
                        archived_seq: archived,
                        reason: format!(
                            "destination {} has delivered up to seq {} only; events after it stay hot until it catches up (or set archive_past for it)",
                            c.destination, c.seq
                        ),
                    });
                    through = through.min(c.seq);
                }
            }
            // Whatever is recorded but still hot (an earlier run stopped
            // between recording and deleting, or restored rows expired).
            let (n, secs) = delete_through(
                self.store.clone(),
                info.name.clone(),
                through,
                cutoff.clone(),
                fence.cloned(),
            )
            .await?;
            report.deleted += n;
            report.delete_secs += secs;
        }
        metrics::counter!("trailkeep_archive_events_total").increment(report.events_archived);
        metrics::counter!("trailkeep_archive_bytes_total").increment(report.stored_bytes);
        metrics::counter!("trailkeep_archive_hot_deleted_total").increment(report.deleted);
        Ok(report)
    }

    /// Archives one stream's old events, batch after batch; each recorded
    /// batch is deleted from hot (up to `hold`) in the background while the
    /// next one is encoded.
    async fn archive_stream(
        &self,
        stream: &str,
        cutoff: &str,
        hold: u64,
        fence: Option<&Lease>,
        report: &mut RunReport,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), ArchiveError> {
        let last = self.store.last_archive_batch(stream).await?;
        let (mut next, mut prev_hash, mut prev_manifest) = match last {
            Some(b) => (b.end_seq + 1, b.last_hash, Some(b.manifest_sha256)),
            None => (1, ZERO_HASH_HEX.to_owned(), None),
        };
        let mut deleting: Option<tokio::task::JoinHandle<Result<(u64, f64), ArchiveError>>> = None;
        let settle =
            |report: &mut RunReport,
             r: Result<Result<(u64, f64), ArchiveError>, tokio::task::JoinError>| {
                let (n, secs) =
                    r.map_err(|e| ArchiveError::Encode(std::io::Error::other(e.to_string())))??;
                report.deleted += n;
                report.delete_secs += secs;
                Ok::<(), ArchiveError>(())
            };
        loop {
            let t = std::time::Instant::now();
            let next_segment = self.next_segment(stream, next, &prev_hash, cutoff).await;
            let Some((segment, day)) = (match next_segment {
                Ok(s) => s,
                Err(e) => {
                    if let Some(d) = deleting.take() {
                        let _ = d.await;
                    }
                    return Err(e);
                }
            }) else {
                if let Some(d) = deleting.take() {
                    settle(report, d.await)?;
                }
                return Ok(());
            };
            report.encode_secs += t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let batch = self
                .write_segment(stream, &segment, &day, prev_manifest.clone(), fence, report)
                .await?;
            report.write_secs += t.elapsed().as_secs_f64();
            next = batch.end_seq + 1;
            prev_hash.clone_from(&batch.last_hash);
            prev_manifest = Some(batch.manifest_sha256.clone());
            if let Some(d) = deleting.take() {
                settle(report, d.await)?;
            }
            deleting = Some(tokio::spawn(delete_through(
                self.store.clone(),
                stream.to_owned(),
                batch.end_seq.min(hold),
                cutoff.to_owned(),
                fence.cloned(),
            )));
            report.events_archived += batch.count;
            report.raw_bytes += batch.raw_size;
            report.stored_bytes += batch.object_size;
            report.batches.push(batch);
            progress(report.events_archived);
        }
    }

    /// Builds the next segment from `from`, or `None` when nothing there is
    /// older than the cutoff.
    async fn next_segment(
        &self,
        stream: &str,
        from: u64,
        prev_hash: &str,
        cutoff: &str,
    ) -> Result<Option<(Segment, String)>, ArchiveError> {
        let mut b = SegmentBuilder::new(self.settings.compression, prev_hash)?;
        let mut day: Option<String> = None;
        let mut expected = from;
        let mut prev = prev_hash.to_owned();
        'pages: loop {
            let rows = self.store.read_events(stream, expected, PAGE).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let chain = |message: String| ArchiveError::Chain {
                    stream: stream.to_owned(),
                    seq: row.seq,
                    message,
                };
                if row.seq != expected {
                    return Err(ArchiveError::Chain {
                        stream: stream.to_owned(),
                        seq: expected,
                        message: format!(
                            "missing from the hot store (next stored is seq {})",
                            row.seq
                        ),
                    });
                }
                let link = check_link(&row.body, &row.hash, stream, row.seq, Some(&prev));
                let Some(meta) = &link.fields else {
                    let fault = link
                        .first_fault()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    return Err(chain(fault));
                };
                if *meta.received >= *cutoff {
                    break 'pages;
                }
                let d = meta.received.get(..10).unwrap_or_default().to_owned();
                if day.as_ref().is_some_and(|x| *x != d) {
                    break 'pages;
                }
                let line = stored_json(&row.body, &row.hash);
                if b.count() > 0
                    && (b.count() >= self.settings.segment_events
                        || b.raw_size() + line.len() as u64 + 1 > self.settings.segment_bytes)
                {
                    break 'pages;
                }
                // Only what is archived must be sound: a fault past the
                // cutoff is left to the next run (and to verify).
                if let Some(fault) = link.first_fault() {
                    return Err(chain(fault.to_string()));
                }
                let h = link.computed;
                b.push(row.seq, &h, &line, &meta.time)?;
                day.get_or_insert(d);
                prev = row.hash;
                expected += 1;
            }
        }
        if b.count() == 0 {
            return Ok(None);
        }
        let day = day.unwrap_or_default();
        Ok(Some((b.finish()?, day)))
    }

    async fn put_with_retry(&self, key: &str, bytes: Bytes) -> Result<PutOutcome, ArchiveError> {
        let size = bytes.len() as u64;
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let attempt = || async {
            let out = self.bucket.put_create(key, bytes.clone()).await?;
            self.bucket.confirm(key, size, &sha).await?;
            Ok(out)
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(3)
                    .with_jitter(),
            )
            .when(ArchiveError::is_transient)
            .notify(|e, d| tracing::warn!(key, error = %crate::report::Chain(e), retry_in = ?d, "archive write failed; retrying"))
            .await
    }

    async fn write_segment(
        &self,
        stream: &str,
        seg: &Segment,
        day: &str,
        prev_manifest: Option<String>,
        fence: Option<&Lease>,
        report: &mut RunReport,
    ) -> Result<ArchiveBatch, ArchiveError> {
        let (start, end) = (seg.start_seq, seg.end_seq);
        let name = StreamName::parse(stream)?;
        let object_key = layout::object_key(&name, day, start, end, self.settings.compression);
        let size = seg.bytes.len() as u64;
        if self
            .put_with_retry(&object_key, Bytes::from(seg.bytes.clone()))
            .await?
            == PutOutcome::AlreadyThere
        {
            report.resumed_objects += 1;
        }
        failpoint("archive.after_object");

        let manifest_key = layout::manifest_key(&name, day, start, end);
        let created = format_received(OffsetDateTime::now_utc());
        let manifest = Manifest {
            version: manifest::VERSION,
            log: self.log_name.clone(),
            stream: stream.to_owned(),
            start_seq: start,
            end_seq: end,
            count: end - start + 1,
            first_time: seg.first_time.clone(),
            last_time: seg.last_time.clone(),
            prev_hash: seg.prev_hash.clone(),
            last_hash: seg.last_hash.clone(),
            merkle_root: seg.merkle_root.clone(),
            object: ObjectInfo {
                key: object_key.clone(),
                sha256: seg.sha256.clone(),
                size,
                uncompressed_size: seg.raw_size,
                format: "ndjson".into(),
                compression: self.settings.compression.name().into(),
            },
            prev_manifest_sha256: prev_manifest,
            created: created.clone(),
            signature: None,
            hmac_sha256: None,
        }
        .sign(&self.signer, self.settings.hmac_key.as_deref());
        let manifest_bytes = match self
            .put_with_retry(&manifest_key, Bytes::from(manifest.to_bytes()))
            .await
        {
            Ok(_) => manifest.to_bytes(),
            Err(ArchiveError::Bucket(crate::objstore::ObjStoreError::Conflict { .. })) => {
                self.adopt_manifest(&manifest_key, &manifest).await?
            }
            Err(e) => return Err(e),
        };
        failpoint("archive.after_manifest");

        self.checkpoint_at(stream, end).await?;
        failpoint("archive.after_checkpoint");

        let batch = ArchiveBatch {
            stream: stream.to_owned(),
            start_seq: start,
            end_seq: end,
            count: end - start + 1,
            first_time: seg.first_time.clone(),
            last_time: seg.last_time.clone(),
            last_hash: seg.last_hash.clone(),
            object_key,
            object_sha256: seg.sha256.clone(),
            object_size: size,
            raw_size: seg.raw_size,
            manifest_key,
            manifest_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest_bytes)),
            created,
        };
        self.store
            .record_archive_batch(batch.clone(), fence)
            .await?;
        failpoint("archive.after_record");
        tracing::info!(stream, start, end, object = %batch.object_key, "archived");
        Ok(batch)
    }

    /// A manifest for this range is already there (a crashed run wrote it
    /// at another time): adopt it when it is ours and describes the same
    /// batch, else stop.
    async fn adopt_manifest(&self, key: &str, ours: &Manifest) -> Result<Vec<u8>, ArchiveError> {
        let existing = self.bucket.get(key).await?.unwrap_or_default();
        let conflict = |why: &str| crate::objstore::ObjStoreError::Conflict {
            key: key.to_owned(),
            expected: format!("a manifest for the same batch ({why})"),
            found: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&existing)),
        };
        let theirs = Manifest::parse(&existing).map_err(|e| conflict(&e.to_string()))?;
        theirs
            .verify_signature(&self.signer.verifier())
            .map_err(|e| conflict(&e.to_string()))?;
        if !theirs.same_batch(ours) {
            return Err(conflict("it describes other contents").into());
        }
        self.bucket
            .confirm(
                key,
                existing.len() as u64,
                &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&existing)),
            )
            .await?;
        Ok(existing.to_vec())
    }

    /// Signs (or reuses) the checkpoint at `size` and puts it in the bucket.
    async fn checkpoint_at(&self, stream: &str, size: u64) -> Result<(), ArchiveError> {
        let root = self
            .store
            .with_tiles(stream, |r| merkle::root(&ReaderSource(r), size))
            .await?;
        let text = Checkpoint {
            origin: origin(&self.log_name, stream),
            size,
            root,
        }
        .to_text();
        let note = self
            .signer
            .sign(&text)
            .map_err(|e| ArchiveError::Encode(std::io::Error::other(e.to_string())))?;
        self.store
            .put_checkpoint(
                stream,
                StoredCheckpoint {
                    size,
                    root: hex::encode(root),
                    note: note.clone(),
                    created: format_received(OffsetDateTime::now_utc()),
                },
            )
            .await?;
        self.put_with_retry(
            &layout::checkpoint_key(&StreamName::parse(stream)?, size),
            Bytes::from(note),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(min)
    }

    fn hourly(since: i64) -> ArchiverStatus {
        ArchiverStatus {
            schedule: Some(Schedule {
                text: "every 1h".into(),
                period: Duration::from_secs(3600),
            }),
            scheduled_since: Some(at(since)),
            ..ArchiverStatus::default()
        }
    }

    #[test]
    fn late_after_twice_the_period_or_a_failed_run_never_when_unscheduled() {
        assert!(!ArchiverStatus::default().late(at(10_000)), "not scheduled");
        let mut s = hourly(0);
        assert!(!s.late(at(120)), "two periods since the start");
        assert!(s.late(at(121)), "no run for over two periods");
        s.last_success = Some(at(100));
        s.last_run = Some(RunOutcome {
            at: at(100),
            result: Ok(RunSummary::default()),
        });
        assert!(!s.late(at(220)));
        assert!(s.late(at(221)));
        // Another node archiving counts: it holds the lease.
        s.busy_at = Some(at(200));
        assert!(!s.late(at(300)));
        s.last_run = Some(RunOutcome {
            at: at(301),
            result: Err("archive location: gone".into()),
        });
        assert!(s.late(at(302)), "the last run failed");
    }
}
