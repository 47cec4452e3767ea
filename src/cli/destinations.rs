//! `trailkeep destinations status|dead-letters|retry`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

/// Destination operations (on the store directly, also while `serve` runs).
#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Each configured destination's cursor, lag and open dead letters per stream.
    Status {
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// Batches refused for good (with the receiver's answer).
    DeadLetters {
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
        /// Include retried (resolved) ones.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// Send a dead letter again; resolved when the destination accepts it.
    Retry {
        /// Dead letter id.
        id: i64,
    },
}

pub(super) async fn run(config: &Config, cmd: &DestinationsCommand) -> anyhow::Result<ExitCode> {
    let store = super::open_existing(config).await?;
    match cmd {
        DestinationsCommand::Status { json } => {
            let mut all = Vec::new();
            for d in &config.destinations {
                let name = &d.driver.name;
                let lags =
                    crate::destinations::lags(store.as_ref(), name, &d.driver.filter).await?;
                let open = store.dead_letters(Some(name), false).await?.len();
                all.push(serde_json::json!({"name": name, "type": d.type_name(), "dead_letters": open, "streams": lags}));
                if !json {
                    println!("{name} ({}): {open} open dead letters", d.type_name());
                    for l in &lags {
                        println!(
                            "  stream={} cursor={} head={} lag={} events{}",
                            l.stream,
                            l.cursor,
                            l.head,
                            l.lag_events,
                            l.lag_seconds
                                .map(|s| format!(" ({s:.1}s)"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            }
        }
        DestinationsCommand::DeadLetters {
            destination,
            all,
            json,
        } => {
            let letters = store.dead_letters(destination.as_deref(), *all).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                for l in &letters {
                    println!(
                        "{} destination={} stream={} seq={}-{} status={} at={}{}: {}",
                        l.id,
                        l.destination,
                        l.stream,
                        l.start_seq,
                        l.end_seq,
                        l.status.map_or("-".into(), |s| s.to_string()),
                        l.at,
                        l.resolved
                            .as_ref()
                            .map(|r| format!(" resolved={r}"))
                            .unwrap_or_default(),
                        l.error
                    );
                }
            }
        }
        DestinationsCommand::Retry { id } => {
            let letter = store
                .dead_letters(None, false)
                .await?
                .into_iter()
                .find(|l| l.id == *id)
                .ok_or_else(|| anyhow::anyhow!("no open dead letter {id}"))?;
            let cfg = config
                .destinations
                .iter()
                .find(|d| d.driver.name == letter.destination)
                .ok_or_else(|| {
                    anyhow::anyhow!("destination {} is not in the config", letter.destination)
                })?;
            let dest = crate::destinations::build(cfg)?;
            let delivered = crate::destinations::driver::retry_dead_letter(
                store.as_ref(),
                dest.as_ref(),
                &cfg.driver,
                &letter,
            )
            .await;
            crate::audit::record(
                store.as_ref(),
                "dead_letter.retried",
                crate::audit::Actor::Cli,
                serde_json::json!({"destination": letter.destination, "id": id, "stream": letter.stream, "delivered": delivered.is_ok()}),
            )
            .await;
            delivered.map_err(|e| anyhow::anyhow!("dead letter {id}: {e}"))?;
            println!(
                "dead letter {id} delivered to {} and resolved",
                letter.destination
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
