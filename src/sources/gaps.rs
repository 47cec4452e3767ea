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
}

#[derive(Default)]
struct Local {
    open: usize,
    since_ms: i64,
    /// When the last connection closed, in this process.
    last_end_ms: Option<i64>,
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
        l.since_ms = t;
        // Every record as it was before this node received again (its own
        // says where it left off, in this process or the last one).
        let before = match self.store.source_receivers(&self.source).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot read the receiving records; recording a possible gap from the last one known");
                None
            }
        };
        self.put(true, t, t, "disconnected").await;
        let own_end = l.last_end_ms.take();
        drop(l);
        let me = self.clone();
        tokio::spawn(async move {
            me.settle(before.unwrap_or_default(), own_end, t, resume)
                .await;
        });
        true
    }

    /// A connection closed at `end_ms` (`stopped`: the node is shutting
    /// down).
    pub(crate) async fn closed(&self, end_ms: i64, stopped: bool) {
        let mut l = self.inner.lock().await;
        l.open = l.open.saturating_sub(1);
        self.gauge(l.open);
        if l.open == 0 {
            l.last_end_ms = Some(end_ms);
            let since = l.since_ms;
            let ended = if stopped { "stopped" } else { "disconnected" };
            self.put(false, since, end_ms, ended).await;
        }
    }

    /// Writes the heartbeat while receiving, and logs the gap records that
    /// are due. Call every [`RECEIVER_BEAT_MS`].
    pub(crate) async fn beat(&self) {
        let l = self.inner.lock().await;
        if l.open > 0 {
            self.put(true, l.since_ms, now_ms(), "disconnected").await;
        }
        drop(l);
        self.log_due().await;
    }

    fn gauge(&self, open: usize) {
        metrics::gauge!("trailkeep_source_connections", "source" => self.source.clone())
            .set(open as f64);
        metrics::gauge!("trailkeep_source_connected", "source" => self.source.clone())
            .set(if open > 0 { 1.0 } else { 0.0 });
    }

    async fn put(&self, receiving: bool, since_ms: i64, until_ms: i64, ended: &str) {
        let r = SourceReceiver {
            source: self.source.clone(),
            node: self.node.clone(),
            receiving,
            since_ms,
            until_ms,
            ended: ended.to_owned(),
        };
        if let Err(e) = self.store.put_source_receiver(r).await {
            tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot store the receiving record");
        }
    }

    /// Decides whether this node's receiving again at `t` ends a window
    /// nobody covered, waiting for nodes that may still be receiving, and
    /// records it.
    async fn settle(
        &self,
        before: Vec<SourceReceiver>,
        own_end: Option<i64>,
        t: i64,
        resume: bool,
    ) {
        let mut others: Vec<SourceReceiver> = Vec::new();
        let mut ends: Vec<(i64, &'static str)> = Vec::new();
        for r in before {
            if r.node == self.node {
                // This node's last run (killed: still "receiving"; or
                // stopped) or its own last disconnection.
                let reason = if r.receiving || r.ended == "stopped" {
                    "restart"
                } else {
                    "disconnected"
                };
                ends.push((r.until_ms, reason));
            } else {
                others.push(r);
            }
        }
        if let Some(e) = own_end {
            ends.push((e, "disconnected"));
        }
        // Nodes that may be receiving: wait until each covered `t` or
        // stopped or went silent.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis((RECEIVER_STALE_MS + RECEIVER_BEAT_MS) as u64);
        loop {
            let pending = others.iter().any(|r| {
                r.receiving && r.until_ms < t && now_ms() - r.until_ms <= RECEIVER_STALE_MS
            });
            if !pending || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis((RECEIVER_BEAT_MS / 2) as u64)).await;
            match self.store.source_receivers(&self.source).await {
                Ok(now) => {
                    for o in &mut others {
                        // A record rewritten since (the node reconnected)
                        // loses its earlier end: the gap only grows.
                        if let Some(n) = now.iter().find(|n| n.node == o.node) {
                            *o = n.clone();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %crate::report::Chain(&e), "cannot read the receiving records");
                }
            }
        }
        let Some(gap) = uncovered(&others, &ends, t) else {
            return;
        };
        let (start_ms, end_ms, reason) = gap;
        self.record(start_ms, end_ms, reason, resume).await;
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
    fn gap_times_are_written_as_the_log_writes_times() {
        assert_eq!(format_ms(1_764_700_201_250), "2025-12-02T18:30:01.250000Z");
    }
}
