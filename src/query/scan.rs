//! The `events` table: which parts of the hot store and which archive
//! objects a query must read (planned from its filters before anything is
//! fetched), and reading them.
//!
//! **Hot and cold without double counting.** A stream's rows are its hot
//! rows (whatever the hot store holds: events not yet archived, archived
//! events not yet deleted, restored ranges; `tier = 'hot'`) and, from each
//! archived batch, the seqs the hot store does not hold (`tier = 'cold'`).
//! Each seq is therefore read once, wherever it is.
//!
//! **Only visible streams are planned.** The streams a caller may see are
//! fixed when the table is made ([`Visible`]); the plan lists parts of
//! those streams only, whatever the SQL says, so no rewrite of the SQL can
//! reach another stream's rows.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use sha2::Digest as _;

use super::bounds::{Bounds, DAY_US};
use super::decode::{Rows, day_number, micros, schema};
use super::{QueryError, ReadStats};
use crate::objstore::{Bucket, Compression};
use crate::store::{ArchiveBatch, EventScan, Store};

/// Rows per batch, and per hot-store page.
const BATCH_ROWS: usize = 8192;

/// Which streams a caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Every stream (a key for `*`, or the store opened directly).
    All,
    /// This stream only (a stream-bound key).
    Only(String),
}

impl Visible {
    fn sees(&self, stream: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(s) => s == stream,
        }
    }
}

/// The `events` table of one query.
pub(crate) struct EventsTable {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bucket: Option<Bucket>,
    pub(crate) visible: Visible,
    pub(crate) stats: Arc<ReadStats>,
    pub(crate) partitions: usize,
}

impl fmt::Debug for EventsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsTable")
            .field("visible", &self.visible)
            .finish_non_exhaustive()
    }
}

/// One thing to read.
#[derive(Debug, Clone)]
enum Part {
    /// One stream's hot rows, narrowed in the store's SQL.
    Hot(EventScan),
    /// One archive object, less the seqs the hot store holds.
    Cold {
        batch: ArchiveBatch,
        skip: Vec<(u64, u64)>,
        day: i64,
        seqs: (u64, u64),
    },
}

fn external(e: impl Into<QueryError>) -> DataFusionError {
    DataFusionError::External(Box::new(e.into()))
}

/// `YYYY-MM-DDTHH:MM:SS` of a time in microseconds (`None` outside the
/// years 0000-9999, where no bound is pushed).
fn second_text(us: i64) -> Option<String> {
    let secs = us.div_euclid(1_000_000);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    (0..=9999).contains(&t.year()).then(|| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    })
}

/// Text bounds on a stored time column for a microsecond range: stored
/// times are UTC with `Z` and any fraction, so every time in
/// `[lo, hi]` has text ≥ `lo`'s second and < the second after `hi`'s.
fn text_bounds((lo, hi): (i64, i64)) -> (Option<String>, Option<String>) {
    let from = (lo != i64::MIN).then(|| second_text(lo)).flatten();
    let before = (hi != i64::MAX)
        .then(|| second_text(hi.saturating_add(1_000_000)))
        .flatten();
    (from, before)
}

/// Whether `[a, b]` and `[c, d]` meet.
fn overlaps<T: Ord>(a: T, b: T, c: T, d: T) -> bool {
    a <= d && c <= b
}

/// The `dt=YYYY-MM-DD` day of an object key.
fn key_day(key: &str) -> Option<i64> {
    let at = key.find("/dt=")? + 4;
    day_number(key.get(at..at + 10)?)
}

impl EventsTable {
    /// The parts a query with `bounds` reads, stream by stream.
    async fn plan(&self, bounds: &Bounds) -> Result<(Vec<Part>, Pruning), QueryError> {
        let mut parts = Vec::new();
        let mut pruning = Pruning::default();
        if bounds.is_empty() {
            return Ok((parts, pruning));
        }
        let (time_from, time_before) = text_bounds(bounds.time);
        // `dt` is the day of `received`: a dt bound is a received bound too.
        let received = (
            bounds.received.0.max(bounds.dt.0.saturating_mul(DAY_US)),
            bounds.received.1.min(
                bounds
                    .dt
                    .1
                    .saturating_add(1)
                    .saturating_mul(DAY_US)
                    .saturating_sub(1),
            ),
        );
        let (received_from, received_before) = text_bounds(received);
        let types = bounds.types.as_ref().map(|t| t.iter().cloned().collect());
        for s in self.store.streams().await? {
            if !self.visible.sees(&s.name) || !bounds.wants_stream(&s.name) {
                continue;
            }
            pruning.streams += 1;
            let from = bounds.seq.0.max(1);
            let to = bounds.seq.1.min(s.head_seq);
            if from > to {
                continue;
            }
            if bounds.wants_tier("hot") && s.oldest_hot_seq.is_some() {
                parts.push(Part::Hot(EventScan {
                    stream: s.name.clone(),
                    from_seq: from.max(s.oldest_hot_seq.unwrap_or(1)),
                    to_seq: to,
                    time_from: time_from.clone(),
                    time_before: time_before.clone(),
                    received_from: received_from.clone(),
                    received_before: received_before.clone(),
                    types: types.clone(),
                    limit: BATCH_ROWS,
                }));
            }
            let Some(archived) = s.archived_seq else {
                continue;
            };
            if from > archived || !bounds.wants_tier("cold") {
                continue;
            }
            let mut next = match self.store.archive_batch_at(&s.name, from).await? {
                Some(b) => b.start_seq,
                None => 0,
            };
            'pages: loop {
                let page = self
                    .store
                    .archive_batches(Some(&s.name), next, 1000)
                    .await?;
                let Some(last) = page.last() else {
                    break;
                };
                next = last.start_seq + 1;
                for b in page {
                    if b.start_seq > to {
                        break 'pages;
                    }
                    pruning.batches += 1;
                    if b.end_seq < from {
                        continue;
                    }
                    let day = key_day(&b.object_key).ok_or_else(|| {
                        QueryError::Archive(format!(
                            "{}: not a key of the archive layout (no dt=YYYY-MM-DD)",
                            b.object_key
                        ))
                    })?;
                    let times = (micros(&b.first_time), micros(&b.last_time));
                    let time_ok = match times {
                        (Some(a), Some(z)) => overlaps(a, z, bounds.time.0, bounds.time.1),
                        _ => true,
                    };
                    let day_us = (
                        day.saturating_mul(DAY_US),
                        (day + 1).saturating_mul(DAY_US) - 1,
                    );
                    if !time_ok
                        || !overlaps(day, day, bounds.dt.0, bounds.dt.1)
                        || !overlaps(day_us.0, day_us.1, bounds.received.0, bounds.received.1)
                    {
                        continue;
                    }
                    let seqs = (from.max(b.start_seq), to.min(b.end_seq));
                    let skip = match s.oldest_hot_seq {
                        Some(h) if h <= seqs.1 => {
                            self.store.hot_ranges(&s.name, seqs.0, seqs.1).await?
                        }
                        _ => Vec::new(),
                    };
                    let held: u64 = skip.iter().map(|(a, z)| z - a + 1).sum();
                    if held > seqs.1 - seqs.0 {
                        continue;
                    }
                    pruning.objects += 1;
                    pruning.bytes += b.object_size;
                    parts.push(Part::Cold {
                        batch: b,
                        skip,
                        day,
                        seqs,
                    });
                }
            }
        }
        Ok((parts, pruning))
    }
}

/// What planning kept.
#[derive(Debug, Clone, Copy, Default)]
struct Pruning {
    streams: u64,
    batches: u64,
    objects: u64,
    bytes: u64,
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if Bounds::understands(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let bounds = Bounds::from_filters(filters);
        let (parts, pruning) = self.plan(&bounds).await.map_err(external)?;
        self.stats
            .planned_objects
            .fetch_add(pruning.objects, Ordering::Relaxed);
        self.stats
            .planned_bytes
            .fetch_add(pruning.bytes, Ordering::Relaxed);
        let full = schema();
        let projection: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..full.fields().len()).collect());
        let projected = Arc::new(full.project(&projection)?);
        let partitions = self.partitions.clamp(1, parts.len().max(1));
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(EventsExec {
            parts: Arc::new(parts),
            pruning,
            bounds,
            store: self.store.clone(),
            bucket: self.bucket.clone(),
            projection,
            schema: projected,
            props,
            partitions,
            limit,
            stats: self.stats.clone(),
        }))
    }
}

/// Reads the planned parts: partition `i` reads every part `j` with
/// `j % partitions == i`.
pub(crate) struct EventsExec {
    parts: Arc<Vec<Part>>,
    pruning: Pruning,
    bounds: Bounds,
    store: Arc<dyn Store>,
    bucket: Option<Bucket>,
    projection: Vec<usize>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    partitions: usize,
    limit: Option<usize>,
    stats: Arc<ReadStats>,
}

impl fmt::Debug for EventsExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsExec")
            .field("parts", &self.parts.len())
            .finish_non_exhaustive()
    }
}

/// Objects named in a plain `EXPLAIN` (all of them under `EXPLAIN VERBOSE`).
const EXPLAIN_OBJECTS: usize = 20;

impl DisplayAs for EventsExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hot: Vec<String> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Hot(s) => Some(format!("{} seq {}-{}", s.stream, s.from_seq, s.to_seq)),
                Part::Cold { .. } => None,
            })
            .collect();
        let cold: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Cold { batch, .. } => Some(batch.object_key.as_str()),
                Part::Hot(_) => None,
            })
            .collect();
        let p = &self.pruning;
        write!(
            f,
            "EventsExec: streams={}, hot=[{}], archive objects={} of {} batches ({} bytes)",
            p.streams,
            hot.join(", "),
            p.objects,
            p.batches,
            p.bytes
        )?;
        let shown = match t {
            DisplayFormatType::Verbose => cold.len(),
            _ => EXPLAIN_OBJECTS,
        };
        if !cold.is_empty() {
            write!(
                f,
                " [{}",
                cold.iter()
                    .take(shown)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
            if cold.len() > shown {
                write!(
                    f,
                    ", … {} more (EXPLAIN VERBOSE lists all)",
                    cold.len() - shown
                )?;
            }
            write!(f, "]")?;
        }
        let b = &self.bounds;
        let mut narrowed = Vec::new();
        if b.types.is_some() {
            narrowed.push("type");
        }
        if b.time != Bounds::default().time {
            narrowed.push("time");
        }
        if b.received != Bounds::default().received || b.dt != Bounds::default().dt {
            narrowed.push("received/dt");
        }
        if b.seq != Bounds::default().seq {
            narrowed.push("seq");
        }
        if !narrowed.is_empty() {
            write!(f, ", pushed: {}", narrowed.join(", "))?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for EventsExec {
    fn name(&self) -> &str {
        "EventsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(2);
        let reader = Reader {
            parts: self.parts.clone(),
            partition,
            partitions: self.partitions,
            store: self.store.clone(),
            bucket: self.bucket.clone(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            limit: self.limit,
            stats: self.stats.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = reader.run(&tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
            );
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// One partition's reading.
struct Reader {
    parts: Arc<Vec<Part>>,
    partition: usize,
    partitions: usize,
    store: Arc<dyn Store>,
    bucket: Option<Bucket>,
    projection: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
    stats: Arc<ReadStats>,
}

type Sender = tokio::sync::mpsc::Sender<DfResult<RecordBatch>>;

impl Reader {
    async fn run(self, tx: &Sender) -> DfResult<()> {
        let mut sent = 0usize;
        let parts = self.parts.clone();
        for (i, part) in parts.iter().enumerate() {
            if i % self.partitions != self.partition || self.limit.is_some_and(|l| sent >= l) {
                continue;
            }
            let more = match part {
                Part::Hot(scan) => self.hot(scan.clone(), tx, &mut sent).await?,
                Part::Cold {
                    batch,
                    skip,
                    day,
                    seqs,
                } => self.cold(batch, skip, *day, *seqs, tx, &mut sent).await?,
            };
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn rows(&self) -> Rows {
        Rows::new(&self.projection, self.schema.clone())
    }

    /// Sends a batch; false when the query no longer wants rows.
    async fn send(&self, tx: &Sender, b: RecordBatch, sent: &mut usize) -> bool {
        *sent += b.num_rows();
        tx.send(Ok(b)).await.is_ok()
    }

    async fn hot(&self, mut scan: EventScan, tx: &Sender, sent: &mut usize) -> DfResult<bool> {
        loop {
            let page = self.store.scan_events(&scan).await.map_err(external)?;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(true);
            };
            let full = page.len() >= scan.limit;
            self.stats
                .hot_rows
                .fetch_add(page.len() as u64, Ordering::Relaxed);
            let mut rows = self.rows();
            let stream = scan.stream.clone();
            let batch = tokio::task::spawn_blocking(move || {
                for e in &page {
                    rows.push(&e.body, Some(&e.hash), "hot", None, &|_| true)
                        .map_err(|b| {
                            QueryError::Corrupt(format!("hot store: stream {stream}: {}", b.0))
                        })?;
                }
                Ok::<_, QueryError>(rows.finish())
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(external)?;
            if !self.send(tx, batch, sent).await {
                return Ok(false);
            }
            if !full || last >= scan.to_seq || self.limit.is_some_and(|l| *sent >= l) {
                return Ok(true);
            }
            scan.from_seq = last + 1;
        }
    }

    async fn cold(
        &self,
        b: &ArchiveBatch,
        skip: &[(u64, u64)],
        day: i64,
        seqs: (u64, u64),
        tx: &Sender,
        sent: &mut usize,
    ) -> DfResult<bool> {
        let bucket = self.bucket.as_ref().ok_or_else(|| {
            external(QueryError::Archive(format!(
                "stream {} seqs {}-{} are archived, and no archive is open to read them",
                b.stream, b.start_seq, b.end_seq
            )))
        })?;
        let key = &b.object_key;
        let bytes = bucket
            .get(key)
            .await
            .map_err(|e| external(QueryError::Archive(crate::report::Chain(&e).to_string())))?
            .ok_or_else(|| {
                external(QueryError::Archive(format!(
                    "{key}: recorded as archived, but not in the archive ({}): run `trailkeep verify --archive`",
                    bucket.display()
                )))
            })?;
        self.stats.cold_objects.fetch_add(1, Ordering::Relaxed);
        self.stats
            .cold_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let compression = key
            .rsplit('.')
            .next()
            .and_then(|ext| match ext {
                "gz" => Some(Compression::Gzip),
                "zst" => Some(Compression::Zstd),
                _ => None,
            })
            .ok_or_else(|| external(QueryError::Archive(format!("{key}: neither .gz nor .zst"))))?;
        let (key, sha, raw) = (key.clone(), b.object_sha256.clone(), b.raw_size);
        let (first, last) = (b.start_seq, b.end_seq);
        let (mut rows, skip, stats) = (self.rows(), skip.to_vec(), self.stats.clone());
        let (btx, mut brx) = tokio::sync::mpsc::channel::<Result<RecordBatch, QueryError>>(2);
        let decode = tokio::task::spawn_blocking(move || {
            let fail = |m: String| {
                let _ = btx.blocking_send(Err(QueryError::Archive(m)));
            };
            let digest = hex::encode(sha2::Sha256::digest(&bytes));
            if digest != sha {
                return fail(format!(
                    "{key}: SHA-256 {digest} is not the recorded {sha}: the object changed; run `trailkeep verify --archive`"
                ));
            }
            // Rows that need nothing from the events (count(*) by day):
            // the recorded count of an object whose bytes are the ones
            // recorded, without decompressing it.
            if rows.needs_no_event() && skip.is_empty() && seqs.0 <= first && seqs.1 >= last {
                let mut left = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
                while left > 0 {
                    let n = left.min(BATCH_ROWS);
                    if let Err(e) = rows.push_blank(n, "cold", day) {
                        return fail(format!("{key}: {}", e.0));
                    }
                    left -= n;
                    if btx.blocking_send(Ok(rows.finish())).is_err() {
                        return;
                    }
                }
                stats
                    .cold_rows
                    .fetch_add(last - first + 1, Ordering::Relaxed);
                return;
            }
            let text = match crate::objstore::compression::decompress(&bytes, compression, raw) {
                Ok(t) => t,
                Err(e) => return fail(format!("{key}: {e}")),
            };
            let mut count = 0u64;
            for (n, line) in text.split(|c| *c == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let Ok(line) = std::str::from_utf8(line) else {
                    return fail(format!("{key}: line {}: not UTF-8", n + 1));
                };
                let keep = |seq: u64| {
                    seq >= seqs.0
                        && seq <= seqs.1
                        && !skip.iter().any(|(a, z)| (*a..=*z).contains(&seq))
                };
                match rows.push(line, None, "cold", Some(day), &keep) {
                    Ok(true) => count += 1,
                    Ok(false) => continue,
                    Err(e) => return fail(format!("{key}: line {}: {}", n + 1, e.0)),
                }
                if rows.len() >= BATCH_ROWS && btx.blocking_send(Ok(rows.finish())).is_err() {
                    return;
                }
            }
            stats.cold_rows.fetch_add(count, Ordering::Relaxed);
            if rows.len() > 0 {
                let _ = btx.blocking_send(Ok(rows.finish()));
            }
        });
        while let Some(batch) = brx.recv().await {
            let batch = batch.map_err(external)?;
            if !self.send(tx, batch, sent).await {
                return Ok(false);
            }
            if self.limit.is_some_and(|l| *sent >= l) {
                break;
            }
        }
        drop(brx);
        decode
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(true)
    }
}
