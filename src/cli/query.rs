//! `trailkeep query "SQL"`: SQL over the table `events`, hot and archived
//! events together, from the store (read-only) and the archive, or through
//! a server's `POST /v1/query` with a key (whose stream the server
//! enforces). The answer goes to stdout in the format asked for; what the
//! query read goes to stderr.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::reader::{Reader, Remote};
use crate::query::output::{self, Format};
use crate::query::{Engine, QueryError, QueryStats, ReadStats, Visible};

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("{s:?} is not a format; use one of {}", Format::NAMES))
}

/// Arguments of `query`.
#[derive(Debug, Args)]
#[command(
    after_help = "The table `events` has one row per event, hot or archived, each seq once:\n  \
stream, seq, id, type, time, received, actor, subject, data (JSON text), prev, hash,\n  \
tier ('hot' or 'cold'), dt (the day of `received`, the archive's partition).\n\
JSON paths: json_get_str(data, 'principalId'), data->>'principalId', json_get_int(...).\n\n\
Examples:\n  \
trailkeep query \"SELECT type, count(*) FROM events WHERE time >= now() - INTERVAL '7 days' GROUP BY type\"\n  \
trailkeep query --format csv \"SELECT * FROM events WHERE json_get_str(data, 'principalId') = 'user-123'\"\n  \
trailkeep query \"EXPLAIN SELECT * FROM events WHERE stream = 'grants' AND dt = '2026-03-01'\""
)]
pub struct QueryArgs {
    /// One SQL statement over `events` (`-` reads it from stdin).
    pub sql: String,
    /// Output: table, json (columns, rows, stats), ndjson, csv, parquet
    /// or arrow (binary formats only to a file or pipe).
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: Format,
    /// Same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Print nothing on stderr: no progress line, no summary of what was
    /// read.
    #[arg(long, short)]
    pub quiet: bool,
    /// Where to read.
    #[command(flatten)]
    pub remote: Remote,
}

/// `12,345 bytes` as people read it.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The one-line summary of what a query read.
fn summary(s: &QueryStats) -> String {
    format!(
        "{} row{} in {:.2} s; read {} hot row{} and {} archive object{} ({})",
        s.rows,
        if s.rows == 1 { "" } else { "s" },
        s.elapsed_ms as f64 / 1000.0,
        s.hot_rows_read,
        if s.hot_rows_read == 1 { "" } else { "s" },
        s.objects_read,
        if s.objects_read == 1 { "" } else { "s" },
        human_bytes(s.bytes_read)
    )
}

/// The SQL line an error points at, with a caret under the column.
fn caret(sql: &str, line: Option<u64>, column: Option<u64>) -> Option<String> {
    let (l, c) = (line?, column?);
    let text = sql.lines().nth(usize::try_from(l).ok()?.checked_sub(1)?)?;
    let pad = " ".repeat(
        usize::try_from(c)
            .ok()?
            .saturating_sub(1)
            .min(text.chars().count()),
    );
    Some(format!("  {}\n  {pad}^", super::printable(text)))
}

pub(super) async fn run(
    args: &QueryArgs,
    config: impl FnOnce() -> anyhow::Result<crate::config::Config>,
) -> anyhow::Result<ExitCode> {
    let format = if args.json { Format::Json } else { args.format };
    if matches!(format, Format::Parquet | Format::Arrow) && std::io::stdout().is_terminal() {
        anyhow::bail!(
            "--format {} is binary: send stdout to a file (> answer.{}) or a pipe",
            if format == Format::Parquet {
                "parquet"
            } else {
                "arrow"
            },
            if format == Format::Parquet {
                "parquet"
            } else {
                "arrows"
            }
        );
    }
    let sql = if args.sql == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the SQL from stdin")?;
        s
    } else {
        args.sql.clone()
    };
    let show = !args.quiet && std::io::stderr().is_terminal();
    let (schema, batches, stats) = if args.remote.server.is_some() {
        let reader = Reader::open(&args.remote, || anyhow::bail!("unused")).await?;
        let Reader::Server(client) = reader else {
            anyhow::bail!("--server: not a server");
        };
        let spinner = show.then(|| progress("waiting for the server"));
        let answer = client
            .post_json(
                "/v1/query",
                &serde_json::json!({ "sql": sql, "format": "arrow" }),
            )
            .await;
        if let Some(p) = spinner {
            p.finish_and_clear();
        }
        let (headers, body) = answer?;
        let (schema, batches) =
            output::read_arrow(&body).context("the server's answer is not an Arrow stream")?;
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stats = QueryStats {
            rows: h("trailkeep-rows"),
            hot_rows_read: h("trailkeep-hot-rows-read"),
            objects_read: h("trailkeep-objects-read"),
            bytes_read: h("trailkeep-bytes-read"),
            cold_rows_read: 0,
            elapsed_ms: h("trailkeep-elapsed-ms"),
        };
        (schema, batches, stats)
    } else {
        let config = config()?;
        let store = super::reader::open_read_only(&config).await?;
        let url = config.archive_url().context("the archive URL")?;
        let bucket = match crate::objstore::Bucket::open_existing(&url, &config.archive.bucket) {
            Ok(b) => Some(b),
            Err(e) => {
                if !args.quiet {
                    eprintln!(
                        "trailkeep: warning: the archive cannot be opened ({}): archived events cannot be read",
                        crate::report::Chain(&e)
                    );
                }
                None
            }
        };
        let engine = Engine::new(store, bucket, config.query.clone());
        let counters = Arc::new(ReadStats::default());
        let ticker = show.then(|| {
            let p = progress("planning");
            let (p2, c) = (p.clone(), counters.clone());
            let t = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                    p2.set_message(format!(
                        "read {} hot rows, {} of {} archive objects ({} of {})",
                        g(&c.hot_rows),
                        g(&c.cold_objects),
                        g(&c.planned_objects),
                        human_bytes(g(&c.cold_bytes)),
                        human_bytes(g(&c.planned_bytes)),
                    ));
                }
            });
            (p, t)
        });
        let answer = engine.run(&sql, Visible::All, counters).await;
        if let Some((p, t)) = ticker {
            t.abort();
            p.finish_and_clear();
        }
        match answer {
            Ok(a) => (a.schema, a.batches, a.stats),
            Err(e) => {
                let mut message = e.to_string();
                if let QueryError::Sql { line, column, .. } = &e {
                    if let (Some(l), Some(c)) = (line, column) {
                        message.push_str(&format!(" (line {l}, column {c})"));
                    }
                    if let Some(c) = caret(&sql, *line, *column) {
                        message.push('\n');
                        message.push_str(&c);
                    }
                }
                anyhow::bail!(message);
            }
        }
    };
    let mut out = Vec::new();
    output::write(format, &schema, &batches, &stats, &mut out)?;
    super::write_stdout_bytes(&out);
    if !args.quiet && format != Format::Json {
        eprintln!("{}", summary(&stats));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(message: &str) -> indicatif::ProgressBar {
    let p = indicatif::ProgressBar::new_spinner();
    p.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    p.enable_steady_tick(Duration::from_millis(120));
    p.set_message(message.to_owned());
    p
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_error_line_gets_a_caret_under_the_column() {
        assert_eq!(
            caret("SELECT *\nFRM events", Some(2), Some(1)).unwrap(),
            "  FRM events\n  ^"
        );
        assert_eq!(caret("x", Some(3), Some(1)), None);
        assert!(
            summary(&QueryStats {
                rows: 1,
                objects_read: 2,
                bytes_read: 3 << 20,
                ..QueryStats::default()
            })
            .contains("1 row in 0.00 s; read 0 hot rows and 2 archive objects (3.0 MiB)")
        );
    }
}
