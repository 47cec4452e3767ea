//! `trailkeep checkpoints export`: the log's signed checkpoints as files
//! that `verify --trusted-checkpoint DIR` reads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::Config;
use crate::event::SELF_STREAM;

/// `checkpoints` subcommands.
#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// Write every checkpoint signed since a time (from the log's own
    /// stream `_trailkeep`, and each stream's latest) to
    /// `DIR/{stream}/{size:020}.note`. Keep the directory where the
    /// operator cannot write, and pass it to `verify --trusted-checkpoint`.
    Export {
        /// Directory to write (created; existing files are kept).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only checkpoints signed at or after this time: RFC 3339
        /// (`2026-12-01T00:00:00Z`) or an age (`7d`, `12h`). Default: all.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn since_time(s: &str) -> anyhow::Result<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(crate::event::format_received(t));
    }
    let age = crate::archive::parse_duration(s).map_err(|_| {
        anyhow::anyhow!(
            "--since {s:?}: use an RFC 3339 time (2026-12-01T00:00:00Z) or an age such as 7d, 12h"
        )
    })?;
    Ok(crate::event::format_received(
        time::OffsetDateTime::now_utc() - age,
    ))
}

fn write_note(out: &Path, stream: &str, size: u64, note: &str) -> anyhow::Result<bool> {
    let dir = out.join(stream);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{size:020}.note"));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, note.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}

pub(super) async fn run(config: &Config, cmd: &CheckpointsCommand) -> anyhow::Result<ExitCode> {
    let CheckpointsCommand::Export {
        out,
        since,
        stream,
        json,
    } = cmd;
    let since = since.as_deref().map(since_time).transpose()?;
    let store = super::open_existing(config).await?;
    let wanted = |s: &str| stream.as_deref().is_none_or(|o| o == s);
    let recent = |t: &str| since.as_deref().is_none_or(|s| t >= s);
    let mut written: Vec<(String, u64)> = Vec::new();
    let mut seen = 0u64;
    // Every checkpoint recorded in the log's own stream.
    let mut next = 1;
    loop {
        let page = store.read_events(SELF_STREAM, next, 1000).await?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for row in page {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&row.body) else {
                continue;
            };
            if v["type"] != crate::selflog::CHECKPOINT_SIGNED {
                continue;
            }
            let d = &v["data"];
            let (Some(s), Some(size), Some(note), Some(signed)) = (
                d["stream"].as_str(),
                d["size"].as_u64(),
                d["note"].as_str(),
                d["signed"].as_str(),
            ) else {
                continue;
            };
            if !wanted(s) || !recent(signed) || !crate::event::valid_stream_name(s) {
                continue;
            }
            seen += 1;
            if write_note(out, s, size, note)? {
                written.push((s.to_owned(), size));
            }
        }
    }
    // Each stream's latest (also the log's own stream's, which is not
    // recorded in itself).
    for info in store.streams().await? {
        if !wanted(&info.name) {
            continue;
        }
        if let Some(cp) = store.latest_checkpoint(&info.name).await?
            && recent(&cp.created)
        {
            seen += 1;
            if write_note(out, &info.name, cp.size, &cp.note)? {
                written.push((info.name.clone(), cp.size));
            }
        }
    }
    if *json {
        super::print_json(&serde_json::json!({
            "out": out,
            "checkpoints": seen,
            "written": written.iter().map(|(s, n)| serde_json::json!({"stream": s, "size": n})).collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "{} checkpoints, {} new files in {}",
            seen,
            written.len(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
