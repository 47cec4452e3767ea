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
    /// A checkpoint saved or received elsewhere (a signed note; a file of
    /// `checkpoint.signed` events as a destination delivered them; or a
    /// directory of either, as `checkpoints export` writes). The verified
    /// history must extend each one. Repeatable.
    #[arg(long = "trusted-checkpoint", value_name = "FILE")]
    pub trusted_checkpoint: Vec<PathBuf>,
    /// Fail when the archive's newest index is older than this (`2h`,
    /// `30m`, …). Default with `--archive`: twice `archive.index_interval`
    /// (2h); without it, only when given.
    #[arg(long, env = "TRAILKEEP_MAX_AGE", value_name = "DURATION", value_parser = parse_age)]
    pub max_age: Option<std::time::Duration>,
    /// Check one event's evidence file (the console's "Download evidence")
    /// offline: its hash, its inclusion proof and the checkpoint's
    /// signature, against `--public-key` (without it, against the key in
    /// the file, which shows only that the file is self-consistent).
    /// Needs no data directory or store.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stream", "trusted_checkpoint", "max_age"])]
    pub evidence: Option<PathBuf>,
}

/// `verify --evidence FILE [--public-key FILE]`: exit 0 when every step
/// passes, 1 when one fails, 2 when the files cannot be read.
pub(super) fn run_evidence(file: &std::path::Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    use crate::verify::evidence::{Evidence, FORMAT, check};
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read evidence {}", file.display()))?;
    let evidence: Evidence = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an evidence file (the JSON the console's \"Download evidence\" gives)",
            file.display()
        )
    })?;
    if evidence.format != FORMAT {
        anyhow::bail!(
            "{}: format {:?}, this trailkeep reads {FORMAT:?}",
            file.display(),
            evidence.format
        );
    }
    let in_file = NoteVerifier::parse(evidence.public_key.trim())
        .with_context(|| format!("{}: public_key", file.display()))?;
    let (verifier, pinned) = match &args.public_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read public key {}", path.display()))?;
            let pinned = NoteVerifier::parse(text.trim())
                .with_context(|| format!("public key {}", path.display()))?;
            (pinned, true)
        }
        None => {
            eprintln!(
                "warning: no --public-key: checking against the key inside the evidence file ({in_file}), which shows only that the file is self-consistent; pass the log's key you hold (trailkeep keys public) to know it is the log's"
            );
            (in_file.clone(), false)
        }
    };
    let outcome = check(&evidence, &verifier);
    if args.json {
        let mut v = serde_json::to_value(&outcome)?;
        v["key_pinned"] = pinned.into();
        v["key_in_file_matches"] = (in_file == verifier).into();
        super::print_json(&v)?;
    } else {
        for s in &outcome.steps {
            println!(
                "{} {}: {}",
                if s.ok { "valid" } else { "INVALID" },
                s.step,
                s.detail
            );
        }
        if pinned && in_file != verifier {
            println!("note: the file names another key ({in_file}) than --public-key");
        }
        println!(
            "{}: event {} of stream {} {} checkpoint size {} signed by {}+{:08x}{}",
            if outcome.ok { "OK" } else { "FAILED" },
            outcome.seq,
            outcome.stream,
            if outcome.ok {
                "is included in"
            } else {
                "is not shown to be in"
            },
            outcome.size,
            verifier.name(),
            verifier.key_id(),
            if pinned {
                ""
            } else {
                " (the key in the file, not pinned)"
            }
        );
    }
    Ok(if outcome.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    crate::archive::parse_duration(s).map_err(|e| e.to_string())
}

/// Reads every `--trusted-checkpoint`: each signed note must verify with
/// this log's key and name one of its streams.
fn load_trusted(
    paths: &[PathBuf],
    verifier: &NoteVerifier,
) -> anyhow::Result<Vec<crate::archive::verify::TrustedCheckpoint>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .with_context(|| format!("--trusted-checkpoint {}", p.display()))?;
        if meta.is_dir() {
            let mut inner = Vec::new();
            for e in walk(p).with_context(|| format!("--trusted-checkpoint {}", p.display()))? {
                inner.push(e);
            }
            if inner.is_empty() {
                anyhow::bail!(
                    "--trusted-checkpoint {}: the directory holds no checkpoint files",
                    p.display()
                );
            }
            files.extend(inner);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("--trusted-checkpoint {}", f.display()))?;
        let notes = notes_in(&text);
        if notes.is_empty() {
            anyhow::bail!(
                "--trusted-checkpoint {}: neither a signed checkpoint note nor checkpoint.signed events",
                f.display()
            );
        }
        for note in notes {
            let body = crate::chain::note::open(&note, verifier).map_err(|e| {
                anyhow::anyhow!(
                    "--trusted-checkpoint {}: the note does not verify with {}+{:08x}: {e}",
                    f.display(),
                    verifier.name(),
                    verifier.key_id()
                )
            })?;
            let cp = crate::chain::checkpoint::Checkpoint::parse(body).map_err(|e| {
                anyhow::anyhow!(
                    "--trusted-checkpoint {}: not a checkpoint: {e}",
                    f.display()
                )
            })?;
            let stream = cp
                .origin
                .strip_prefix(&format!("{}/", verifier.name()))
                .filter(|s| crate::event::valid_stream_name(s))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--trusted-checkpoint {}: origin {:?} is not a stream of log {}",
                        f.display(),
                        cp.origin,
                        verifier.name()
                    )
                })?
                .to_owned();
            out.push(crate::archive::verify::TrustedCheckpoint {
                source: f.display().to_string(),
                stream,
                size: cp.size,
                root: cp.root,
            });
        }
    }
    Ok(out)
}

/// Files under `dir`, recursively, sorted.
fn walk(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The signed notes in a file: the file itself when it is one, else the
/// `data.note` of every JSON line that has one (a destination's copy of
/// the log's own stream, in any encoding that keeps `data`).
fn notes_in(text: &str) -> Vec<String> {
    if !text.trim_start().starts_with(['{', '[']) {
        return vec![text.to_owned()];
    }
    let mut out = Vec::new();
    let mut take = |v: &serde_json::Value| {
        if let Some(n) = v
            .pointer("/data/note")
            .or_else(|| v.pointer("/event/data/note"))
            .and_then(|n| n.as_str())
        {
            out.push(n.to_owned());
        }
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => items.iter().for_each(&mut take),
        Ok(v) => take(&v),
        Err(_) => text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .for_each(|v| take(&v)),
    }
    out
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
            crate::secret::SecretSource::File(f.clone()).load_bytes("archive.hmac_secret_file")?,
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

/// Verifies the archive at `url` with a progress bar (never creating it).
async fn check_archive(
    config: &Config,
    opts: crate::archive::verify::VerifyOptions,
    url: &str,
    verifier: &NoteVerifier,
) -> Result<
    (
        crate::archive::verify::ArchiveReport,
        std::collections::HashMap<String, crate::archive::verify::StreamArchive>,
    ),
    crate::archive::ArchiveError,
> {
    let bucket = crate::archive::Bucket::open_existing(url, &config.archive.bucket)?;
    let bar = progress_bar("verifying archive");
    let b = bar.clone();
    let out = crate::archive::verify::verify_archive(&bucket, verifier, &opts, &move |n| {
        b.set_position(n)
    })
    .await;
    bar.finish_and_clear();
    out
}

fn archive_options(
    config: &Config,
    args: &VerifyArgs,
    trusted: Vec<crate::archive::verify::TrustedCheckpoint>,
    max_age: Option<std::time::Duration>,
    hot_follows: bool,
) -> anyhow::Result<crate::archive::verify::VerifyOptions> {
    Ok(crate::archive::verify::VerifyOptions {
        stream: args.stream.clone(),
        hmac_key: load_hmac(config)?,
        max_age,
        trusted,
        hot_follows,
    })
}

/// `verify --archive URL --public-key FILE`: the bucket alone.
async fn offline(
    config: &Config,
    args: &VerifyArgs,
    url: &str,
    verifier: &NoteVerifier,
    trusted: Vec<crate::archive::verify::TrustedCheckpoint>,
) -> anyhow::Result<ExitCode> {
    let max_age = args
        .max_age
        .unwrap_or(config.archive.settings.index_interval * 2);
    let opts = archive_options(config, args, trusted, Some(max_age), false)?;
    let (report, _) = check_archive(config, opts, url, verifier).await?;
    if args.json {
        super::print_json(&serde_json::to_value(&report)?)?;
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
    for t in &report.trusted {
        println!(
            "trusted checkpoint {} stream={} size={}: {}: {}",
            t.source, t.stream, t.size, t.outcome, t.detail
        );
    }
    if let Some(i) = &report.newest_index {
        println!(
            "newest index {} written {} ({} ago){}",
            i.key,
            i.created,
            age(i.age_secs),
            report
                .newest_checkpoint_age_secs
                .map(|a| format!("; newest indexed checkpoint {} ago", age(a)))
                .unwrap_or_default()
        );
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

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub(super) async fn run(config: &Config, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = &args.evidence {
        return run_evidence(file, args);
    }
    if let (Some(url), Some(_)) = (&config.archive.url, &args.public_key) {
        let verifier = load_verifier(config, args)?;
        let trusted = load_trusted(&args.trusted_checkpoint, &verifier)?;
        return offline(config, args, url, &verifier, trusted).await;
    }
    let store = super::open_existing(config).await?;
    let verifier = load_verifier(config, args)?;
    let trusted = load_trusted(&args.trusted_checkpoint, &verifier)?;
    // The archived part first, when there is one: its end links into the
    // hot part. The archive is required when the hot store records batches
    // or an archive URL was given; else the default one is checked when it
    // holds an index.
    let recorded = !store
        .archive_batches(args.stream.as_deref(), 0, 1)
        .await?
        .is_empty();
    let required = recorded || config.archive.url.is_some();
    let url = config.archive_url()?;
    let opts = archive_options(config, args, trusted.clone(), args.max_age, true)?;
    let mut cold = None;
    let mut cold_missing: Option<String> = None;
    match check_archive(config, opts, &url, &verifier).await {
        Ok(r) => cold = Some(r),
        Err(
            crate::archive::ArchiveError::Location(why)
            | crate::archive::ArchiveError::Bucket(crate::objstore::ObjStoreError::Location(why)),
        ) if required => cold_missing = Some(why),
        Err(
            crate::archive::ArchiveError::Location(_)
            | crate::archive::ArchiveError::Bucket(crate::objstore::ObjStoreError::Location(_)),
        ) => {}
        Err(e) => return Err(e.into()),
    }
    let mut hot = crate::verify::HotOptions {
        only: args.stream.clone(),
        unsigned_after: Some(config.checkpoint_interval + UNSIGNED_SLACK),
        ..crate::verify::HotOptions::default()
    };
    for t in &trusted {
        hot.anchors
            .entry(t.stream.clone())
            .or_default()
            .push(crate::verify::Anchor {
                source: t.source.clone(),
                size: t.size,
                root: t.root,
            });
    }
    let total: u64 = store
        .streams()
        .await?
        .iter()
        .filter(|s| args.stream.as_ref().is_none_or(|o| *o == s.name))
        .map(|s| s.head_seq.saturating_sub(s.archived_seq.unwrap_or(0)))
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} verifying {pos}/{len} events {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let state = match (&cold, &cold_missing) {
        (Some((_, held)), _) => crate::verify::combined::Cold::Held(held),
        (None, Some(why)) => crate::verify::combined::Cold::Missing { url: &url, why },
        (None, None) => crate::verify::combined::Cold::Absent,
    };
    let report = crate::verify::combined::verify_hot_after_cold(
        store.as_ref(),
        &verifier,
        &config.log_name,
        hot,
        state,
        recorded,
        &move |n| b.set_position(n),
    )
    .await?;
    bar.finish_and_clear();
    let cold = cold.map(|c| c.0);
    let ok = report.ok && cold.as_ref().is_none_or(|c| c.ok);
    let cold_events = cold.as_ref().map_or(0, |c| c.summary.events);
    let cold_problems = cold.as_ref().map_or(0, |c| c.problems.len());
    // Per stream, what the archive holds (issue #15: counts said hot only).
    let archived_of = |stream: &str| -> u64 {
        cold.as_ref().map_or(0, |c| {
            c.streams
                .iter()
                .filter(|s| s.stream == stream)
                .map(|s| s.events)
                .sum()
        })
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = ok.into();
        // `events` stays the hot count it always was.
        v["events_archived"] = cold_events.into();
        v["events_total"] = (report.events + cold_events).into();
        if let Some(streams) = v["streams"].as_array_mut() {
            for s in streams {
                let hot = s["events"].as_u64().unwrap_or(0);
                let archived = archived_of(s["stream"].as_str().unwrap_or_default());
                s["events_archived"] = archived.into();
                s["events_total"] = (hot + archived).into();
            }
        }
        if let Some(c) = &cold {
            v["archive"] = serde_json::to_value(c)?;
        }
        super::print_json(&v)?;
    } else {
        if let Some(c) = &cold {
            print_archive(c);
        }
        for s in &report.streams {
            for p in &s.problems {
                let seq = p.seq.map(|s| format!(" seq={s}")).unwrap_or_default();
                let key = p
                    .key
                    .as_ref()
                    .map(|k| format!(" key={k}"))
                    .unwrap_or_default();
                let kind = serde_json::to_value(p.kind)?
                    .as_str()
                    .unwrap_or("problem")
                    .to_owned();
                println!(
                    "INVALID stream={}{seq}{key} {kind} expected={} found={}",
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
            let archived = archived_of(&s.stream);
            println!(
                "{status} stream={} events={} archived={archived} head={} {cp} problems={}",
                s.stream,
                s.events,
                s.head_seq,
                s.problems.len()
            );
        }
        println!(
            "{}: {} streams, {} events ({} hot, {cold_events} archived), {} problems",
            if ok { "OK" } else { "FAILED" },
            report.streams.len(),
            report.events + cold_events,
            report.events,
            report.problem_count + cold_problems
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Slack past the checkpoint interval before unsigned events are a
/// finding: the checkpointer's round, a lease handover, a restart.
const UNSIGNED_SLACK: std::time::Duration = std::time::Duration::from_secs(120);
