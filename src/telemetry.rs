//! Logging and Prometheus metrics set-up.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Returns the process-wide Prometheus handle, installing the recorder once.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (tests embedding us).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
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
