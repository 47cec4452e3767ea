//! Possible upstream gaps: windows in which no connection of a source, on
//! any node, was receiving, so events the upstream sent then may be lost
//! (it cannot resume, or its replay is not to be taken on trust).
//!
//! Each node keeps one receiving record per source in the store
//! ([`SourceReceiver`]): `receiving` with a heartbeat every
//! [`RECEIVER_BEAT_MS`] while at least one of its connections is open,
//! else when and why it stopped. When a node starts receiving again (none
//! of its connections was open, now one is: `Coverage::opened`), it
//! reads every node's record from before that moment and works out the
//! window nobody covered (`uncovered`):
//!
//! - its start is the latest moment any node is known to have been
//!   receiving: the end of a record that stopped, or the last heartbeat of
//!   one that went silent (a node killed with `kill -9`);
//! - a node whose record says it is receiving decides nothing until its
//!   heartbeat passes the moment in question (it covered it) or goes
//!   stale for [`RECEIVER_STALE_MS`] (it died at its last heartbeat);
//! - no record at all (the source's first start) is no gap.
//!
//! Until it is settled, the window's earliest possible start is kept in
//! the node's own record (`pending_ms`): a node killed meanwhile records
//! that widest window (`unsettled`) when it comes back, and a node
//! shutting down decides at once, counting a node that has not yet
//! confirmed it covered the window as not covering it.
//!
//! Every node that starts receiving does this, so each uncovered window
//! is found by the node that ended it; two nodes finding one window
//! record it once (the store merges a gap its latest record covers).
//! Gaps are recorded in the store (status), counted in metrics, and
//! written as `source.gap` events to the log's own stream — at most one
//! per `gap_merge_ms` per record, since gaps that close are merged.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::store::{
    GapRecorded, RECEIVER_BEAT_MS, RECEIVER_STALE_MS, SourceGap, SourceReceiver, Store,
};

use crate::selflog::SOURCE_GAP;

/// Ms since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Ms since the epoch as RFC 3339, UTC, as the log writes times.
pub(crate) fn format_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::event::format_received(t)
}

/// One node's receiving from one source: how many connections are open,
/// kept in the store as its [`SourceReceiver`].
pub(crate) struct Coverage {
    store: Arc<dyn Store>,
    source: String,
    stream: String,
    node: String,
    merge_ms: i64,
    inner: tokio::sync::Mutex<Local>,
    /// Turns true at shutdown: pending decisions are made at once.
    hurry: tokio::sync::watch::Sender<bool>,
    settling: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Local {
    open: usize,
    /// When the last connection closed, in this process.
    last_end_ms: Option<i64>,
    /// The record as last written.
    row: Option<SourceReceiver>,
    /// Windows (by their end) this process is still settling.
    settling: Vec<i64>,
}

impl Coverage {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        source: &str,
        stream: &str,
        node: &str,
        merge: Duration,
    ) -> Self {
        Self {
            store,
            source: source.to_owned(),
            stream: stream.to_owned(),
            node: node.to_owned(),
            merge_ms: i64::try_from(merge.as_millis()).unwrap_or(i64::MAX),
            inner: tokio::sync::Mutex::default(),
            hurry: tokio::sync::watch::channel(false).0,
            settling: std::sync::Mutex::default(),
        }
    }

    /// A connection is open and receiving (`resume`: it asked for a
    /// replay with `Last-Event-ID`). Returns whether this node was not
    /// receiving before (the caller backfills then).
    pub(crate) async fn opened(self: &Arc<Self>, resume: bool) -> bool {
        let mut l = self.inner.lock().await;
        l.open += 1;
        self.gauge(l.open);
        if l.open > 1 {
            return false;
        }
        let t = now_ms();
        // Every record as it was before this node received again (its own
        // says where it left off, in this process or the last one).
        let before = match self.store.source_receivers(&self.source).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot read the receiving records; recording a possible gap from the last one known");
                Vec::new()
            }
        };
        let own_end = l.last_end_ms.take();
        let mut w = Window::new(&self.node, before, own_end, t);
        if w.unsettled
            .is_some_and(|(_, end)| l.settling.contains(&end))
        {
            // Pending in this process, not left by a dead one.
            w.unsettled = None;
        }
        l.settling.push(t);
        // Until it is settled, the window's earliest possible start is
        // kept in this node's record: a node killed meanwhile records it
        // when it comes back.
        let row = SourceReceiver {
            source: self.source.clone(),
            node: self.node.clone(),
            receiving: true,
            since_ms: t,
            until_ms: t,
            ended: "disconnected".into(),
            pending_ms: w.earliest_start(),
        };
        self.put(&mut l, row).await;
        drop(l);
        let me = self.clone();
        let task = tokio::spawn(async move { me.settle(w, resume).await });
        let mut settling = self
            .settling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        settling.retain(|h| !h.is_finished());
        settling.push(task);
        true
    }

    /// A connection closed at `end_ms` (`stopped`: the node is shutting
    /// down).
    pub(crate) async fn closed(&self, end_ms: i64, stopped: bool) {
        let mut l = self.inner.lock().await;
        l.open = l.open.saturating_sub(1);
        self.gauge(l.open);
        if l.open == 0
            && let Some(mut row) = l.row.clone()
        {
            l.last_end_ms = Some(end_ms);
            row.receiving = false;
            row.until_ms = end_ms;
            row.ended = if stopped { "stopped" } else { "disconnected" }.into();
            self.put(&mut l, row).await;
        }
    }

    /// Writes the heartbeat while receiving, and logs the gap records that
    /// are due. Call every [`RECEIVER_BEAT_MS`].
    pub(crate) async fn beat(&self) {
        let mut l = self.inner.lock().await;
        if l.open > 0
            && let Some(mut row) = l.row.clone()
        {
            row.until_ms = now_ms();
            self.put(&mut l, row).await;
        }
        drop(l);
        self.log_due().await;
    }

    /// At shutdown: decides every pending window at once (a node that
    /// has not yet confirmed it covered one counts as not covering it),
    /// records it, and logs what is due.
    pub(crate) async fn finish(&self) {
        self.hurry.send_replace(true);
        let tasks = std::mem::take(
            &mut *self
                .settling
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in tasks {
            let _ = t.await;
        }
        self.log_due().await;
    }

    fn gauge(&self, open: usize) {
        metrics::gauge!("trailkeep_source_connections", "source" => self.source.clone())
            .set(open as f64);
        metrics::gauge!("trailkeep_source_connected", "source" => self.source.clone())
            .set(if open > 0 { 1.0 } else { 0.0 });
    }

    async fn put(&self, l: &mut Local, row: SourceReceiver) {
        l.row = Some(row.clone());
        if let Err(e) = self.store.put_source_receiver(row).await {
            tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot store the receiving record");
        }
    }

    /// Decides whether this node's receiving again at `w.t` ends a window
    /// nobody covered, waiting for nodes that may still be receiving, and
    /// records it; then clears the pending mark.
    async fn settle(&self, mut w: Window, resume: bool) {
        if let Some((start, end)) = w.unsettled {
            // The last run of this node stopped before it could tell.
            self.record(start, end, "unsettled", resume).await;
        }
        let mut hurry = self.hurry.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis((RECEIVER_STALE_MS + RECEIVER_BEAT_MS) as u64);
        while w.pending() && tokio::time::Instant::now() < deadline {
            let hurried = *hurry.borrow_and_update();
            if !hurried {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis((RECEIVER_BEAT_MS / 2) as u64)) => {}
                    _ = hurry.changed() => {}
                }
            }
            match self.store.source_receivers(&self.source).await {
                Ok(now) => w.refresh(&now),
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot read the receiving records");
                }
            }
            if hurried || *hurry.borrow() {
                // One last look, then decide: err on recording.
                break;
            }
        }
        if let Some((start, end, reason)) = uncovered(&w.others, &w.ends, w.t) {
            self.record(start, end, reason, resume).await;
        }
        let mut l = self.inner.lock().await;
        l.settling.retain(|s| *s != w.t);
        if let Some(mut row) = l.row.clone()
            && row.since_ms == w.t
            && row.pending_ms.is_some()
        {
            row.pending_ms = None;
            if row.receiving {
                row.until_ms = now_ms();
            }
            self.put(&mut l, row).await;
        }
    }

    async fn record(&self, start_ms: i64, end_ms: i64, reason: &str, resume: bool) {
        let gap = SourceGap {
            source: self.source.clone(),
            start: format_ms(start_ms),
            end: format_ms(end_ms),
            reason: reason.to_owned(),
            resume: if resume { "last_event_id" } else { "none" }.to_owned(),
            merged: 1,
            start_ms,
            end_ms,
        };
        tracing::warn!(source = %self.source, start = %gap.start, end = %gap.end, reason, resume = %gap.resume, "possible upstream gap: no connection on any node was receiving");
        match self.store.record_source_gap(gap, self.merge_ms).await {
            Ok(GapRecorded::Covered) => {}
            Ok(GapRecorded::New | GapRecorded::Merged) => {
                metrics::counter!("trailkeep_source_gaps_total", "source" => self.source.clone())
                    .increment(1);
                metrics::counter!("trailkeep_source_gap_seconds_total", "source" => self.source.clone())
                    // Whole seconds, rounded up.
                    .increment(u64::try_from((end_ms - start_ms + 999) / 1000).unwrap_or(0));
            }
            Err(e) => {
                tracing::error!(source = %self.source, error = %crate::report::Chain(&e), "cannot record a possible upstream gap");
            }
        }
        self.log_due().await;
    }

    /// Writes the gap records that are due to the log's own stream.
    async fn log_due(&self) {
        let now = now_ms();
        let due = match self
            .store
            .gaps_to_log(&self.source, now.saturating_sub(self.merge_ms))
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot read the gaps to log");
                return;
            }
        };
        for g in due {
            let event = (
                format!("gap:{}:{}:{}", self.source, g.start_ms, g.end_ms),
                SOURCE_GAP,
                json!({
                    "source": g.source,
                    "stream": self.stream,
                    "start": g.start,
                    "end": g.end,
                    "seconds": (g.end_ms - g.start_ms) as f64 / 1000.0,
                    "reason": g.reason,
                    "resume": g.resume,
                    "merged": g.merged,
                }),
            );
            let logged = crate::selflog::record(self.store.as_ref(), vec![event]).await;
            let marked = match logged {
                Ok(()) => {
                    self.store
                        .gap_logged(&self.source, g.start_ms, g.end_ms, now)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = marked {
                tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot log a gap record; will retry");
                return;
            }
        }
    }
}

/// What a node knows, when it starts receiving again at `t`, of the
/// window before it.
pub(crate) struct Window {
    /// Other nodes' records (refreshed while some may still be receiving).
    others: Vec<SourceReceiver>,
    /// This node's own ends before `t`, with reasons.
    ends: Vec<(i64, &'static str)>,
    t: i64,
    /// A window this node's last run left pending: (start, end).
    unsettled: Option<(i64, i64)>,
}

impl Window {
    fn new(node: &str, before: Vec<SourceReceiver>, own_end: Option<i64>, t: i64) -> Self {
        let mut w = Self {
            others: Vec::new(),
            ends: Vec::new(),
            t,
            unsettled: None,
        };
        for r in before {
            if r.node == node {
                // This node's last run (killed: still "receiving"; or
                // stopped) or its own last disconnection.
                let reason = if r.receiving || r.ended == "stopped" {
                    "restart"
                } else {
                    "disconnected"
                };
                w.ends.push((r.until_ms, reason));
                if let Some(p) = r.pending_ms {
                    w.unsettled = Some((p, r.since_ms));
                }
            } else {
                w.others.push(r);
            }
        }
        if let Some(e) = own_end {
            w.ends.push((e, "disconnected"));
        }
        w
    }

    /// Whether a node may still be receiving and has not yet said so
    /// past `t`.
    fn pending(&self) -> bool {
        self.others.iter().any(|r| {
            r.receiving && r.until_ms < self.t && now_ms() - r.until_ms <= RECEIVER_STALE_MS
        })
    }

    /// Takes the records as they are now. A record rewritten since (its
    /// node reconnected) loses its earlier end: the gap only grows.
    fn refresh(&mut self, now: &[SourceReceiver]) {
        for o in &mut self.others {
            if let Some(n) = now.iter().find(|n| n.node == o.node) {
                *o = n.clone();
            }
        }
    }

    /// The earliest start the window can get, if it can be a gap at all.
    fn earliest_start(&self) -> Option<i64> {
        let ends = self
            .ends
            .iter()
            .map(|(e, _)| *e)
            .chain(
                self.others
                    .iter()
                    .filter(|r| !r.receiving)
                    .map(|r| r.until_ms),
            )
            .max();
        ends.or_else(|| {
            self.others
                .iter()
                .filter(|r| r.receiving && r.until_ms < self.t)
                .map(|r| r.until_ms)
                .min()
        })
        .filter(|s| *s < self.t)
    }
}

/// The window before `t` that no node covered, from records read before
/// this node received again: `others` (other nodes, settled) and `ends`
/// (this node's own ends, with reasons). `None`: covered, or nothing known.
pub(crate) fn uncovered(
    others: &[SourceReceiver],
    ends: &[(i64, &'static str)],
    t: i64,
) -> Option<(i64, i64, &'static str)> {
    let mut ends: Vec<(i64, &'static str)> = ends.to_vec();
    // Nodes receiving through `t`, and since when.
    let mut covering: Vec<i64> = Vec::new();
    for r in others {
        if r.receiving && r.until_ms >= t {
            covering.push(r.since_ms);
        } else if r.receiving {
            // Silent: it died, last known receiving at its heartbeat.
            ends.push((r.until_ms, "node_stopped"));
        } else {
            let reason = if r.ended == "stopped" {
                "node_stopped"
            } else {
                "disconnected"
            };
            ends.push((r.until_ms, reason));
        }
    }
    let (start, reason) = ends.into_iter().max_by_key(|(e, _)| *e)?;
    let end = match covering.iter().min() {
        Some(&since) if since <= start => return None,
        Some(&since) => since.min(t),
        None => t,
    };
    (end > start).then_some((start, end, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        node: &str,
        receiving: bool,
        since_ms: i64,
        until_ms: i64,
        ended: &str,
    ) -> SourceReceiver {
        SourceReceiver {
            source: "s".into(),
            node: node.into(),
            receiving,
            since_ms,
            until_ms,
            ended: ended.into(),
            pending_ms: None,
        }
    }

    #[test]
    fn a_window_is_a_gap_only_when_no_node_covered_it() {
        // First start ever: nothing known, no gap.
        assert_eq!(uncovered(&[], &[], 100), None);
        // This node dropped at 50 and received again at 100.
        assert_eq!(
            uncovered(&[], &[(50, "disconnected")], 100),
            Some((50, 100, "disconnected"))
        );
        // Another node received from before 50 through 100: covered.
        let b = rec("b", true, 10, 120, "disconnected");
        assert_eq!(uncovered(&[b], &[(50, "disconnected")], 100), None);
        // Another node started at 70: the gap is 50-70 (it records the
        // same window when it starts, and the store merges them).
        let b = rec("b", true, 70, 120, "disconnected");
        assert_eq!(
            uncovered(&[b], &[(50, "disconnected")], 100),
            Some((50, 70, "disconnected"))
        );
        // Another node went silent (killed) at 80: the gap starts there.
        let b = rec("b", true, 10, 80, "disconnected");
        assert_eq!(
            uncovered(&[b], &[(50, "disconnected")], 100),
            Some((80, 100, "node_stopped"))
        );
        // It stopped cleanly at 90.
        let b = rec("b", false, 10, 90, "stopped");
        assert_eq!(
            uncovered(&[b], &[(50, "restart")], 100),
            Some((90, 100, "node_stopped"))
        );
        // This node's own restart.
        assert_eq!(
            uncovered(&[], &[(60, "restart")], 100),
            Some((60, 100, "restart"))
        );
        // Clocks: an end after `t` is no gap.
        assert_eq!(uncovered(&[], &[(120, "disconnected")], 100), None);
    }

    #[test]
    fn a_window_left_pending_by_a_dead_run_is_recorded_at_its_widest() {
        // This node's last run started receiving at 500 and died before it
        // settled whether the window from 100 was covered.
        let mut own = rec("me", true, 500, 800, "disconnected");
        own.pending_ms = Some(100);
        let w = Window::new(
            "me",
            vec![own, rec("b", false, 0, 50, "stopped")],
            None,
            1000,
        );
        assert_eq!(w.unsettled, Some((100, 500)));
        assert_eq!(
            w.earliest_start(),
            Some(800),
            "the last heartbeat of the dead run"
        );
        assert!(!w.pending());
        assert_eq!(
            uncovered(&w.others, &w.ends, w.t),
            Some((800, 1000, "restart"))
        );
        // A node that may still be receiving keeps the window pending, and
        // its start is at the earliest that node's last heartbeat.
        let now = now_ms();
        let w = Window::new(
            "me",
            vec![rec("b", true, now - 100, now - 50, "disconnected")],
            None,
            now,
        );
        assert!(w.pending());
        assert_eq!(w.earliest_start(), Some(now - 50));
        // Nothing known before: no window at all.
        let w = Window::new("me", Vec::new(), None, now);
        assert_eq!(w.earliest_start(), None);
    }

    #[test]
    fn gap_times_are_written_as_the_log_writes_times() {
        assert_eq!(format_ms(1_764_700_201_250), "2025-12-02T18:30:01.250000Z");
    }
}
