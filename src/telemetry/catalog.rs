//! Every metric trailkeep exports: name, type, help text and, for
//! histograms, buckets. `/metrics` shows each with `# HELP` and `# TYPE`
//! from the first scrape on (zero until something happens), so alert rules
//! and dashboards (`deploy/`) can rely on a series existing.
//!
//! A metric not listed here is a bug: a test scans the sources for
//! `counter!`/`gauge!`/`histogram!` names and fails on any that is missing,
//! and another checks that every metric `deploy/` names is listed.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Only goes up (reset by a restart unless it says it is persisted).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram(&'static [f64]),
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its help text.
    pub help: &'static str,
    /// Its label names and, where the values are known in advance, the
    /// values whose series exist from the start (empty: set at start by the
    /// code that knows them, such as configured destinations).
    pub labels: &'static [(&'static str, &'static [&'static str])],
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
        labels: &[],
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
        labels: &[],
    }
}

const fn labelled(
    mut m: Metric,
    labels: &'static [(&'static str, &'static [&'static str])],
) -> Metric {
    m.labels = labels;
    m
}

/// Seconds, from 0.5 ms to 10 s: commits and HTTP requests.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Events per group commit.
const GROUP: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];
/// Seconds, from 1 s to 2 h: archive runs and verification.
const LONG: &[f64] = &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0];

/// Outcomes of an ingest request.
pub const INGEST_OUTCOMES: &[&str] = &[
    "accepted",
    "invalid",
    "unauthorized",
    "forbidden",
    "too_large",
    "rate_limited",
    "unavailable",
];

/// Every metric, in the order `/metrics` documents them.
pub const METRICS: &[Metric] = &[
    // Ingest and the writer.
    labelled(
        counter(
            "trailkeep_ingest_requests_total",
            "POST /v1/streams/{stream}/events requests by outcome: accepted (stored, duplicates included), invalid (400/415/422), unauthorized (401), forbidden (403), too_large (413), rate_limited (429), unavailable (503: queue full, writer poisoned or stopped)",
        ),
        &[("outcome", INGEST_OUTCOMES)],
    ),
    counter(
        "trailkeep_ingest_bytes_total",
        "Request body bytes received by ingest (after decompression), accepted or not",
    ),
    counter(
        "trailkeep_events_appended_total",
        "Events committed and chained (new ones; duplicates not counted)",
    ),
    counter(
        "trailkeep_events_duplicate_total",
        "Events answered as duplicates of an event already stored (same id, same body)",
    ),
    gauge(
        "trailkeep_last_append_timestamp_seconds",
        "Unix time of the last commit that stored a new event on this node (0: none since start)",
    ),
    Metric {
        name: "trailkeep_commit_seconds",
        kind: Kind::Histogram(LATENCY),
        help: "Group commit latency: from the writer taking the group to the store's durable commit",
        labels: &[],
    },
    Metric {
        name: "trailkeep_commit_events",
        kind: Kind::Histogram(GROUP),
        help: "Events per group commit",
        labels: &[],
    },
    counter(
        "trailkeep_commits_rolled_back_total",
        "Group commits certainly rolled back (their requests got 503, nothing stored)",
    ),
    labelled(
        counter(
            "trailkeep_sealed_groups_total",
            "Group commits the batcher sealed ahead (SQLite pipelining), by whether the writer used the seal (no: the head had moved)",
        ),
        &[("used", &["yes", "no"])],
    ),
    gauge(
        "trailkeep_writer_poisoned",
        "1 once a commit failed with an unknown outcome: the writer refuses appends until restart",
    ),
    labelled(
        counter(
            "trailkeep_requests_refused_total",
            "Requests refused before reaching the writer, by reason (overloaded: append queue full)",
        ),
        &[("code", &["overloaded"])],
    ),
    // Checkpoints.
    counter(
        "trailkeep_checkpoints_signed_total",
        "Checkpoints signed and stored by this node",
    ),
    counter(
        "trailkeep_checkpoint_errors_total",
        "Checkpoint rounds or streams that failed to sign (retried next round)",
    ),
    gauge(
        "trailkeep_checkpoint_last_round_timestamp_seconds",
        "Unix time of this node's last completed checkpoint round (0: this node has not held the checkpointer lease)",
    ),
    gauge(
        "trailkeep_checkpoint_streams_behind",
        "Streams whose head is past their latest signed checkpoint, at scrape time",
    ),
    gauge(
        "trailkeep_streams",
        "Streams in the hot store, the log's own included, at scrape time",
    ),
    labelled(
        gauge(
            "trailkeep_stream_head_seq",
            "Head seq per stream (only with [metrics] stream_labels = true)",
        ),
        &[("stream", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_stream_checkpoint_size",
            "Size of the latest signed checkpoint per stream (only with [metrics] stream_labels = true)",
        ),
        &[("stream", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_stream_checkpoint_timestamp_seconds",
            "Unix time the latest checkpoint per stream was signed (only with [metrics] stream_labels = true)",
        ),
        &[("stream", &[])],
    ),
    // Sources.
    labelled(
        gauge(
            "trailkeep_source_connected",
            "1 while at least one connection of this node is open to the source's upstream (a standby node shows 0: alert on the max over nodes)",
        ),
        &[("source", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_source_last_event_timestamp_seconds",
            "Unix time this node last committed an event from the source (at start: the stored position's event time, or 0)",
        ),
        &[("source", &[])],
    ),
    labelled(
        counter(
            "trailkeep_source_events_total",
            "Upstream events by outcome: taken (stored), filtered (type filter), rejected (kept in the rejected record)",
        ),
        &[
            ("source", &[]),
            ("outcome", &["taken", "filtered", "rejected"]),
        ],
    ),
    labelled(
        counter(
            "trailkeep_source_reconnects_total",
            "Reconnections to the upstream after a drop or error",
        ),
        &[("source", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_source_connections",
            "Connections this node has open to the source's upstream (up to `connections`)",
        ),
        &[("source", &[])],
    ),
    labelled(
        counter(
            "trailkeep_source_gaps_total",
            "Possible upstream gaps this node recorded: windows in which no connection on any node was receiving (merged ones count each time)",
        ),
        &[("source", &[])],
    ),
    labelled(
        counter(
            "trailkeep_source_gap_seconds_total",
            "Length of the possible upstream gaps this node recorded, whole seconds rounded up",
        ),
        &[("source", &[])],
    ),
    // Destinations.
    labelled(
        counter(
            "trailkeep_destination_delivered_total",
            "Events accepted by the destination, persisted in the store (survives restarts; dead-letter retries included)",
        ),
        &[("destination", &[])],
    ),
    labelled(
        counter(
            "trailkeep_destination_retries_total",
            "Failed delivery attempts that were retried",
        ),
        &[("destination", &[])],
    ),
    labelled(
        counter(
            "trailkeep_destination_dead_letters_total",
            "Batches this node sent to the dead letters",
        ),
        &[("destination", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_destination_dead_letters_open",
            "Dead letters not yet resolved, at scrape time",
        ),
        &[("destination", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_destination_lag_events",
            "Events committed but not yet delivered, all streams the destination takes, at scrape time",
        ),
        &[("destination", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_destination_lag_seconds",
            "Age of the oldest undelivered event (receipt time), seconds, at scrape time",
        ),
        &[("destination", &[])],
    ),
    labelled(
        gauge(
            "trailkeep_destination_paused",
            "1 while an operator has paused the destination",
        ),
        &[("destination", &[])],
    ),
    // Archive.
    labelled(
        counter(
            "trailkeep_archive_runs_total",
            "Archive runs by outcome (ok or failed; a run skipped because another node holds the lease is not counted)",
        ),
        &[("outcome", &["ok", "failed"])],
    ),
    counter(
        "trailkeep_archive_failures_total",
        "Scheduled archive runs that failed (the next run goes on from the last recorded batch)",
    ),
    counter("trailkeep_archive_events_total", "Events archived"),
    counter(
        "trailkeep_archive_bytes_total",
        "Bytes written to the archive (compressed objects)",
    ),
    counter(
        "trailkeep_archive_hot_deleted_total",
        "Archived events deleted from the hot store",
    ),
    Metric {
        name: "trailkeep_archive_run_seconds",
        kind: Kind::Histogram(LONG),
        help: "Duration of archive runs, failed ones included",
        labels: &[],
    },
    gauge(
        "trailkeep_archive_last_success_timestamp_seconds",
        "Unix time of this node's last successful archive run (0: none since start)",
    ),
    gauge(
        "trailkeep_archive_held_back_events",
        "Archived events the last run kept hot because a destination has not delivered them",
    ),
    counter(
        "trailkeep_archive_indexes_written_total",
        "Archive indexes written",
    ),
    counter(
        "trailkeep_archive_index_failures_total",
        "Archive index writes that failed",
    ),
    // Verification.
    labelled(
        counter(
            "trailkeep_verify_runs_total",
            "Verifications of the hot store run by this node (scheduled or through the API) by outcome: ok, problems (something does not verify), failed (could not run)",
        ),
        &[("outcome", &["ok", "problems", "failed"])],
    ),
    gauge(
        "trailkeep_verify_last_ok",
        "1 if the last verification found no problem, 0 if it found one or could not run, -1 before the first",
    ),
    gauge(
        "trailkeep_verify_last_timestamp_seconds",
        "Unix time the last verification finished (0: none since start)",
    ),
    gauge(
        "trailkeep_verify_last_problems",
        "Problems the last verification found",
    ),
    // HTTP and the listener.
    labelled(
        counter(
            "trailkeep_http_requests_total",
            "HTTP requests by route template (unmatched: no route), method and status",
        ),
        &[("route", &[]), ("method", &[]), ("status", &[])],
    ),
    labelled(
        Metric {
            name: "trailkeep_http_request_seconds",
            kind: Kind::Histogram(LATENCY),
            help: "HTTP request latency by route template, until the response head is ready",
            labels: &[],
        },
        &[("route", &[])],
    ),
    counter(
        "trailkeep_connections_refused_total",
        "Connections closed at accept: over [server] max_connections",
    ),
    labelled(
        counter(
            "trailkeep_tls_reloads_total",
            "TLS certificate reloads by outcome",
        ),
        &[("outcome", &["ok", "failed"])],
    ),
    counter(
        "trailkeep_audit_failures_total",
        "Records the log could not write to its own _audit stream",
    ),
    // Leases and the SQLite WAL.
    labelled(
        gauge(
            "trailkeep_lease_held",
            "1 while this node holds the lease (checkpointer, archiver, verifier, source:NAME, destination:NAME)",
        ),
        &[("lease", &[])],
    ),
    // Streams owned by nodes (a shared PostgreSQL store).
    gauge(
        "trailkeep_shards_owned",
        "Shards (of 64) this node owns: it is the one node that normally appends to their streams",
    ),
    labelled(
        counter(
            "trailkeep_append_conflicts_total",
            "Append calls the store refused before writing anything, tried again: head (another writer moved a head), duplicate (an id was already stored), fenced (the shard moved to another node)",
        ),
        &[("reason", &["head", "duplicate", "fenced"])],
    ),
    labelled(
        counter(
            "trailkeep_ingest_forwarded_total",
            "Ingest requests for a stream another node owns: forwarded (the owner answered), committed_here (the owner could not be reached), failed (no answer after sending: 502)",
        ),
        &[("outcome", &["forwarded", "committed_here", "failed"])],
    ),
    counter(
        "trailkeep_ingest_redirects_total",
        "Ingest requests answered 307 to the stream's owner ([cluster] non_owner = \"redirect\")",
    ),
    gauge(
        "trailkeep_sqlite_wal_frames",
        "Frames in the SQLite WAL after the last checkpoint (bounded near 64 MiB)",
    ),
    counter(
        "trailkeep_sqlite_wal_restarts_total",
        "Times the writer finished a WAL checkpoint between commits because the WAL passed its bound",
    ),
    counter(
        "trailkeep_sqlite_checkpoint_errors_total",
        "SQLite WAL checkpoints that failed (nothing lost: the frames stay in the WAL)",
    ),
];

/// The catalogue entry for `name`.
pub fn find(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every metric the code records is catalogued (so it has HELP, TYPE
    /// and, for a histogram, buckets): a name in a `counter!`, `gauge!`,
    /// `histogram!` or `register` call that is not is a failure.
    #[test]
    fn every_metric_recorded_is_catalogued() {
        let mut seen = 0;
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices("\"trailkeep_") {
                    let name = &text[i + 1..];
                    let name = &name[..name.find('"').unwrap()];
                    let before = &text[..i];
                    let call = ["counter!(", "gauge!(", "histogram!(", "register(", "["]
                        .iter()
                        .any(|c| before.trim_end().ends_with(c));
                    if call && !name.contains(' ') {
                        seen += 1;
                        assert!(
                            find(name).is_some(),
                            "{} records {name}, which is not in the catalogue",
                            path.display()
                        );
                    }
                }
            }
        }
        assert!(seen > 40, "the scan found the metric calls ({seen})");
    }

    #[test]
    fn the_catalogue_is_well_formed() {
        for (i, m) in METRICS.iter().enumerate() {
            assert!(m.name.starts_with("trailkeep_"), "{}", m.name);
            assert!(!m.help.is_empty(), "{}", m.name);
            assert!(
                METRICS[..i].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram(b) => {
                    assert!(
                        !b.is_empty() && b.windows(2).all(|w| w[0] < w[1]),
                        "{}",
                        m.name
                    );
                }
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
        }
    }
}
