//! `trailkeep archive run|list|probe` and `trailkeep restore`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

/// Archive operations.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Archive now: events older than the retention window go to the
    /// archive as signed, create-only objects, then leave the hot store.
    Run {
        /// Archive events received longer ago than this (default
        /// `archive.older_than`, 90d), e.g. 30d, 12h, 0s.
        #[arg(long, env = "TRAILKEEP_OLDER_THAN", value_name = "DURATION")]
        older_than: Option<String>,
        /// Print the run's report as JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// List the archived batches recorded in the hot store.
    List {
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// Check that the archive store refuses a second create-only write.
    Probe {
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Stream to restore into.
    #[arg(long)]
    pub stream: String,
    /// First seq.
    #[arg(long)]
    pub from: u64,
    /// Last seq.
    #[arg(long)]
    pub to: u64,
    /// Print the report as JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

fn load_signer(config: &Config) -> anyhow::Result<crate::chain::note::NoteSigner> {
    let path = config.signing_key_path();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read signing key {}", path.display()))?;
    crate::chain::note::NoteSigner::parse(text.trim())
        .map_err(|_| anyhow::anyhow!("signing key {} is not valid", path.display()))
}

fn bar(what: &str) -> ProgressBar {
    let b = ProgressBar::new_spinner();
    b.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} {{pos}} events {{elapsed}}"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    b.enable_steady_tick(std::time::Duration::from_millis(200));
    b
}

pub(super) async fn run(config: &Config, cmd: &ArchiveCommand) -> anyhow::Result<ExitCode> {
    let store = super::open_existing(config).await?;
    let archiver = crate::server::archiver(config, store.clone(), load_signer(config)?)?;
    match cmd {
        ArchiveCommand::Run { older_than, json } => {
            let older = older_than
                .as_deref()
                .map(crate::archive::parse_duration)
                .transpose()
                .map_err(|m| anyhow::anyhow!("--older-than: {m}"))?;
            let b = bar("archiving");
            let bb = b.clone();
            let report = archiver
                .run_leased(older, &move |n| bb.set_position(n))
                .await;
            b.finish_and_clear();
            if !matches!(report, Err(crate::archive::ArchiveError::Busy)) {
                crate::audit::record(
                    archiver.store().as_ref(),
                    "archive.run",
                    crate::audit::Actor::Cli,
                    crate::audit::archive_run(&report),
                )
                .await;
            }
            let report = report?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for batch in &report.batches {
                    println!(
                        "archived stream={} seq={}-{} events={} bytes={} object={}",
                        batch.stream,
                        batch.start_seq,
                        batch.end_seq,
                        batch.count,
                        batch.object_size,
                        batch.object_key
                    );
                }
                for h in &report.held_back {
                    println!(
                        "held back stream={} at seq {}: {}",
                        h.stream, h.cursor_seq, h.reason
                    );
                }
                println!(
                    "archive {}: {} events in {} objects ({} bytes stored, {} uncompressed), {} resumed, {} deleted from hot",
                    report.archive,
                    report.events_archived,
                    report.batches.len(),
                    report.stored_bytes,
                    report.raw_bytes,
                    report.resumed_objects,
                    report.deleted
                );
            }
        }
        ArchiveCommand::List { stream, json } => {
            let names: Vec<String> = match stream {
                Some(s) => vec![s.clone()],
                None => store.streams().await?.into_iter().map(|s| s.name).collect(),
            };
            let mut all = Vec::new();
            for name in names {
                let mut next = 0;
                loop {
                    let page = store.archive_batches(Some(&name), next, 1000).await?;
                    let Some(last) = page.last() else { break };
                    next = last.start_seq + 1;
                    all.extend(page);
                }
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for b in &all {
                    println!(
                        "{} {}-{} events={} bytes={} manifest_sha256={} {} {}",
                        b.stream,
                        b.start_seq,
                        b.end_seq,
                        b.count,
                        b.object_size,
                        b.manifest_sha256,
                        b.object_key,
                        b.created
                    );
                }
            }
        }
        ArchiveCommand::Probe { json } => {
            let r = archiver.bucket().probe().await?;
            let create_only = r == crate::archive::ProbeResult::CreateOnly;
            if *json {
                println!(
                    "{}",
                    serde_json::json!({"archive": archiver.bucket().display(), "result": r})
                );
            } else if create_only {
                println!(
                    "{}: create-only writes are honoured (a second write of the same key was refused)",
                    archiver.bucket().display()
                );
            } else {
                println!(
                    "{}: a second create-only write of the same key SUCCEEDED: this store overwrites; trailkeep refuses to archive there unless archive.single_writer = true",
                    archiver.bucket().display()
                );
            }
            return Ok(if create_only {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn restore(config: &Config, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_existing(config).await?;
    let archiver = crate::server::archiver(config, store.clone(), load_signer(config)?)?;
    let b = bar("restoring");
    let bb = b.clone();
    let report = crate::archive::restore::restore(
        store.as_ref(),
        archiver.bucket(),
        &load_signer(config)?.verifier(),
        archiver.settings().hmac_key.as_deref(),
        crate::archive::restore::RestoreRange {
            stream: &args.stream,
            from: args.from,
            to: args.to,
        },
        &move |n| bb.set_position(n),
    )
    .await;
    b.finish_and_clear();
    crate::audit::record(
        store.as_ref(),
        "archive.restore",
        crate::audit::Actor::Cli,
        serde_json::json!({
            "stream": args.stream, "from": args.from, "to": args.to,
            "restored": report.as_ref().ok().map(|r| r.restored),
            "error": report.as_ref().err().map(ToString::to_string),
        }),
    )
    .await;
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "restored stream={} seq={}-{}: {} events from {} objects, {} already hot",
            report.stream,
            report.from,
            report.to,
            report.restored,
            report.objects,
            report.already_hot
        );
    }
    Ok(ExitCode::SUCCESS)
}
