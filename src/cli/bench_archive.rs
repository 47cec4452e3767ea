//! `trailkeep bench archive`: archive throughput (MB/s of uncompressed
//! NDJSON) and offline verify throughput (events/s), each beside the limit
//! measured in the same run on the same bytes: the compressor's own speed,
//! and decompression + SHA-256.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::archive::verify::{VerifyOptions, verify_archive};
use crate::archive::{ArchiveSettings, Archiver, Bucket, BucketOptions, Compression};
use crate::event::{Limits, validate};
use crate::store::{AppendGroup, Store};

/// Arguments of `bench archive`.
#[derive(Debug, Args)]
pub struct ArchiveBenchArgs {
    /// Events to archive.
    #[arg(long, default_value_t = 300_000, env = "TRAILKEEP_EVENTS")]
    pub events: u64,
    /// `gzip` or `zstd`.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Events per object.
    #[arg(long, default_value_t = 100_000)]
    pub segment_events: u64,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

#[derive(Serialize)]
struct Figures {
    events: u64,
    compression: &'static str,
    raw_bytes: u64,
    stored_bytes: u64,
    objects: usize,
    archive_secs: f64,
    archive_mb_s: f64,
    compressor_mb_s: f64,
    archive_ratio: f64,
    verify_secs: f64,
    verify_events_s: f64,
    limit_events_s: f64,
    verify_ratio: f64,
}

fn event(i: u64) -> serde_json::Value {
    serde_json::json!({
        "id": format!("evt_{i:012}"),
        "type": "grant.created",
        "actor": {"id": format!("user-{}", i % 1000), "kind": "user"},
        "subject": format!("agent-{}", i % 97),
        "data": {"grant_id": format!("grnt_{i:012}"), "scopes": ["read:calendar", "write:email"], "expires_in": 3600},
    })
}

pub(super) async fn run(args: &ArchiveBenchArgs) -> anyhow::Result<ExitCode> {
    let compression = Compression::parse(&args.compression)
        .ok_or_else(|| anyhow::anyhow!("--compression: gzip or zstd"))?;
    let tmp = super::bench::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(crate::store::sqlite::SqliteStore::open(
        &tmp.join("hot.db"),
    )?);
    let received = crate::event::format_received(time::OffsetDateTime::now_utc());
    let mut i = 0;
    while i < args.events {
        let n = (args.events - i).min(5000);
        let events = (i..i + n)
            .map(|j| validate(j as usize, event(j), &received, &Limits::default()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "bench".into(),
                events,
            }])
            .await?;
        i += n;
    }
    let url = url::Url::from_directory_path(tmp.join("archive"))
        .map_err(|()| anyhow::anyhow!("temp path"))?
        .to_string();
    let bucket = Bucket::open(&url, &BucketOptions::default())?;
    let signer = crate::chain::note::NoteSigner::from_seed("bench.local", &[1; 32])?;
    let settings = ArchiveSettings {
        older_than: std::time::Duration::ZERO,
        segment_events: args.segment_events,
        compression,
        ..ArchiveSettings::default()
    };
    let archiver = Archiver::new(
        store.clone(),
        bucket.clone(),
        signer.clone(),
        "bench.local".into(),
        settings,
    );
    archiver.check_store().await?;
    let t = Instant::now();
    let report = archiver
        .run(time::OffsetDateTime::now_utc(), None, &|_| {})
        .await?;
    let archive_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "archive phases: encode {:.2}s, write {:.2}s, delete {:.2}s",
        report.encode_secs, report.write_secs, report.delete_secs
    );

    // The same NDJSON bytes, object by object, back from the archive.
    let mut raws = Vec::new();
    let mut stored = Vec::new();
    for b in &report.batches {
        let obj = bucket.get(&b.object_key).await?.unwrap_or_default();
        raws.push(
            crate::archive::segment::decompress(&obj, compression, b.raw_size + 1)
                .map_err(anyhow::Error::msg)?,
        );
        stored.push(obj);
    }
    // Limit 1: the compressor alone on those bytes, same settings (best of 3).
    let mut compress_secs = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for r in &raws {
            let out = match compression {
                Compression::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                    e.write_all(r)?;
                    e.finish()?
                }
                Compression::Zstd => zstd::stream::encode_all(&r[..], 3)?,
            };
            std::hint::black_box(out);
        }
        compress_secs = compress_secs.min(t.elapsed().as_secs_f64());
    }

    // Offline verify, and limit 2: decompression + SHA-256 of every event line.
    let t = Instant::now();
    let (vr, _) = verify_archive(
        &bucket,
        &signer.verifier(),
        &VerifyOptions::default(),
        &|_| {},
    )
    .await?;
    let verify_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        vr.ok && vr.summary.events == args.events,
        "verify failed: {:?}",
        vr.problems.first()
    );
    // The limits are the best of three runs: a noisy neighbour slowing one
    // run down must not flatter the ratios.
    let mut limit_secs = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for o in &stored {
            std::hint::black_box(Sha256::digest(o));
            let raw = crate::archive::segment::decompress(o, compression, u64::MAX >> 1)
                .map_err(anyhow::Error::msg)?;
            for line in raw.split(|c| *c == b'\n') {
                std::hint::black_box(Sha256::digest(line));
            }
        }
        limit_secs = limit_secs.min(t.elapsed().as_secs_f64());
    }

    let raw_bytes = report.raw_bytes;
    let mb = raw_bytes as f64 / 1e6;
    let f = Figures {
        events: report.events_archived,
        compression: compression.name(),
        raw_bytes,
        stored_bytes: report.stored_bytes,
        objects: report.batches.len(),
        archive_secs,
        archive_mb_s: mb / archive_secs,
        compressor_mb_s: mb / compress_secs,
        archive_ratio: compress_secs / archive_secs,
        verify_secs,
        verify_events_s: args.events as f64 / verify_secs,
        limit_events_s: args.events as f64 / limit_secs,
        verify_ratio: limit_secs / verify_secs,
    };
    let _ = std::fs::remove_dir_all(&tmp);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        println!(
            "archive ({}, {} events, {} objects, {:.1} MB NDJSON -> {:.1} MB): {:.1} MB/s; compressor alone {:.1} MB/s; ratio {:.0}%",
            f.compression,
            f.events,
            f.objects,
            mb,
            f.stored_bytes as f64 / 1e6,
            f.archive_mb_s,
            f.compressor_mb_s,
            f.archive_ratio * 100.0
        );
        println!(
            "offline verify: {:.0} events/s; decompression + SHA-256 alone {:.0} events/s; ratio {:.0}%",
            f.verify_events_s,
            f.limit_events_s,
            f.verify_ratio * 100.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
