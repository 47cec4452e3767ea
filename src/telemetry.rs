//! Logging and Prometheus metrics set-up.

pub mod catalog;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use catalog::{Kind, METRICS};

/// Returns the process-wide Prometheus handle, installing the recorder once
/// with every metric of the [`catalog`] described (`# HELP`), histograms
/// given their buckets, and each series whose labels are known in advance
/// registered at zero.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for m in METRICS {
                if let Kind::Histogram(buckets) = m.kind {
                    // Fails only for an empty bucket list, which the
                    // catalogue does not have (tested).
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), buckets)
                        .unwrap_or_else(|_| PrometheusBuilder::new());
                }
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (tests embedding us).
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_all();
            }
            handle
        })
        .clone()
}

/// Describes every metric and registers its series known in advance.
fn describe_all() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram(_) => metrics::describe_histogram!(m.name, m.help),
        }
        // Series exist from the start only where every label's values are
        // known here; the others are registered by their owners (a
        // destination's name, a source's) when they start.
        if m.labels.iter().any(|(_, values)| values.is_empty()) {
            continue;
        }
        for labels in label_sets(m.labels) {
            zero(m, &labels);
        }
    }
}

/// Every combination of the known label values.
fn label_sets(labels: &[(&'static str, &'static [&'static str])]) -> Vec<Vec<metrics::Label>> {
    let mut sets = vec![Vec::new()];
    for (name, values) in labels {
        sets = sets
            .into_iter()
            .flat_map(|set| {
                values.iter().map(move |v| {
                    let mut s = set.clone();
                    s.push(metrics::Label::new(*name, *v));
                    s
                })
            })
            .collect();
    }
    sets
}

/// Registers one series at its zero (a gauge's "nothing yet" value).
fn zero(m: &catalog::Metric, labels: &[metrics::Label]) {
    let labels = labels.to_vec();
    match m.kind {
        Kind::Counter => metrics::counter!(m.name, labels).increment(0),
        Kind::Gauge => {
            let initial = if m.name == "trailkeep_verify_last_ok" {
                -1.0
            } else {
                0.0
            };
            metrics::gauge!(m.name, labels).set(initial);
        }
        // A histogram shows its buckets once registered.
        Kind::Histogram(_) => drop(metrics::histogram!(m.name, labels)),
    }
}

/// Registers, at zero, the series of `name` with `key = value` and the
/// known values of its other labels (a configured destination's counters,
/// a source's).
pub fn register(name: &'static str, key: &'static str, value: &str) {
    let Some(m) = catalog::find(name) else {
        return;
    };
    let known: Vec<_> = m
        .labels
        .iter()
        .filter(|(k, _)| *k != key)
        .copied()
        .collect();
    for mut labels in label_sets(&known) {
        labels.insert(0, metrics::Label::new(key, value.to_owned()));
        zero(m, &labels);
    }
}

/// Installs the `tracing` subscriber: `RUST_LOG` or `info`, to stderr;
/// with `json`, one JSON object a line (`timestamp`, `level`, `fields`,
/// `target`) for log shippers. Colour codes go to a terminal only, and not
/// when `NO_COLOR` is set (<https://no-color.org>): logs redirected to a
/// file or a journal stay plain text (issue #15).
pub fn init_logging(json: bool) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let _ = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.try_init()
    };
}
