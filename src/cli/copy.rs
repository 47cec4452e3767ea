//! `trailkeep copy --from sqlite://DATA_DIR --to postgres://…`: moves a
//! single-node deployment to PostgreSQL.
//!
//! The source is verified first (refused if verify finds any problem). Each
//! event is rebuilt from its stored canonical body (id, type, time,
//! received, actor, subject, data) and appended in order, so the target
//! recomputes the very same chain: every hash is compared with the source's,
//! and the first difference stops the copy. Keys (hashes only), the latest
//! signed checkpoint of each stream, source states and rejected events come
//! along. The target is verified at the end with the same verifier key.

use crate::store::EventStore;
use crate::store::KeyStore;
use crate::store::SourceStore;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::chain::note::NoteSigner;
use crate::config::Config;
use crate::event::NewEvent;
use crate::store::AppendGroup;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;

/// Arguments of `copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: `sqlite://DATA_DIR` (the directory holding trailkeep.db and signing.key).
    #[arg(long, env = "TRAILKEEP_FROM", value_name = "URL")]
    pub from: String,
    /// Target: `postgres://…` (must hold none of the source's streams yet).
    #[arg(long, env = "TRAILKEEP_TO", value_name = "URL", hide_env_values = true)]
    pub to: String,
    /// Print a JSON summary.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

fn string(v: &Value, k: &str) -> anyhow::Result<String> {
    v[k].as_str()
        .map(str::to_owned)
        .with_context(|| format!("stored event has no {k}"))
}

fn canonical(v: &Value, k: &str) -> anyhow::Result<Option<String>> {
    match v.get(k) {
        None => Ok(None),
        Some(x) => Ok(Some(crate::jcs::to_string(x))),
    }
}

/// Rebuilds the appendable event from a stored canonical body.
fn rebuild(body: &str) -> anyhow::Result<NewEvent> {
    let v: Value = serde_json::from_str(body).context("stored body is not JSON")?;
    Ok(NewEvent {
        id: string(&v, "id")?,
        event_type: string(&v, "type")?,
        time: string(&v, "time")?,
        received: string(&v, "received")?,
        actor: canonical(&v, "actor")?,
        subject: canonical(&v, "subject")?,
        data: canonical(&v, "data")?,
    })
}

pub(super) async fn run(config: &Config, args: &CopyArgs) -> anyhow::Result<ExitCode> {
    let Some(dir) = args.from.strip_prefix("sqlite://") else {
        bail!("--from must be sqlite://DATA_DIR")
    };
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        bail!("--to must be a postgres:// URL");
    }
    let dir = std::path::Path::new(dir);
    let db = dir.join(crate::server::DB_FILE);
    std::fs::metadata(&db).with_context(|| format!("no trailkeep store at {}", db.display()))?;
    let from = SqliteStore::open(&db)?;
    let key_path = config
        .signing_key_file
        .clone()
        .unwrap_or_else(|| dir.join(crate::keyfile::FILE_NAME));
    let key_text = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    let verifier = NoteSigner::parse(key_text.trim())
        .map_err(|_| anyhow::anyhow!("{} is not a valid signing key", key_path.display()))?
        .verifier();

    let before =
        crate::verify::verify_store(&from, &verifier, &config.log_name, None, &|_| {}).await?;
    if !before.ok {
        bail!(
            "the source does not verify ({} problems): run `trailkeep verify` on it and resolve them first",
            before.problem_count
        );
    }
    let to = PostgresStore::connect(&args.to, None).await?;
    let streams = from.streams().await?;
    let existing = to.streams().await?;
    if let Some(s) = streams
        .iter()
        .find(|s| existing.iter().any(|e| e.name == s.name && e.head_seq > 0))
    {
        bail!(
            "the target already holds stream {}: copy only into a store without the source's streams",
            s.name
        );
    }
    if let Some(s) = streams
        .iter()
        .find(|s| s.oldest_hot_seq.is_some_and(|o| o > 1))
    {
        bail!(
            "stream {} starts at seq {} (older events archived): copying archived streams is not supported yet",
            s.name,
            s.oldest_hot_seq.unwrap_or(0)
        );
    }
    let total: u64 = streams.iter().map(|s| s.head_seq).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} copying {pos}/{len} events {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let existing_keys: std::collections::HashSet<String> =
        to.list_keys().await?.into_iter().map(|k| k.id).collect();
    let mut keys = 0;
    for k in from.list_keys().await? {
        if !existing_keys.contains(&k.id) {
            to.create_key(k).await?;
            keys += 1;
        }
    }
    for s in &streams {
        let mut next = 1u64;
        loop {
            let page = from.read_events(&s.name, next, 1000).await?;
            let Some(last) = page.last() else { break };
            next = last.seq + 1;
            let events = page
                .iter()
                .map(|r| rebuild(&r.body))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let res = to
                .append(vec![AppendGroup {
                    sealed: None,
                    stream: s.name.clone(),
                    events,
                }])
                .await?;
            for (src, got) in page.iter().zip(&res[0].accepted) {
                if got.duplicate || got.seq != src.seq || got.hash != src.hash {
                    bail!(
                        "stream {} seq {}: the target computed seq {} hash {} (expected seq {} hash {}); copy stopped",
                        s.name,
                        src.seq,
                        got.seq,
                        got.hash,
                        src.seq,
                        src.hash
                    );
                }
            }
            bar.inc(page.len() as u64);
        }
        if let Some(cp) = from.latest_checkpoint(&s.name).await? {
            to.put_checkpoint(&s.name, cp).await?;
        }
    }
    for st in from.source_states().await? {
        to.put_source_state(st, None).await?;
    }
    let rejected = from.rejected(None, usize::MAX >> 1).await?;
    for r in &rejected {
        to.add_rejected(r.clone()).await?;
    }
    bar.finish_and_clear();
    let after =
        crate::verify::verify_store(&to, &verifier, &config.log_name, None, &|_| {}).await?;
    if !after.ok {
        bail!(
            "the copy does not verify ({} problems); the source is untouched",
            after.problem_count
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"streams": streams.len(), "events": after.events, "keys": keys, "rejected": rejected.len(), "verified": true})
        );
    } else {
        println!(
            "copied {} streams, {} events, {} keys, {} rejected records; both sides verified. Point serve at it with --store postgres://… (keep {} on every node)",
            streams.len(),
            after.events,
            keys,
            rejected.len(),
            key_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
