//! Issue #12 through the real binary: nothing that was logged can disappear
//! without `verify` saying so, hot or cold. Each finding the issue
//! reproduced on the code before it is a test here (the archive-level
//! cases run on every backend in `archive::conformance::completeness`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Server, create_key, trailkeep};
use serde_json::{Value, json};

/// Posts events `from..from+n` to `stream` on a running server.
async fn post(server: &Server, key: &str, stream: &str, from: usize, n: usize) {
    let events: Vec<Value> = (from..from + n)
        .map(|i| json!({"id": format!("{stream}-{i}"), "type": "grant.created", "data": {"i": i}}))
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/streams/{stream}/events", server.url))
        .bearer_auth(key)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

fn verify(dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let out = trailkeep(dir, &args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kinds(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in v["streams"].as_array().into_iter().flatten() {
        for p in s["problems"].as_array().into_iter().flatten() {
            out.push(p["kind"].as_str().unwrap().to_owned());
        }
    }
    for p in v["archive"]["problems"].as_array().into_iter().flatten() {
        out.push(p["kind"].as_str().unwrap().to_owned());
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn move_dir(from: &Path, to: &Path) {
    std::fs::rename(from, to).unwrap();
}

/// Finding 1: two archived batches (1-10, 11-20), 21-25 hot, the stream's
/// folder removed from the archive: combined verify said OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_verify_finds_archived_history_removed_from_the_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(&cfg, "[archive]\nsegment_events = 10\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let key = create_key(&dir, "ingest");
    let server = Server::start(&dir, &["--config", cfg]).await;
    post(&server, &key, "s", 0, 20).await;
    post(&server, &key, "o", 0, 5).await;
    assert!(server.terminate().success());
    let out = trailkeep(
        &dir,
        &[
            "--config",
            cfg,
            "archive",
            "run",
            "--older-than",
            "0s",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&dir, &["--config", cfg]).await;
    post(&server, &key, "s", 20, 5).await;
    assert!(server.terminate().success());
    let (code, v, err) = verify(&dir, &["--config", cfg]);
    assert_eq!(code, 0, "{v:#} {err}");
    // The log's own stream is signed up to its records (the CLI archive run
    // signed it after recording its index; serve after its checkpoints).
    let own = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "_trailkeep")
        .unwrap();
    assert_eq!(own["checkpoint_size"], own["head_seq"], "{own:#}");
    let archive = dir.join("archive");

    // Findings 4 and 5, offline: a stray object crashed verify (exit 101),
    // and an edited object of `_trailkeep` was skipped (exit 0).
    let out = trailkeep(&dir, &["keys", "public"]);
    let pubkey = tmp.path().join("v.pub");
    std::fs::write(&pubkey, &out.stdout).unwrap();
    let url = format!("file://{}", archive.display());
    let offline = || {
        let out = trailkeep(
            &dir,
            &[
                "verify",
                "--archive",
                &url,
                "--public-key",
                pubkey.to_str().unwrap(),
                "--json",
            ],
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v)
    };
    let located = |v: &Value, kind: &str, key: &str| {
        v["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["kind"] == kind && p["key"].as_str().is_some_and(|k| k.starts_with(key)))
    };
    assert_eq!(offline().0, 0);
    std::fs::write(archive.join("README"), "hi\n").unwrap();
    let (code, v) = offline();
    assert_eq!(code, 1, "{v:#}");
    assert!(located(&v, "not_covered", "README"), "{v:#}");
    std::fs::remove_file(archive.join("README")).unwrap();
    let own_objects: Vec<PathBuf> = walk(&archive.join("_trailkeep").join("events"));
    assert!(!own_objects.is_empty(), "the log's own stream was archived");
    let original = std::fs::read(&own_objects[0]).unwrap();
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    std::fs::write(&own_objects[0], &flipped).unwrap();
    let (code, v) = offline();
    assert_eq!(code, 1, "{v:#}");
    assert!(
        located(&v, "object_sha256_mismatch", "_trailkeep/events/"),
        "{v:#}"
    );
    std::fs::write(&own_objects[0], &original).unwrap();
    assert_eq!(offline().0, 0);

    // The whole stream folder gone.
    let aside = tmp.path().join("aside");
    move_dir(&archive.join("s"), &aside);
    let (code, v, err) = verify(&dir, &["--config", cfg]);
    assert_eq!(code, 1, "{v:#} {err}");
    let k = kinds(&v);
    assert!(k.iter().any(|k| k == "archive_mismatch"), "{k:?}");
    assert!(k.iter().any(|k| k == "stream_missing"), "{k:?}");
    assert!(
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stream"] == "s"
                && s["problems"].as_array().unwrap().iter().any(|p| p["kind"]
                    == "archive_mismatch"
                    && p["expected"]
                        .as_str()
                        .unwrap()
                        .starts_with("2 archived batches (seqs 1-20)"))),
        "{v:#}"
    );
    // Another stream asked for: its own check passes.
    let (code, v, err) = verify(&dir, &["--config", cfg, "--stream", "o"]);
    assert_eq!(code, 0, "{v:#} {err}");
    move_dir(&aside, &archive.join("s"));

    // The hot store's record of a batch changed (range, or manifest hash):
    // it no longer matches the bucket.
    let db = dir.join("trailkeep.db");
    let backup = tmp.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    for tamper in [
        "UPDATE archive_batches SET end_seq = 9 WHERE start_seq = 1 AND stream_id = (SELECT id FROM streams WHERE name = 's')",
        "UPDATE archive_batches SET manifest_sha256 = replace(manifest_sha256, substr(manifest_sha256, 1, 1), 'x') WHERE start_seq = 11 AND stream_id = (SELECT id FROM streams WHERE name = 's')",
        "UPDATE archive_batches SET manifest_key = manifest_key || 'x' WHERE start_seq = 11 AND stream_id = (SELECT id FROM streams WHERE name = 's')",
    ] {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute(tamper, [])
            .unwrap();
        let (code, v, err) = verify(&dir, &["--config", cfg]);
        assert_eq!(code, 1, "{tamper}: {v:#} {err}");
        assert!(
            kinds(&v).iter().any(|k| k == "archive_mismatch"),
            "{tamper}: {v:#}"
        );
        std::fs::copy(&backup, &db).unwrap();
    }
    assert_eq!(verify(&dir, &["--config", cfg]).0, 0);

    // Only the first batch gone (object, manifest, checkpoint).
    for sub in ["events", "manifests"] {
        for day in std::fs::read_dir(archive.join("s").join(sub)).unwrap() {
            for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("00000000000000000001-")
                {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
    }
    let _ = std::fs::remove_file(
        archive
            .join("s")
            .join("checkpoints")
            .join(format!("{:020}", 10)),
    );
    let (code, v, err) = verify(&dir, &["--config", cfg]);
    assert_eq!(code, 1, "{v:#} {err}");
    let k = kinds(&v);
    assert!(k.iter().any(|k| k == "archive_mismatch"), "{k:?}");
    assert!(k.iter().any(|k| k == "batch_missing"), "{k:?}");
    // The human output locates it by stream, seq and key.
    let out = trailkeep(&dir, &["--config", cfg, "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stream=s seq=1 key=s/manifests/dt=") && text.contains("archive_mismatch"),
        "{text}"
    );
}

/// Finding 2: an empty or wrong archive URL passed with exit 0 (and the
/// directory was created). Now exit 2, naming it, nothing created.
#[test]
fn verify_refuses_a_missing_or_empty_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    create_key(&dir, "read");
    let out = trailkeep(&dir, &["keys", "public"]);
    let pubkey = tmp.path().join("v.pub");
    std::fs::write(&pubkey, &out.stdout).unwrap();
    let wrong = tmp.path().join("wrong").join("path");
    let out = trailkeep(
        &dir,
        &[
            "verify",
            "--archive",
            &format!("file://{}", wrong.display()),
            "--public-key",
            pubkey.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such directory"), "{err}");
    assert!(
        std::fs::metadata(tmp.path().join("wrong")).is_err(),
        "verify created nothing"
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = trailkeep(
        &dir,
        &[
            "verify",
            "--archive",
            &format!("file://{}", empty.display()),
            "--public-key",
            pubkey.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no archive"));
}

/// Finding 3 and the outside copy: a destination with `checkpoints = true`
/// receives every signed checkpoint; its copy, given to `verify` as a
/// trusted checkpoint, catches a consistent rewrite whose checkpoint rows
/// were deleted (which verified OK before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_held_by_a_destination_catches_a_rewrite_with_checkpoints_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let copy: PathBuf = tmp.path().join("siem.ndjson");
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[checkpoint]\ninterval_ms = 50\n[[destinations]]\nname = \"siem\"\ntype = \"file\"\npath = \"{}\"\nmax_age_ms = 50\ncheckpoints = true\n",
            copy.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let key = create_key(&dir, "ingest");
    let server = Server::start(&dir, &["--config", cfg]).await;
    let delivered = |size: u64| {
        let copy = copy.clone();
        move || {
            std::fs::read_to_string(&copy).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.contains("checkpoint.signed")
                        && l.contains("\"stream\":\"t\"")
                        && l.contains(&format!("\"size\":{size},"))
                })
            })
        }
    };
    post(&server, &key, "t", 0, 10).await;
    common::wait_until(
        Duration::from_secs(20),
        "the checkpoint at size 10 delivered",
        delivered(10),
    )
    .await;
    post(&server, &key, "t", 10, 10).await;
    common::wait_until(
        Duration::from_secs(20),
        "the checkpoint at size 20 delivered",
        delivered(20),
    )
    .await;
    assert!(server.terminate().success());
    let trusted = ["--trusted-checkpoint", copy.to_str().unwrap()];
    let (code, v, err) = verify(&dir, &trusted);
    assert_eq!(code, 0, "{v:#} {err}");
    let problems_of_t = |v: &Value| -> Vec<Value> {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == "t")
            .map(|s| s["problems"].as_array().unwrap().clone())
            .unwrap_or_default()
    };
    // Only the checkpoint at size 10 held.
    let ten = tmp.path().join("ten.ndjson");
    std::fs::write(
        &ten,
        std::fs::read_to_string(&copy)
            .unwrap()
            .lines()
            .find(|l| l.contains("\"stream\":\"t\"") && l.contains("\"size\":10,"))
            .unwrap(),
    )
    .unwrap();
    let held_ten = ["--trusted-checkpoint", ten.to_str().unwrap()];
    assert_eq!(verify(&dir, &held_ten).0, 0);

    // Events above the held checkpoint rewritten, the tiles left as they
    // were, checkpoint rows deleted: the events still extend the held
    // checkpoint, but the proofs the server would serve (from its tiles) do
    // not lead to them; only the consistency proof shows it.
    // And a tail truncated below a held checkpoint: located after the tail.
    let db = dir.join("trailkeep.db");
    let backup = tmp.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        common::rewrite_consistently(&c, "t", 15, 20);
        c.execute(
            "DELETE FROM checkpoints WHERE stream_id = (SELECT id FROM streams WHERE name = 't')",
            [],
        )
        .unwrap();
    }
    let (code, v, _) = verify(&dir, &held_ten);
    assert_eq!(code, 1, "{v:#}");
    let p = problems_of_t(&v);
    assert!(
        p.iter().any(|p| p["kind"] == "trusted_checkpoint_mismatch"
            && p["seq"] == 10
            && p["found"].as_str().unwrap().contains("does not lead")),
        "{p:#?}"
    );
    std::fs::copy(&backup, &db).unwrap();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let h15: String = c
            .query_row(
                "SELECT hash FROM events WHERE stream_id = (SELECT id FROM streams WHERE name = 't') AND seq = 15",
                [],
                |r| r.get(0),
            )
            .unwrap();
        c.execute_batch(
            "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE name = 't') AND seq > 15;
             DELETE FROM checkpoints WHERE stream_id = (SELECT id FROM streams WHERE name = 't');",
        )
        .unwrap();
        c.execute(
            "UPDATE streams SET head_seq = 15, head_hash = ?1 WHERE name = 't'",
            [h15],
        )
        .unwrap();
    }
    let (code, v, _) = verify(&dir, &trusted);
    assert_eq!(code, 1, "{v:#}");
    let p = problems_of_t(&v);
    assert!(
        p.iter()
            .any(|p| p["kind"] == "behind_trusted_checkpoint" && p["seq"] == 16),
        "{p:#?}"
    );
    std::fs::copy(&backup, &db).unwrap();
    assert_eq!(verify(&dir, &trusted).0, 0);

    // Rewrite event 3 of `t` and re-chain everything after it (hashes,
    // head), then delete the checkpoint rows that would show it.
    {
        let c = rusqlite::Connection::open(dir.join("trailkeep.db")).unwrap();
        common::rewrite_consistently(&c, "t", 3, 20);
        c.execute(
            "DELETE FROM checkpoints WHERE stream_id = (SELECT id FROM streams WHERE name = 't')",
            [],
        )
        .unwrap();
    }
    let (code, v, err) = verify(&dir, &trusted);
    assert_eq!(code, 1, "{v:#} {err}");
    let t = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "t")
        .unwrap();
    assert!(
        t["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "trusted_checkpoint_mismatch"),
        "{t:#}"
    );

    // The whole stream removed from the store: the held checkpoint names it.
    let removed = tmp.path().join("removed");
    std::fs::create_dir(&removed).unwrap();
    std::fs::copy(dir.join("trailkeep.db"), removed.join("trailkeep.db")).unwrap();
    std::fs::copy(dir.join("signing.key"), removed.join("signing.key")).unwrap();
    {
        let c = rusqlite::Connection::open(removed.join("trailkeep.db")).unwrap();
        c.execute_batch(
            "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE name = 't');
             DELETE FROM tiles WHERE stream_id = (SELECT id FROM streams WHERE name = 't');
             DELETE FROM checkpoints WHERE stream_id = (SELECT id FROM streams WHERE name = 't');
             DELETE FROM streams WHERE name = 't';",
        )
        .unwrap();
    }
    let (code, v, err) = verify(&removed, &trusted);
    assert_eq!(code, 1, "{v:#} {err}");
    let mut only_own = trusted.to_vec();
    only_own.extend(["--stream", "_trailkeep"]);
    let (code, v, err) = verify(&removed, &only_own);
    assert_eq!(code, 0, "another stream asked for: {v:#} {err}");
    let (code, v, err) = verify(&removed, &trusted);
    assert_eq!(code, 1, "{v:#} {err}");
    assert!(
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stream"] == "t"
                && s["problems"][0]["kind"] == "behind_trusted_checkpoint"
                && s["problems"][0]["seq"] == 1),
        "{v:#}"
    );

    // `checkpoints export` writes the same anchors from the log's own stream.
    let out_dir = tmp.path().join("export");
    let out = trailkeep(
        &dir,
        &[
            "checkpoints",
            "export",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(out_dir.join("t").join(format!("{:020}.note", 20))).is_ok(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (code, v, _) = verify(&dir, &["--trusted-checkpoint", out_dir.to_str().unwrap()]);
    assert_eq!(code, 1, "the exported checkpoints catch it too: {v:#}");
}

/// Found by the secrets test: combined verify paged the hot store's batch
/// records by end seq while the store pages by start seq, so a batch of one
/// event was read again forever (verify spun at 100% CPU). A one-event
/// batch, then verify must finish and find the history intact.
#[tokio::test]
async fn verify_finishes_when_a_batch_holds_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = archived(dir.path(), "one", 1).await;
    let out = verify_within(&data, 60);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["ok"], true, "{v}");
}

/// Runs `verify --json` on `data`; panics (and kills it) when it runs
/// longer than `secs`.
fn verify_within(data: &Path, secs: u64) -> std::process::Output {
    let child = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(data)
        .args(["verify", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out,
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &id.to_string()])
                .status();
            panic!("verify did not finish within {secs} s");
        }
    }
}

/// Found by review: a batch record planted at the highest seq a store
/// holds made combined verify page the same row forever (and grow its
/// problem list until memory ran out). It must finish and locate it.
#[tokio::test]
async fn a_planted_batch_record_at_the_last_seq_is_located_not_looped_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = archived(dir.path(), "s", 3).await;
    let c = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
    c.execute(
        "INSERT INTO archive_batches SELECT stream_id, 9223372036854775807, 9223372036854775807, 1, \
         first_time, last_time, last_hash, 'planted', object_sha256, object_size, raw_size, \
         'planted.json', manifest_sha256, created FROM archive_batches \
         WHERE stream_id = (SELECT id FROM streams WHERE name = 's')",
        [],
    )
    .unwrap();
    drop(c);
    let out = verify_within(&data, 60);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(1), "{v}");
    let found = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["problems"].as_array().unwrap())
        .any(|p| p["key"] == "planted.json");
    assert!(found, "the planted record is located: {v}");
}

/// A data directory under `dir` whose `stream` had `n` events, all archived
/// (and deleted from hot) by `archive run --older-than 0s`.
async fn archived(dir: &Path, stream: &str, n: usize) -> PathBuf {
    let data = dir.join("data");
    let key = create_key(&data, "admin");
    let server = Server::start(&data, &[]).await;
    post(&server, &key, stream, 1, n).await;
    server.terminate();
    let run = trailkeep(&data, &["archive", "run", "--older-than", "0s"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    data
}
