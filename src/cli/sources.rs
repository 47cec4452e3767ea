//! `trailkeep sources`: status, rejected events, backfill on demand.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

/// Source operations.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Show each source: connected, last event, counters, last error, the
    /// latest possible upstream gaps.
    Status {
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// List events a source received but could not store.
    Rejected {
        /// Only this source.
        #[arg(long, env = "TRAILKEEP_SOURCE")]
        source: Option<String>,
        /// Most rows.
        #[arg(long, default_value_t = 100, env = "TRAILKEEP_LIMIT")]
        limit: usize,
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// Read a source's backfill endpoint from a time on (works beside `serve`).
    Backfill {
        /// Only this source (default: every source with a backfill endpoint).
        #[arg(long, env = "TRAILKEEP_SOURCE")]
        source: Option<String>,
        /// RFC 3339 time to start from, e.g. 2026-11-01T00:00:00Z.
        #[arg(long, env = "TRAILKEEP_SINCE")]
        since: String,
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
}

pub(super) async fn run(config: &Config, cmd: &SourcesCommand) -> anyhow::Result<ExitCode> {
    let store = super::open_existing(config).await?;
    match cmd {
        SourcesCommand::Status { json } => {
            let states = store.source_states().await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&states)?);
            } else if states.is_empty() {
                println!("no source has run on this data directory");
            } else {
                for s in states {
                    println!(
                        "{} -> {}: {} | last event {} (id {}) | taken {} duplicates {} rejected {} filtered {} reconnects {} | last error {}",
                        s.name,
                        s.stream,
                        if s.connected {
                            "connected"
                        } else {
                            "disconnected"
                        },
                        s.last_event_time.as_deref().unwrap_or("-"),
                        s.last_event_id.as_deref().unwrap_or("-"),
                        s.taken,
                        s.duplicates,
                        s.rejected,
                        s.filtered,
                        s.reconnects,
                        match (&s.last_error, &s.last_error_at) {
                            (Some(e), Some(at)) => format!("{e} at {at}"),
                            (Some(e), None) => e.clone(),
                            _ => "-".into(),
                        }
                    );
                    for g in &s.gaps {
                        println!(
                            "  possible upstream gap {} - {} ({}, resume {}{})",
                            g.start,
                            g.end,
                            g.reason,
                            g.resume,
                            if g.merged > 1 {
                                format!(", {} gaps merged", g.merged)
                            } else {
                                String::new()
                            }
                        );
                    }
                    if s.gaps_total > s.gaps.len() as u64 {
                        println!("  ({} gap records in all)", s.gaps_total);
                    }
                }
            }
        }
        SourcesCommand::Rejected {
            source,
            limit,
            json,
        } => {
            let rows = store.rejected(source.as_deref(), *limit).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in rows {
                    println!(
                        "{} {} [{}] {}: {}",
                        r.at, r.source, r.position, r.reason, r.raw
                    );
                }
            }
        }
        SourcesCommand::Backfill {
            source,
            since,
            json,
        } => {
            if time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
                .is_err()
            {
                anyhow::bail!(
                    "--since {since:?} is not an RFC 3339 time such as 2026-11-01T00:00:00Z"
                );
            }
            let chosen: Vec<_> = config
                .sources
                .iter()
                .filter(|s| source.as_ref().is_none_or(|n| *n == s.name) && s.backfill.is_some())
                .collect();
            if chosen.is_empty() {
                anyhow::bail!(
                    "no configured source with a [sources.backfill] endpoint{}",
                    source
                        .as_ref()
                        .map(|n| format!(" named {n}"))
                        .unwrap_or_default()
                );
            }

            let (appender, batcher) = crate::ingest::Appender::start(store.clone(), config.batch);
            let mut results = Vec::new();
            for cfg in chosen {
                let client = cfg.http_client()?;
                let key = cfg.load_key()?;
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} backfilling {msg}: {pos} items {per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(cfg.name.clone());
                let b = bar.clone();
                let stats = crate::sources::backfill::run(
                    cfg,
                    &client,
                    &key,
                    &appender,
                    store.as_ref(),
                    Some(since),
                    &move |n| b.set_position(n),
                )
                .await
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("backfill of source {}", cfg.name))?;
                bar.finish_and_clear();
                results.push((cfg.name.clone(), stats));
            }
            drop(appender);
            let _ = batcher.await;
            if *json {
                let v: Vec<_> = results
                    .iter()
                    .map(|(n, s)| serde_json::json!({"source": n, "stats": s}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (n, s) in results {
                    println!(
                        "{n}: {} pages, {} new events, {} already stored, {} filtered, {} rejected",
                        s.pages, s.taken, s.duplicates, s.filtered, s.rejected
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
