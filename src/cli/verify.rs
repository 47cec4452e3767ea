//! `trailkeep verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::chain::note::NoteVerifier;
use crate::config::Config;

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this stream.
    #[arg(long, env = "TRAILKEEP_STREAM")]
    pub stream: Option<String>,
    /// Verifier key file (signed-note format); default: derived from the
    /// data directory's signing key. An auditor should pass their own copy.
    #[arg(long, env = "TRAILKEEP_PUBLIC_KEY", value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

pub(super) async fn run(config: &Config, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_existing(config).await?;
    let verifier = match &args.public_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read public key {}", path.display()))?;
            NoteVerifier::parse(text.trim())
                .with_context(|| format!("public key {}", path.display()))?
        }
        None => {
            let path = config.signing_key_path();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read signing key {}", path.display()))?;
            crate::chain::note::NoteSigner::parse(text.trim())
                .map_err(|_| anyhow::anyhow!("signing key {} is not valid", path.display()))?
                .verifier()
        }
    };
    let total: u64 = store
        .streams()
        .await?
        .iter()
        .filter(|s| args.stream.as_ref().is_none_or(|o| *o == s.name))
        .map(|s| s.head_seq)
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} verifying {pos}/{len} events {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let report = crate::verify::verify_store(
        store.as_ref(),
        &verifier,
        &config.log_name,
        args.stream.as_deref(),
        &move |n| b.set_position(n),
    )
    .await?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in &report.streams {
            for p in &s.problems {
                let seq = p.seq.map(|s| format!(" seq={s}")).unwrap_or_default();
                let kind = serde_json::to_value(p.kind)?
                    .as_str()
                    .unwrap_or("problem")
                    .to_owned();
                println!(
                    "INVALID stream={}{seq} {kind} expected={} found={}",
                    p.stream,
                    p.expected.as_deref().unwrap_or("-"),
                    p.found.as_deref().unwrap_or("-")
                );
            }
            let cp = s.checkpoint_size.map_or_else(
                || "no checkpoint yet".to_owned(),
                |c| format!("checkpoint {c}"),
            );
            let status = if s.problems.is_empty() {
                "valid"
            } else {
                "INVALID"
            };
            println!(
                "{status} stream={} events={} head={} {cp} problems={}",
                s.stream,
                s.events,
                s.head_seq,
                s.problems.len()
            );
        }
        println!(
            "{}: {} streams, {} events, {} problems",
            if report.ok { "OK" } else { "FAILED" },
            report.streams.len(),
            report.events,
            report.problem_count
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
