//! The archive conformance suite every object store backend runs: the
//! local directory, S3 (moto server), Azure Blob (Azurite) and GCS (the
//! in-test fake of its XML API).
//!
//! Each check takes a fresh, empty [`Bucket`]; the test module below builds
//! one per backend. A backend that overwrites on create-only writes, loses
//! an object or lists wrongly fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use bytes::Bytes;

use super::verify::{ArchiveProblemKind as K, Status, VerifyOptions, verify_archive};
use super::{
    ArchiveError, ArchiveSettings, Archiver, Bucket, Compression, ProbeResult, PutOutcome,
};
use crate::chain::note::NoteSigner;
use crate::event::{Limits, validate};
use crate::store::sqlite::SqliteStore;
use crate::store::{AppendGroup, Store, StoreExt};

/// Runs every check, each on a fresh bucket from `make`.
pub async fn run_all<F: FnMut() -> Bucket>(mut make: F) {
    create_only_writes(&make()).await;
    archive_verify_and_tamper(&make()).await;
    completeness(&make()).await;
}

pub async fn create_only_writes(b: &Bucket) {
    assert_eq!(
        b.probe().await.unwrap(),
        ProbeResult::CreateOnly,
        "{}",
        b.display()
    );
    let one = Bytes::from_static(b"one");
    assert_eq!(
        b.put_create("s/x", one.clone()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        b.put_create("s/x", one.clone()).await.unwrap(),
        PutOutcome::AlreadyThere
    );
    let e = b
        .put_create("s/x", Bytes::from_static(b"two"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, crate::objstore::ObjStoreError::Conflict { .. }),
        "{e}"
    );
    assert_eq!(
        b.get("s/x").await.unwrap().unwrap(),
        one,
        "never overwritten"
    );
    b.confirm(
        "s/x",
        3,
        &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"one")),
    )
    .await
    .unwrap();
    assert!(b.confirm("s/missing", 3, "x").await.is_err());
    assert!(b.get("s/missing").await.unwrap().is_none());
    b.put_create("s/y/z", Bytes::from_static(b"zz"))
        .await
        .unwrap();
    assert_eq!(
        b.list("s").await.unwrap(),
        vec![("s/x".to_owned(), 3), ("s/y/z".to_owned(), 2)]
    );
}

pub(crate) fn signer() -> NoteSigner {
    NoteSigner::from_seed("log.test", &[9; 32]).unwrap()
}

/// Waits until the wall clock has moved past its current microsecond.
/// Events appended before the call carry a `received` stamp from that
/// clock, so they are then strictly older than a cutoff read after it
/// (`older_than = 0`). A wait on the condition, not a fixed sleep.
pub(crate) async fn clock_past_now() {
    let now = crate::event::format_received(time::OffsetDateTime::now_utc());
    while crate::event::format_received(time::OffsetDateTime::now_utc()) <= now {
        tokio::task::yield_now().await;
    }
}

pub(crate) async fn append(store: &dyn Store, stream: &str, from: usize, n: usize) {
    let events = (from..from + n)
        .map(|i| {
            validate(
                i,
                serde_json::json!({"id": format!("e{i}"), "type": "grant.created", "actor": {"id": "u"}, "data": {"i": i}}),
                &crate::event::format_received(time::OffsetDateTime::now_utc()),
                &Limits::default(),
            )
            .unwrap()
        })
        .collect();
    store
        .append(vec![AppendGroup {
            sealed: None,
            stream: stream.into(),
            events,
        }])
        .await
        .unwrap();
}

fn settings(c: Compression) -> ArchiveSettings {
    ArchiveSettings {
        older_than: std::time::Duration::ZERO,
        segment_events: 100,
        compression: c,
        hmac_key: Some(b"shared".to_vec()),
        ..ArchiveSettings::default()
    }
}

async fn verify(b: &Bucket) -> super::verify::ArchiveReport {
    let opts = VerifyOptions {
        hmac_key: Some(b"shared".to_vec()),
        ..VerifyOptions::default()
    };
    verify_archive(b, &signer().verifier(), &opts, &|_| {})
        .await
        .unwrap()
        .0
}

fn has(r: &super::verify::ArchiveReport, kind: K, key: &str, seq: Option<u64>) -> bool {
    r.problems
        .iter()
        .any(|p| p.kind == kind && p.key.as_deref() == Some(key) && (seq.is_none() || p.seq == seq))
}

fn status(r: &super::verify::ArchiveReport, key: &str) -> Status {
    r.keys
        .iter()
        .find(|k| k.key == key)
        .map(|k| k.status)
        .unwrap_or_else(|| panic!("{key} not in report"))
}

pub async fn archive_verify_and_tamper(b: &Bucket) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
    append(store.as_ref(), "a", 0, 250).await;
    append(store.as_ref(), "b", 0, 30).await;
    crate::archive::conformance::clock_past_now().await;
    let gz = Archiver::new(
        store.clone(),
        b.clone(),
        signer(),
        "log.test".into(),
        settings(Compression::Gzip),
    );
    let r = gz
        .run(time::OffsetDateTime::now_utc(), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(r.events_archived, 280);
    assert_eq!(r.deleted, 280);
    let ranges: Vec<(String, u64, u64)> = r
        .batches
        .iter()
        .map(|x| (x.stream.clone(), x.start_seq, x.end_seq))
        .collect();
    assert_eq!(
        ranges,
        vec![
            ("a".into(), 1, 100),
            ("a".into(), 101, 200),
            ("a".into(), 201, 250),
            ("b".into(), 1, 30)
        ]
    );
    let a = store.stream("a").await.unwrap().unwrap();
    assert_eq!((a.oldest_hot_seq, a.archived_seq), (None, Some(250)));

    // Nothing new: nothing written. New events continue the chain (zstd this time).
    let again = gz
        .run(time::OffsetDateTime::now_utc(), None, &|_| {})
        .await
        .unwrap();
    assert_eq!((again.events_archived, again.deleted), (0, 0));
    append(store.as_ref(), "a", 250, 20).await;
    crate::archive::conformance::clock_past_now().await;
    let zst = Archiver::new(
        store.clone(),
        b.clone(),
        signer(),
        "log.test".into(),
        settings(Compression::Zstd),
    );
    let r2 = zst
        .run(time::OffsetDateTime::now_utc(), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(r2.batches.len(), 1);
    assert!(
        r2.batches[0].object_key.ends_with(".ndjson.zst"),
        "{}",
        r2.batches[0].object_key
    );

    let report = verify(b).await;
    assert!(report.ok, "{:#?}", report.problems);
    assert_eq!(report.summary.events, 300);
    assert!(
        report
            .streams
            .iter()
            .all(|s| s.first_seq == Some(1) && s.checkpoints_checked > 0)
    );
    assert!(
        report.keys.iter().all(|k| k.status == Status::Valid),
        "{:#?}",
        report.keys
    );

    let obj = |i: usize| r.batches[i].object_key.clone();
    let man = |i: usize| r.batches[i].manifest_key.clone();
    let original = |k: String| async move { (k.clone(), b.get(&k).await.unwrap().unwrap()) };

    // A flipped byte in an object.
    let (k, bytes) = original(obj(0)).await;
    let mut flipped = bytes.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    b.overwrite(&k, flipped.into()).await;
    let t = verify(b).await;
    assert!(
        !t.ok && has(&t, K::ObjectSha256Mismatch, &k, Some(1)),
        "{:#?}",
        t.problems
    );
    assert_eq!(status(&t, &k), Status::Invalid);
    b.overwrite(&k, bytes.clone()).await;

    // A reordered line: the object still decompresses, the events say where.
    let raw = super::segment::decompress(&bytes, Compression::Gzip, 1 << 30).unwrap();
    let mut lines: Vec<&[u8]> = raw
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    lines.swap(9, 10);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for l in &lines {
        std::io::Write::write_all(&mut enc, l).unwrap();
        std::io::Write::write_all(&mut enc, b"\n").unwrap();
    }
    b.overwrite(&k, enc.finish().unwrap().into()).await;
    let t = verify(b).await;
    assert!(has(&t, K::Reordered, &k, Some(10)), "{:#?}", t.problems);
    assert!(has(&t, K::ObjectSha256Mismatch, &k, None));
    b.overwrite(&k, bytes.clone()).await;

    // A deleted object.
    let (k1, bytes1) = original(obj(1)).await;
    b.remove(&k1).await;
    let t = verify(b).await;
    assert!(
        has(&t, K::ObjectMissing, &k1, Some(101)),
        "{:#?}",
        t.problems
    );
    assert_eq!(status(&t, &k1), Status::Missing);
    // An object replaced by another valid-looking one (a real object of the stream).
    b.overwrite(&k1, bytes.clone()).await;
    let t = verify(b).await;
    assert!(
        has(&t, K::ObjectSha256Mismatch, &k1, Some(101)),
        "{:#?}",
        t.problems
    );
    assert!(has(&t, K::Reordered, &k1, Some(101)));
    b.overwrite(&k1, bytes1.clone()).await;

    // An edited manifest.
    let (m2, mbytes2) = original(man(2)).await;
    let edited =
        String::from_utf8(mbytes2.to_vec())
            .unwrap()
            .replacen("\"count\":50", "\"count\":49", 1);
    assert_ne!(edited.as_bytes(), &mbytes2[..]);
    b.overwrite(&m2, edited.into()).await;
    let t = verify(b).await;
    assert!(
        has(&t, K::BadSignature, &m2, Some(201)),
        "{:#?}",
        t.problems
    );
    assert!(has(&t, K::BadHmac, &m2, Some(201)));
    b.overwrite(&m2, mbytes2.clone()).await;

    // A deleted manifest: its object is uncovered, seqs have a gap, the chain breaks.
    let (m1, mbytes1) = original(man(1)).await;
    b.remove(&m1).await;
    let t = verify(b).await;
    assert!(has(&t, K::NotCovered, &k1, Some(101)), "{:#?}", t.problems);
    assert!(has(&t, K::Gap, &m2, Some(101)));
    assert!(has(&t, K::ManifestChainBroken, &m2, Some(201)));
    assert_eq!(status(&t, &k1), Status::NotCovered);
    b.overwrite(&m1, mbytes1).await;

    // An added object.
    let added = "a/events/dt=2026-01-01/00000000000000000001-00000000000000000100.ndjson.gz";
    b.overwrite(added, bytes.clone()).await;
    let t = verify(b).await;
    assert!(has(&t, K::NotCovered, added, Some(1)), "{:#?}", t.problems);
    b.remove(added).await;

    let back = verify(b).await;
    assert!(
        back.ok,
        "restored originals verify again: {:#?}",
        back.problems
    );
}

fn any(r: &super::verify::ArchiveReport, kind: K) -> bool {
    r.problems.iter().any(|p| p.kind == kind)
}

async fn verify_with(b: &Bucket, opts: VerifyOptions) -> super::verify::ArchiveReport {
    verify_archive(b, &signer().verifier(), &opts, &|_| {})
        .await
        .unwrap()
        .0
}

/// Issue #12: nothing that was logged disappears from the bucket without
/// `verify` saying so. Each case is a finding reproduced on the code before
/// the index existed (there, each verified OK or panicked).
pub async fn completeness(b: &Bucket) {
    // Nothing at all: an error, never a pass.
    let e = verify_archive(b, &signer().verifier(), &VerifyOptions::default(), &|_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("holds no archive"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
    append(store.as_ref(), "a", 0, 20).await;
    append(store.as_ref(), "b", 0, 5).await;
    crate::selflog::record(
        store.as_ref(),
        vec![(
            "own-1".into(),
            "checkpoint.signed",
            serde_json::json!({"note": "x"}),
        )],
    )
    .await
    .unwrap();
    crate::archive::conformance::clock_past_now().await;
    let mut s = settings(Compression::Gzip);
    s.segment_events = 10;
    let arch = Archiver::new(store.clone(), b.clone(), signer(), "log.test".into(), s);
    let first = arch
        .run(time::OffsetDateTime::now_utc(), None, &|_| {})
        .await
        .unwrap();
    let idx1 = first.index.clone().unwrap();
    assert_eq!(
        (idx1.number, idx1.key.as_str()),
        (1, "_index/00000000000000000001.json")
    );
    // A second run with newer events, and a checkpoint beyond the archive.
    append(store.as_ref(), "a", 20, 10).await;
    crate::archive::conformance::clock_past_now().await;
    let second = arch
        .run(time::OffsetDateTime::now_utc(), None, &|_| {})
        .await
        .unwrap();
    let idx2 = second.index.clone().unwrap();
    assert_eq!(idx2.number, 2);
    let newest_a = second
        .batches
        .iter()
        .find(|x| x.stream == "a")
        .unwrap()
        .clone();
    assert_eq!((newest_a.start_seq, newest_a.end_seq), (21, 30));
    let report = verify(b).await;
    assert!(report.ok, "{:#?}", report.problems);
    assert!(
        report
            .streams
            .iter()
            .any(|s| s.stream == "_trailkeep" && s.events == 1),
        "the log's own stream is verified like any other: {:#?}",
        report.streams
    );
    assert_eq!(report.newest_index.as_ref().unwrap().number, 2);
    let cp30 = crate::archive::layout::checkpoint_key(
        &crate::names::StreamName::parse("a").expect("valid"),
        30,
    );
    let note30 = String::from_utf8(b.get(&cp30).await.unwrap().unwrap().to_vec()).unwrap();
    let trusted30 = {
        let body = crate::chain::note::open(&note30, &signer().verifier()).unwrap();
        let cp = crate::chain::checkpoint::Checkpoint::parse(body).unwrap();
        super::verify::TrustedCheckpoint {
            source: "saved.note".into(),
            stream: "a".into(),
            size: cp.size,
            root: cp.root,
        }
    };
    let with_trusted = || VerifyOptions {
        hmac_key: Some(b"shared".to_vec()),
        trusted: vec![trusted30.clone()],
        ..VerifyOptions::default()
    };
    let t = verify_with(b, with_trusted()).await;
    assert!(
        t.ok && t.trusted[0].outcome == "matches",
        "{:#?}",
        t.trusted
    );

    let keep = |k: String| async move { (k.clone(), b.get(&k).await.unwrap().unwrap()) };

    // A stray object at the top: reported, never a panic.
    b.overwrite("README", Bytes::from_static(b"hi\n")).await;
    let t = verify(b).await;
    assert!(has(&t, K::NotCovered, "README", None), "{:#?}", t.problems);
    b.remove("README").await;

    // The log's own stream edited.
    let own = first
        .batches
        .iter()
        .find(|x| x.stream == "_trailkeep")
        .unwrap();
    let (k, bytes) = keep(own.object_key.clone()).await;
    let mut flipped = bytes.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    b.overwrite(&k, flipped.into()).await;
    let t = verify(b).await;
    assert!(
        has(&t, K::ObjectSha256Mismatch, &k, Some(1)),
        "{:#?}",
        t.problems
    );
    b.overwrite(&k, bytes).await;

    // A whole stream folder removed.
    let folder: Vec<(String, Bytes)> = {
        let mut v = Vec::new();
        for (k, _) in b.list("b").await.unwrap() {
            v.push(keep(k).await);
        }
        v
    };
    for (k, _) in &folder {
        b.remove(k).await;
    }
    let t = verify(b).await;
    assert!(any(&t, K::StreamMissing) && !t.ok, "{:#?}", t.problems);
    assert!(
        t.problems
            .iter()
            .any(|p| p.kind == K::StreamMissing && p.stream == "b")
    );
    // Added back under another name: a folder no index names.
    for (k, v) in &folder {
        b.overwrite(&format!("c{}", &k[1..]), v.clone()).await;
    }
    let t = verify(b).await;
    assert!(
        t.problems
            .iter()
            .any(|p| p.kind == K::NotIndexed && p.stream == "c"),
        "{:#?}",
        t.problems
    );
    for (k, v) in &folder {
        b.remove(&format!("c{}", &k[1..])).await;
        b.overwrite(k, v.clone()).await;
    }
    assert!(verify(b).await.ok);

    // The newest batch removed (object, manifest, checkpoint): the index names it.
    let gone = vec![
        keep(newest_a.object_key.clone()).await,
        keep(newest_a.manifest_key.clone()).await,
        keep(cp30.clone()).await,
    ];
    for (k, _) in &gone {
        b.remove(k).await;
    }
    let t = verify(b).await;
    assert!(
        has(&t, K::BatchMissing, &newest_a.manifest_key, Some(30)),
        "{:#?}",
        t.problems
    );
    assert!(has(&t, K::CheckpointMissing, &cp30, Some(30)));
    // ... and the newest index with them: the bucket is consistent again,
    // and only its age or a checkpoint held elsewhere tells.
    let (k2, i2) = keep(idx2.key.clone()).await;
    b.remove(&k2).await;
    let t = verify(b).await;
    assert!(
        t.ok,
        "a truncated tail with its index is self-consistent: {:#?}",
        t.problems
    );
    // Wall-clock on purpose: the index must be older than `max_age` (1 s)
    // by the bucket's object timestamps.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let t = verify_with(
        b,
        VerifyOptions {
            hmac_key: Some(b"shared".to_vec()),
            max_age: Some(std::time::Duration::from_secs(1)),
            ..VerifyOptions::default()
        },
    )
    .await;
    assert!(has(&t, K::Stale, &idx1.key, None), "{:#?}", t.problems);
    let t = verify_with(b, with_trusted()).await;
    assert!(
        t.problems
            .iter()
            .any(|p| p.kind == K::BehindTrustedCheckpoint && p.stream == "a" && p.seq == Some(21)),
        "{:#?}",
        t.problems
    );
    assert_eq!(t.trusted[0].outcome, "behind");
    for (k, v) in &gone {
        b.overwrite(k, v.clone()).await;
    }
    b.overwrite(&k2, i2.clone()).await;
    assert!(verify(b).await.ok);

    // An index removed from the middle of the chain, or edited.
    let (k1, i1) = keep(idx1.key.clone()).await;
    b.remove(&k1).await;
    let t = verify(b).await;
    assert!(has(&t, K::IndexMissing, &k1, None), "{:#?}", t.problems);
    assert!(
        !any(&t, K::IndexChainBroken),
        "a gap is reported once, as missing: {:#?}",
        t.problems
    );
    assert_eq!(t.summary.problems, t.problems.len() as u64);
    let edited =
        String::from_utf8(i1.to_vec())
            .unwrap()
            .replacen("\"number\":1", "\"number\":7", 1);
    b.overwrite(&k1, edited.into()).await;
    let t = verify(b).await;
    assert!(has(&t, K::IndexInvalid, &k1, None), "{:#?}", t.problems);
    let listed = t.keys.iter().find(|k| k.key == k1).unwrap();
    assert_eq!(listed.status, Status::Invalid);
    assert!(
        listed
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("signature")),
        "{listed:?}"
    );
    // Replaced by another validly signed index 1 (only the key holder can),
    // one that even claims a predecessor: both links show it.
    let mut other = super::index::Index::parse(&i1).unwrap();
    other.created = "2026-01-01T00:00:00.000000Z".into();
    other.prev_index_sha256 = Some("00".repeat(32));
    let other = other.sign(&signer(), Some(b"shared"));
    b.overwrite(&k1, other.to_bytes().into()).await;
    let t = verify(b).await;
    let broken = |key: &str, what: &str| {
        t.problems.iter().any(|p| {
            p.kind == K::IndexChainBroken
                && p.key.as_deref() == Some(key)
                && p.message.contains(what)
        })
    };
    assert!(broken(&k1, "links to a previous one"), "{:#?}", t.problems);
    assert!(broken(&idx2.key, "prevIndexSha256"), "{:#?}", t.problems);
    b.overwrite(&k1, i1).await;
    let t = verify(b).await;
    let listed = t.keys.iter().find(|k| k.key == idx2.key).unwrap();
    assert_eq!(
        (listed.status, listed.reason.as_deref()),
        (Status::Valid, None)
    );

    // With --stream, only that stream is held to the index.
    for (k, _) in &folder {
        b.remove(k).await;
    }
    let only = |s: &str| VerifyOptions {
        hmac_key: Some(b"shared".to_vec()),
        stream: Some(s.to_owned()),
        ..VerifyOptions::default()
    };
    let t = verify_with(b, only("a")).await;
    assert!(t.ok, "{:#?}", t.problems);
    let t = verify_with(b, only("b")).await;
    assert!(
        t.problems
            .iter()
            .any(|p| p.kind == K::StreamMissing && p.stream == "b"),
        "{:#?}",
        t.problems
    );
    for (k, v) in &folder {
        b.overwrite(k, v.clone()).await;
    }

    // The oldest batches removed: the bucket alone starts at seq 11 and
    // only says so in a note; the index names seq 1.
    let oldest_a = first.batches.iter().find(|x| x.stream == "a").unwrap();
    assert_eq!(oldest_a.start_seq, 1);
    let oldest = vec![
        keep(oldest_a.object_key.clone()).await,
        keep(oldest_a.manifest_key.clone()).await,
    ];
    for (k, _) in &oldest {
        b.remove(k).await;
    }
    let t = verify(b).await;
    assert!(
        t.problems
            .iter()
            .any(|p| p.kind == K::BatchMissing && p.stream == "a" && p.seq == Some(1)),
        "{:#?}",
        t.problems
    );
    for (k, v) in &oldest {
        b.overwrite(k, v.clone()).await;
    }

    // The last manifest re-serialized: the same signed content in other
    // bytes. Its signature still holds; only the index's SHA-256 shows it.
    let (lm, lm_bytes) = keep(newest_a.manifest_key.clone()).await;
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&lm_bytes).unwrap())
            .unwrap();
    b.overwrite(&lm, pretty.into()).await;
    let t = verify(b).await;
    assert!(!any(&t, K::BadSignature), "{:#?}", t.problems);
    assert!(has(&t, K::BatchMissing, &lm, Some(30)), "{:#?}", t.problems);
    b.overwrite(&lm, lm_bytes).await;
    assert!(verify(b).await.ok);

    // A checkpoint an index names, beyond the archive, replaced by one
    // with another root (a fork signed with the key): the index shows it.
    append(store.as_ref(), "a", 30, 5).await;
    crate::ingest::checkpointer::checkpoint_stream(store.as_ref(), &signer(), "log.test", "a")
        .await
        .unwrap()
        .unwrap();
    super::index::write(b, store.as_ref(), &signer(), "log.test", Some(b"shared"))
        .await
        .unwrap();
    assert!(verify(b).await.ok);
    let cp35 = crate::archive::layout::checkpoint_key(
        &crate::names::StreamName::parse("a").expect("valid"),
        35,
    );
    let (_, cp35_bytes) = keep(cp35.clone()).await;
    let forged = signer()
        .sign(
            &crate::chain::checkpoint::Checkpoint {
                origin: "log.test/a".into(),
                size: 35,
                root: [7; 32],
            }
            .to_text(),
        )
        .unwrap();
    b.overwrite(&cp35, forged.into()).await;
    let t = verify(b).await;
    assert!(
        t.problems.iter().any(|p| p.kind == K::CheckpointMissing
            && p.key.as_deref() == Some(cp35.as_str())
            && p.message.contains("root")),
        "{:#?}",
        t.problems
    );
    b.overwrite(&cp35, cp35_bytes.clone()).await;

    // Trusted checkpoints, case by case.
    let trusted = |note: &[u8]| {
        let text = String::from_utf8(note.to_vec()).unwrap();
        let body = crate::chain::note::open(&text, &signer().verifier()).unwrap();
        let cp = crate::chain::checkpoint::Checkpoint::parse(body).unwrap();
        super::verify::TrustedCheckpoint {
            source: format!("saved-{}.note", cp.size),
            stream: "a".into(),
            size: cp.size,
            root: cp.root,
        }
    };
    let t35 = trusted(&cp35_bytes);
    let outcome = |opts: VerifyOptions| async move {
        let r = verify_with(b, opts).await;
        assert_eq!(r.trusted.len(), 1, "{:#?}", r.trusted);
        (r.ok, r.trusted[0].outcome, r.trusted[0].detail.clone())
    };
    let opts = |t: super::verify::TrustedCheckpoint, hot_follows: bool| VerifyOptions {
        hmac_key: Some(b"shared".to_vec()),
        trusted: vec![t],
        hot_follows,
        ..VerifyOptions::default()
    };
    // Beyond the archive (seq 30) but within the newest indexed checkpoint
    // (35): offline cannot compare; combined verify leaves it to the hot pass.
    let (ok, o, d) = outcome(opts(t35.clone(), false)).await;
    assert!(
        ok && o == "not_compared" && d.contains("within the newest indexed checkpoint"),
        "{o}: {d}"
    );
    let (ok, o, _) = outcome(opts(t35.clone(), true)).await;
    assert!(ok && o == "extended", "{o}");
    // The same size as the indexed checkpoint, another root: a fork.
    let mut fork = t35.clone();
    fork.root[0] ^= 1;
    let (ok, o, d) = outcome(opts(fork, false)).await;
    assert!(!ok && o == "mismatch" && d.contains("fork"), "{o}: {d}");
    // Another stream's trusted checkpoint under --stream b: not looked at.
    let r = verify_with(
        b,
        VerifyOptions {
            stream: Some("b".into()),
            ..opts(t35.clone(), false)
        },
    )
    .await;
    assert!(r.ok && r.trusted.is_empty(), "{:#?}", r.trusted);
    // Inside the archive, but the archive no longer starts at seq 1: no
    // root can be recomputed there, and verify says why.
    let t20 = trusted(
        &b.get(&crate::archive::layout::checkpoint_key(
            &crate::names::StreamName::parse("a").expect("valid"),
            20,
        ))
        .await
        .unwrap()
        .unwrap(),
    );
    for (k, _) in &oldest {
        b.remove(k).await;
    }
    let (_, o, d) = outcome(opts(t20, false)).await;
    assert!(
        o == "not_compared" && d.contains("does not start at seq 1"),
        "{o}: {d}"
    );
    for (k, v) in &oldest {
        b.overwrite(k, v.clone()).await;
    }

    // A rewritten history below a trusted checkpoint: a forged root.
    let mut forged = trusted30.clone();
    forged.root[0] ^= 1;
    let t = verify_with(
        b,
        VerifyOptions {
            hmac_key: Some(b"shared".to_vec()),
            trusted: vec![forged],
            ..VerifyOptions::default()
        },
    )
    .await;
    assert!(any(&t, K::TrustedCheckpointMismatch), "{:#?}", t.problems);
    let back = verify(b).await;
    assert!(back.ok, "{:#?}", back.problems);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::BucketOptions;

    /// The archiver archives only a hot chain that holds: a body that does
    /// not hash to its recorded hash, one whose prev does not link, or one
    /// that names another stream (each rehashed, as someone with write
    /// access to the database would) stops the run at that seq, and
    /// nothing is written to the bucket, recorded or deleted.
    #[tokio::test]
    async fn the_archiver_refuses_a_hot_chain_that_does_not_hold() {
        let zero = "0".repeat(64);
        let cases: [(&str, &str, bool); 3] = [
            (
                "hash does not match",
                "replace(body, '\"i\":4', '\"i\":9')",
                false,
            ),
            (
                "does not link",
                &format!("replace(body, prev, '{zero}')"),
                true,
            ),
            (
                "belongs to stream",
                "replace(body, '\"stream\":\"s\"', '\"stream\":\"t\"')",
                true,
            ),
        ];
        for (want, edit, rehash) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("hot.db");
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
            append(store.as_ref(), "s", 0, 20).await;
            let c = rusqlite::Connection::open(&path).unwrap();
            let (prev, body): (String, String) = c
                .query_row("SELECT (SELECT hash FROM events WHERE seq = 4), body FROM events WHERE seq = 5", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            let sql = edit.replace("body,", "?1,").replace("prev,", "?2,");
            let new: String = c
                .query_row(
                    &format!("SELECT {sql}, ?2"),
                    rusqlite::params![body, prev],
                    |r| r.get(0),
                )
                .unwrap();
            assert_ne!(new, body, "{want}: the edit changed the body");
            let hash = if rehash {
                hex::encode(crate::chain::event_hash(new.as_bytes()))
            } else {
                c.query_row("SELECT hash FROM events WHERE seq = 5", [], |r| r.get(0))
                    .unwrap()
            };
            c.execute(
                "UPDATE events SET body = ?1, hash = ?2 WHERE seq = 5",
                rusqlite::params![new, hash],
            )
            .unwrap();
            clock_past_now().await;
            let url = url::Url::from_directory_path(dir.path().join("archive")).unwrap();
            std::fs::create_dir(dir.path().join("archive")).unwrap();
            let b = Bucket::open(url.as_str(), &BucketOptions::default()).unwrap();
            let a = Archiver::new(
                store.clone(),
                b.clone(),
                signer(),
                "log.test".into(),
                settings(Compression::Gzip),
            );
            let e = a
                .run(time::OffsetDateTime::now_utc(), None, &|_| {})
                .await
                .expect_err(want);
            assert!(
                matches!(&e, ArchiveError::Chain { seq: 5, message, .. } if message.contains(want)),
                "{want}: {e}"
            );
            assert!(
                store.last_archive_batch("s").await.unwrap().is_none(),
                "{want}: nothing recorded"
            );
            assert!(
                b.list("s").await.unwrap().is_empty(),
                "{want}: nothing written"
            );
            assert_eq!(
                store.read_events("s", 1, 100).await.unwrap().len(),
                20,
                "{want}: nothing deleted"
            );
        }
    }

    fn required(var: &str) -> Option<String> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the archive backend tests: {var} is not set (scripts/test.sh sets it)"
                );
                eprintln!("{var} not set: skipping (scripts/test.sh sets it)");
                None
            }
        }
    }

    fn unique() -> String {
        ulid::Ulid::new().to_string().to_lowercase()
    }

    #[tokio::test]
    async fn local_directory_passes_the_archive_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let base = url::Url::from_directory_path(dir.path()).unwrap();
        run_all(|| {
            Bucket::open(&format!("{base}{}", unique()), &BucketOptions::default()).unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn s3_moto_passes_the_archive_conformance_suite() {
        let Some(endpoint) = required("TEST_S3_ENDPOINT") else {
            return;
        };
        let bucket = std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "trailkeep-test".into());
        run_all(|| {
            Bucket::open(
                &format!(
                    "s3://{bucket}/{}?endpoint={endpoint}&region=us-east-1&path_style=true",
                    unique()
                ),
                &BucketOptions::default(),
            )
            .unwrap()
        })
        .await;
    }

    /// `[archive] object_lock_mode/days`: every object an archive run
    /// writes (events, manifests, checkpoints, index) carries the retention,
    /// set by our own signed PutObjectRetention on moto's Object Lock bucket.
    #[tokio::test]
    async fn s3_object_lock_retains_every_object_the_archive_writes() {
        use crate::objstore::object_lock::{LockMode, LockSettings};
        let Some(endpoint) = required("TEST_S3_ENDPOINT") else {
            return;
        };
        let locked =
            std::env::var("TEST_S3_LOCK_BUCKET").unwrap_or_else(|_| "trailkeep-test-lock".into());
        let opts = BucketOptions {
            object_lock: Some(LockSettings {
                mode: LockMode::Compliance,
                days: 3,
            }),
            ..BucketOptions::default()
        };
        let url = |bucket: &str| {
            format!(
                "s3://{bucket}/{}?endpoint={endpoint}&region=us-east-1&path_style=true",
                unique()
            )
        };
        let b = Bucket::open(&url(&locked), &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
        append(store.as_ref(), "a", 0, 150).await;
        crate::archive::conformance::clock_past_now().await;
        let archiver = Archiver::new(
            store.clone(),
            b.clone(),
            signer(),
            "log.test".into(),
            settings(Compression::Gzip),
        );
        let r = archiver
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!(r.events_archived, 150);
        let keys = b.list("").await.unwrap();
        assert!(
            keys.len() >= 5,
            "objects, manifests, checkpoints, index: {keys:?}"
        );
        let low =
            time::OffsetDateTime::now_utc() + time::Duration::days(3) - time::Duration::minutes(5);
        let high = low + time::Duration::minutes(10);
        let mut found = Vec::new();
        for (key, _) in &keys {
            found.push((key.clone(), b.retention(key).await.unwrap()));
        }
        for (key, r) in found.clone() {
            let r = r.unwrap_or_else(|| panic!("{key} has no retention: {found:?}"));
            assert_eq!(r.mode, "COMPLIANCE", "{key}");
            let until = time::OffsetDateTime::parse(
                &r.until,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(low <= until && until <= high, "{key}: {until}");
        }
        // What the lock is for: the bucket's own credentials cannot remove
        // a version of an archived object.
        let (key, r) = &found[0];
        let version = r.as_ref().unwrap().version.clone().expect("a version id");
        let status = b.delete_version(key, &version).await.unwrap();
        assert_eq!(status, 403, "deleting a locked version of {key}");
        assert!(b.get(key).await.unwrap().is_some());
        // A bucket without Object Lock: the write fails, naming the cause,
        // and the run records nothing (no batch without its retention).
        let plain = Bucket::open(
            &url(&std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "trailkeep-test".into())),
            &opts,
        )
        .unwrap();
        let e = plain
            .put_create("x/y", Bytes::from_static(b"z"))
            .await
            .expect_err("retention on a bucket without Object Lock");
        assert!(e.to_string().contains("Object Lock"), "{e}");
    }

    #[tokio::test]
    async fn azure_azurite_passes_the_archive_conformance_suite() {
        let Some(_) = required("AZURITE_BLOB_STORAGE_URL") else {
            return;
        };
        let container =
            std::env::var("TEST_AZURE_CONTAINER").unwrap_or_else(|_| "trailkeep-test".into());
        run_all(|| {
            Bucket::open(
                &format!("az://{container}/{}?emulator=true", unique()),
                &BucketOptions::default(),
            )
            .unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn gcs_fake_passes_the_archive_conformance_suite() {
        let fake = crate::objstore::gcs_fake::GcsFake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let account = fake.service_account(dir.path());
        run_all(|| {
            Bucket::open(
                &format!(
                    "gs://trailkeep-test/{}?service_account={}",
                    unique(),
                    account.display()
                ),
                &BucketOptions::default(),
            )
            .unwrap()
        })
        .await;
    }
}

/// Faults of the object store: errors and timeouts between the archiver
/// and a real S3 API server, through a fault-injecting proxy.
#[cfg(test)]
mod faults {
    use std::time::Duration;

    use axum::http::Method;

    use super::*;
    use crate::archive::BucketOptions;
    use crate::archive::fault_proxy::{Fault, FaultProxy};

    async fn setup(
        proxy: &FaultProxy,
        dir: &std::path::Path,
    ) -> (Arc<dyn Store>, Archiver, Bucket) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("hot.db")).unwrap());
        append(store.as_ref(), "s", 0, 250).await;
        crate::archive::conformance::clock_past_now().await;
        let bucket = std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "trailkeep-test".into());
        let url = format!(
            "s3://{bucket}/{}?endpoint={}&region=us-east-1&path_style=true",
            ulid::Ulid::new().to_string().to_lowercase(),
            proxy.url
        );
        let opts = BucketOptions {
            request_timeout: Duration::from_secs(1),
            max_retries: 0,
            object_lock: None,
        };
        let b = Bucket::open(&url, &opts).unwrap();
        let a = Archiver::new(
            store.clone(),
            b.clone(),
            signer(),
            "log.test".into(),
            settings(Compression::Gzip),
        );
        (store, a, b)
    }

    async fn proxy() -> Option<FaultProxy> {
        let endpoint = match std::env::var("TEST_S3_ENDPOINT") {
            Ok(e) if !e.is_empty() => e,
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the S3 fault tests: TEST_S3_ENDPOINT is not set"
                );
                return None;
            }
        };
        Some(FaultProxy::start(&endpoint).await)
    }

    #[tokio::test]
    async fn transient_500s_are_retried_and_nothing_is_lost() {
        let Some(p) = proxy().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = setup(&p, dir.path()).await;
        p.inject(
            Method::PUT,
            "/events/",
            Fault::Status(500, "InternalError"),
            2,
        );
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!((r.events_archived, r.deleted), (250, 250));
        let failed = p
            .log()
            .iter()
            .filter(|l| l.contains("InternalError"))
            .count();
        assert_eq!(failed, 2, "{:#?}", p.log());
        assert!(verify(&b).await.ok);
        assert_eq!(
            store.stream("s").await.unwrap().unwrap().archived_seq,
            Some(250)
        );
    }

    /// A read-back that misses once (an eventually consistent HEAD) is
    /// retried: the rewrite finds its own bytes, the run completes.
    #[tokio::test]
    async fn a_read_back_that_misses_once_is_retried() {
        let Some(p) = proxy().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = setup(&p, dir.path()).await;
        p.inject(Method::HEAD, "/events/", Fault::Status(404, "NoSuchKey"), 1);
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!((r.events_archived, r.deleted), (250, 250));
        let missed = p.log().iter().filter(|l| l.contains("NoSuchKey")).count();
        assert_eq!(missed, 1, "{:#?}", p.log());
        assert!(verify(&b).await.ok);
        assert_eq!(
            store.stream("s").await.unwrap().unwrap().archived_seq,
            Some(250)
        );
    }

    /// A refused credential is not retried: one attempt, then the run stops
    /// naming the key and the cause (it used to be retried like a 5xx, as
    /// every store error was "transient").
    #[tokio::test]
    async fn a_refused_credential_is_not_retried() {
        let Some(p) = proxy().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let (store, a, _) = setup(&p, dir.path()).await;
        p.inject(
            Method::PUT,
            "/events/",
            Fault::Status(403, "AccessDenied"),
            1000,
        );
        let e = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .expect_err("403");
        assert!(!e.is_transient(), "{e:?}");
        assert!(e.to_string().contains("credentials were refused"), "{e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the cause is kept: {e:?}"
        );
        let refused = p
            .log()
            .iter()
            .filter(|l| l.contains("AccessDenied"))
            .count();
        assert_eq!(refused, 1, "one attempt: {:#?}", p.log());
        assert_eq!(
            store.stream("s").await.unwrap().unwrap().archived_seq,
            None,
            "nothing recorded"
        );
    }

    #[tokio::test]
    async fn slowdown_stops_the_run_before_any_hot_delete() {
        let Some(p) = proxy().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = setup(&p, dir.path()).await;
        p.inject(
            Method::PUT,
            "/manifests/",
            Fault::Status(503, "SlowDown"),
            1000,
        );
        let e = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("manifests"),
            "the error names the key: {e}"
        );
        let info = store.stream("s").await.unwrap().unwrap();
        assert_eq!(
            (info.oldest_hot_seq, info.archived_seq),
            (Some(1), None),
            "nothing deleted, nothing recorded"
        );
        assert_eq!(store.read_events("s", 1, 1000).await.unwrap().len(), 250);
        // The store recovers: the next run finishes, reusing the object written before.
        p.clear();
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!(
            (r.events_archived, r.resumed_objects, r.deleted),
            (250, 1, 250)
        );
        let report = verify(&b).await;
        assert!(report.ok, "{:#?}", report.problems);
        assert_eq!(report.keys.iter().filter(|k| k.kind == "object").count(), 3);
    }

    #[tokio::test]
    async fn a_timeout_after_a_successful_put_is_resolved_by_checksum() {
        let Some(p) = proxy().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let (_store, a, b) = setup(&p, dir.path()).await;
        // The first object PUT reaches the store, but its answer comes too late.
        p.inject(
            Method::PUT,
            "/events/",
            Fault::DelayAfterForward(Duration::from_secs(3)),
            1,
        );
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!((r.events_archived, r.deleted), (250, 250));
        assert!(
            r.resumed_objects >= 1,
            "the retry found its own object (412) and compared checksums"
        );
        let report = verify(&b).await;
        assert!(report.ok, "{:#?}", report.problems);
    }

    #[tokio::test]
    async fn hot_deletion_stops_at_a_destination_cursor_unless_allowed() {
        use crate::store::DeliveryCursor;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
        append(store.as_ref(), "s", 0, 250).await;
        append(store.as_ref(), "t", 0, 20).await;
        crate::archive::conformance::clock_past_now().await;
        let cursor = |seq, past| DeliveryCursor {
            destination: "siem".into(),
            stream: "s".into(),
            seq,
            archive_past: past,
            delivered: 0,
        };
        store
            .put_delivery_cursor(cursor(120, false), None)
            .await
            .unwrap();
        let url = url::Url::from_directory_path(dir.path().join("archive")).unwrap();
        let b = Bucket::open(url.as_str(), &BucketOptions::default()).unwrap();
        let a = Archiver::new(
            store.clone(),
            b.clone(),
            signer(),
            "log.test".into(),
            settings(Compression::Gzip),
        );
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!(r.events_archived, 270, "archiving itself is not held back");
        assert_eq!(
            r.deleted,
            120 + 20,
            "s only up to the cursor; t has no cursor"
        );
        assert_eq!(r.held_back.len(), 1, "{:#?}", r.held_back);
        let h = &r.held_back[0];
        assert_eq!(
            (
                h.stream.as_str(),
                h.destination.as_str(),
                h.cursor_seq,
                h.archived_seq
            ),
            ("s", "siem", 120, 250)
        );
        assert!(h.reason.contains("siem"), "{}", h.reason);
        assert_eq!(store.read_events("s", 1, 1).await.unwrap()[0].seq, 121);
        // The destination catches up partly: deletion follows it.
        store
            .put_delivery_cursor(cursor(200, false), None)
            .await
            .unwrap();
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!((r.events_archived, r.deleted), (0, 80));
        // The operator lets deletion pass it: the rest goes.
        store
            .put_delivery_cursor(cursor(200, true), None)
            .await
            .unwrap();
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!((r.deleted, r.held_back.len()), (50, 0));
        assert!(store.read_events("s", 1, 1).await.unwrap().is_empty());
        assert!(verify(&b).await.ok);
    }

    #[tokio::test]
    async fn a_configured_destination_without_a_cursor_holds_deletion_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
        append(store.as_ref(), "s", 0, 50).await;
        append(store.as_ref(), "other", 0, 10).await;
        crate::archive::conformance::clock_past_now().await;
        let url = url::Url::from_directory_path(dir.path().join("archive")).unwrap();
        let b = Bucket::open(url.as_str(), &BucketOptions::default()).unwrap();
        let mut s = settings(Compression::Gzip);
        let only_s = crate::event::filter::Filter::new(&["s".to_owned()], &[]).unwrap();
        s.destinations = vec![("new-siem".into(), only_s.clone(), false)];
        let a = Archiver::new(
            store.clone(),
            b.clone(),
            signer(),
            "log.test".into(),
            s.clone(),
        );
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!(r.events_archived, 60);
        assert_eq!(
            r.deleted, 10,
            "only the stream the destination does not take"
        );
        assert_eq!(r.held_back.len(), 1);
        assert_eq!(
            (
                r.held_back[0].destination.as_str(),
                r.held_back[0].cursor_seq
            ),
            ("new-siem", 0)
        );
        assert_eq!(store.read_events("s", 1, 100).await.unwrap().len(), 50);
        // The operator allows deletion past it in the config: it goes.
        s.destinations = vec![("new-siem".into(), only_s, true)];
        let a = Archiver::new(store.clone(), b, signer(), "log.test".into(), s);
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        assert_eq!((r.deleted, r.held_back.len()), (50, 0));
    }

    /// Issue #15: a manifest's `lastTime` could be earlier than its
    /// `firstTime` (they were the times of the first and last events by
    /// seq, and producers' clocks do not follow seqs), and verify checked
    /// neither. Version 2 claims the earliest and latest time; verify checks
    /// each version's claim against the events and names the object;
    /// version 1 manifests (already in buckets) still verify.
    #[tokio::test]
    async fn manifest_times_are_the_range_and_verify_checks_them() {
        use crate::archive::manifest::Manifest;
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path().join("archive"))
            .unwrap()
            .to_string();
        let b = Bucket::open(&url, &crate::objstore::BucketOptions::default()).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
        // Out of seq order, and `…:00Z` after `…:00.5Z` as text.
        let times = [
            "2026-01-03T00:00:00Z",
            "2026-01-01T00:00:00.5Z",
            "2026-01-02T00:00:00Z",
            "2026-01-01T00:00:00Z",
        ];
        let events = times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                validate(
                    i,
                    serde_json::json!({"id": format!("e{i}"), "type": "t", "time": t, "data": {}}),
                    &crate::event::format_received(time::OffsetDateTime::now_utc()),
                    &Limits::default(),
                )
                .unwrap()
            })
            .collect();
        store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "t".into(),
                events,
            }])
            .await
            .unwrap();
        clock_past_now().await;
        let a = Archiver::new(
            store.clone(),
            b.clone(),
            signer(),
            "log.test".into(),
            settings(Compression::Gzip),
        );
        let r = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        let batch = r.batches.iter().find(|x| x.stream == "t").unwrap();
        let (mkey, okey) = (batch.manifest_key.clone(), batch.object_key.clone());
        let original = b.get(&mkey).await.unwrap().unwrap();
        let m = Manifest::parse(&original).unwrap();
        assert_eq!(m.version, 2);
        assert_eq!(
            (m.first_time.as_str(), m.last_time.as_str()),
            ("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"),
            "the earliest and latest time"
        );
        assert!(verify(&b).await.ok);
        let resigned = |m: Manifest| m.sign(&signer(), Some(b"shared")).to_bytes();
        let lying = |first: &str, last: &str, version: u32| {
            let mut l = m.clone();
            l.version = version;
            l.first_time = first.to_owned();
            l.last_time = last.to_owned();
            resigned(l)
        };
        let mismatch = |t: &super::super::verify::ArchiveReport, key: &str| {
            t.problems.iter().any(|p| {
                p.kind == K::ManifestMismatch
                    && p.key.as_deref() == Some(key)
                    && p.message.contains("Time")
            })
        };

        // Signed with the key, but lying about the range: the object is named.
        b.overwrite(
            &mkey,
            lying("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", 2).into(),
        )
        .await;
        let t = verify(&b).await;
        assert!(!t.ok && mismatch(&t, &okey), "{:#?}", t.problems);
        // First after last: the manifest alone shows it.
        b.overwrite(
            &mkey,
            lying("2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z", 2).into(),
        )
        .await;
        let t = verify(&b).await;
        assert!(mismatch(&t, &mkey), "{:#?}", t.problems);

        // Version 1 (what earlier builds wrote): the first and last by seq.
        b.overwrite(
            &mkey,
            lying("2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z", 1).into(),
        )
        .await;
        let t = verify(&b).await;
        // (The index pins the replaced file's SHA-256, as it pins every
        // manifest: in a bucket an old build wrote, it names the old one.)
        assert!(
            t.problems.iter().all(|p| p.kind == K::BatchMissing),
            "an old manifest still verifies: {:#?}",
            t.problems
        );
        b.overwrite(
            &mkey,
            lying("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", 1).into(),
        )
        .await;
        let t = verify(&b).await;
        assert!(
            mismatch(&t, &okey),
            "version 1 is held to its own claim: {:#?}",
            t.problems
        );
        b.overwrite(&mkey, original).await;
        assert!(verify(&b).await.ok);
    }

    #[test]
    fn settings_never_show_the_hmac_secret() {
        let s = settings(Compression::Gzip);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("shared") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_store_that_overwrites_is_refused_unless_single_writer() {
        let fake = crate::objstore::gcs_fake::GcsFake::start_overwriting().await;
        let dir = tempfile::tempdir().unwrap();
        let account = fake.service_account(dir.path());
        let b = Bucket::open(
            &format!("gs://b/p?service_account={}", account.display()),
            &BucketOptions::default(),
        )
        .unwrap();
        assert_eq!(b.probe().await.unwrap(), ProbeResult::Overwrites);
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
        append(store.as_ref(), "s", 0, 10).await;
        let a = Archiver::new(
            store.clone(),
            b.clone(),
            signer(),
            "log.test".into(),
            settings(Compression::Gzip),
        );
        let e = a
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, ArchiveError::NotCreateOnly(_)), "{e}");
        assert!(
            e.to_string().contains("single_writer"),
            "says why and what to do: {e}"
        );
        assert_eq!(store.read_events("s", 1, 100).await.unwrap().len(), 10);
        let mut s = settings(Compression::Gzip);
        s.single_writer = true;
        let a = Archiver::new(store.clone(), b, signer(), "log.test".into(), s);
        assert_eq!(
            a.run(time::OffsetDateTime::now_utc(), None, &|_| {})
                .await
                .unwrap()
                .events_archived,
            10
        );
    }
}
