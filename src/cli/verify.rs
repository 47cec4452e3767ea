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

fn load_verifier(config: &Config, args: &VerifyArgs) -> anyhow::Result<NoteVerifier> {
    match &args.public_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read public key {}", path.display()))?;
            NoteVerifier::parse(text.trim())
                .with_context(|| format!("public key {}", path.display()))
        }
        None => {
            let path = config.signing_key_path();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read signing key {}", path.display()))?;
            Ok(crate::chain::note::NoteSigner::parse(text.trim())
                .map_err(|_| anyhow::anyhow!("signing key {} is not valid", path.display()))?
                .verifier())
        }
    }
}

fn load_hmac(config: &Config) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(match &config.archive.hmac_secret_file {
        Some(f) => Some(
            std::fs::read(f)
                .with_context(|| format!("archive.hmac_secret_file {}", f.display()))?
                .trim_ascii()
                .to_vec(),
        ),
        None => None,
    })
}

fn progress_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} {{pos}} events {{elapsed}}"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

/// Verifies the archive at `url` with a progress bar.
async fn check_archive(
    config: &Config,
    args: &VerifyArgs,
    url: &str,
    verifier: &NoteVerifier,
) -> anyhow::Result<(
    crate::archive::verify::ArchiveReport,
    std::collections::HashMap<String, crate::archive::verify::StreamEnd>,
)> {
    let bucket = crate::archive::Bucket::open(url, &config.archive.bucket)?;
    let opts = crate::archive::verify::VerifyOptions {
        stream: args.stream.clone(),
        hmac_key: load_hmac(config)?,
    };
    let bar = progress_bar("verifying archive");
    let b = bar.clone();
    let out = crate::archive::verify::verify_archive(&bucket, verifier, &opts, &move |n| {
        b.set_position(n)
    })
    .await;
    bar.finish_and_clear();
    Ok(out?)
}

/// `verify --archive URL --public-key FILE`: the bucket alone.
async fn offline(config: &Config, args: &VerifyArgs, url: &str) -> anyhow::Result<ExitCode> {
    let verifier = load_verifier(config, args)?;
    let (report, _) = check_archive(config, args, url, &verifier).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_archive(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_archive(report: &crate::archive::verify::ArchiveReport) {
    use crate::archive::verify::Status;
    for k in &report.keys {
        let status = match k.status {
            Status::Valid => "valid",
            Status::Invalid => "INVALID",
            Status::Missing => "MISSING",
            Status::NotCovered => "NOT COVERED",
        };
        match &k.reason {
            Some(r) if k.status != Status::Valid => println!("{status} {} {}: {r}", k.kind, k.key),
            _ => println!("{status} {} {}", k.kind, k.key),
        }
    }
    for p in &report.problems {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let seq = p.seq.map(|s| format!(" seq={s}")).unwrap_or_default();
        let key = p
            .key
            .as_ref()
            .map(|k| format!(" key={k}"))
            .unwrap_or_default();
        println!(
            "PROBLEM stream={}{seq}{key} {kind}: {}",
            p.stream, p.message
        );
    }
    for s in &report.streams {
        let range = match (s.first_seq, s.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}-{b}"),
            _ => "no manifests".into(),
        };
        println!(
            "archive stream={} {range} events={} manifests={} checkpoints_checked={}",
            s.stream, s.events, s.manifests, s.checkpoints_checked
        );
        for n in &s.notes {
            println!("  note: {n}");
        }
    }
    let m = &report.summary;
    println!(
        "{} archive {}: {} valid, {} invalid, {} missing, {} not covered; {} events, {} problems",
        if report.ok { "OK" } else { "FAILED" },
        report.archive,
        m.valid,
        m.invalid,
        m.missing,
        m.not_covered,
        m.events,
        m.problems
    );
}

pub(super) async fn run(config: &Config, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    if let (Some(url), Some(_)) = (&config.archive.url, &args.public_key) {
        return offline(config, args, url).await;
    }
    let store = super::open_existing(config).await?;
    let verifier = load_verifier(config, args)?;
    // The archived part first, when there is one: its end links into the hot part.
    let archived = !store
        .archive_batches(args.stream.as_deref(), 0, 1)
        .await?
        .is_empty();
    let mut starts = std::collections::HashMap::new();
    let mut cold = None;
    if archived {
        let (report, ends) = check_archive(config, args, &config.archive_url()?, &verifier).await?;
        for (stream, end) in ends {
            starts.insert(
                stream,
                crate::verify::ChainStart {
                    next_seq: end.last_seq + 1,
                    prev_hash: end.last_hash,
                    frontier: end.frontier,
                },
            );
        }
        cold = Some(report);
    }
    let total: u64 = store
        .streams()
        .await?
        .iter()
        .filter(|s| args.stream.as_ref().is_none_or(|o| *o == s.name))
        .map(|s| s.head_seq - s.archived_seq.unwrap_or(0))
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} verifying {pos}/{len} events {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let report = crate::verify::verify_store_from(
        store.as_ref(),
        &verifier,
        &config.log_name,
        args.stream.as_deref(),
        &starts,
        &move |n| b.set_position(n),
    )
    .await?;
    bar.finish_and_clear();
    let ok = report.ok && cold.as_ref().is_none_or(|c| c.ok);
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = ok.into();
        if let Some(c) = &cold {
            v["archive"] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(c) = &cold {
            print_archive(c);
        }
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
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
