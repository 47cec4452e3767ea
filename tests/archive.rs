//! The cold archive end to end, through the real binary: archive, verify
//! (hot + cold and offline from the bucket), restore, the API, and crash
//! safety with the archiver killed after each step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BIN, Server, create_key, trailkeep};
use serde_json::{Value, json};

/// Starts `serve` on `dir`, posts `n` events to each stream, stops it.
async fn seed(dir: &Path, streams: &[(&str, usize)], extra: &[&str]) {
    let server = Server::start(dir, extra).await;
    let key = if extra.is_empty() {
        create_key(dir, "ingest")
    } else {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .args(["keys", "create", "--scope", "ingest"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let c = reqwest::Client::new();
    for (stream, n) in streams {
        let mut i = 0;
        while i < *n {
            let batch: Vec<Value> = (i..(i + 1000).min(*n))
                .map(|j| json!({"id": format!("{stream}-{j}"), "type": "grant.created", "actor": {"id": "u1"}, "data": {"j": j}}))
                .collect();
            let r = c
                .post(format!("{}/v1/streams/{stream}/events", server.url))
                .bearer_auth(&key)
                .json(&batch)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            i += 1000;
        }
    }
    assert!(server.terminate().success());
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `archive run --older-than 0s --json` with the config file `cfg`.
fn archive_now(dir: &Path, cfg: &str) -> std::process::Output {
    trailkeep(
        dir,
        &[
            "--config",
            cfg,
            "archive",
            "run",
            "--older-than",
            "0s",
            "--json",
        ],
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Files ending in `suffix` in the producers' stream folders (not the
/// log's own stream `_trailkeep`, nor the `_index` folder).
fn count(dir: &Path, suffix: &str) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| {
            p.strip_prefix(dir)
                .is_ok_and(|r| !r.to_string_lossy().starts_with('_'))
        })
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .count()
}

/// A run report with the log's own stream (`_trailkeep`: the checkpoints
/// and indexes it records) left out: (events archived, hot deleted,
/// batches) of the producers' streams.
fn user_run(r: &Value) -> (u64, u64, usize) {
    let (mut own, mut events, mut batches) = (0, 0, 0);
    for b in r["batches"].as_array().unwrap() {
        if b["stream"].as_str().unwrap().starts_with('_') {
            own += b["count"].as_u64().unwrap();
        } else {
            events += b["count"].as_u64().unwrap();
            batches += 1;
        }
    }
    (events, r["deleted"].as_u64().unwrap() - own, batches)
}

fn public_key(dir: &Path) -> PathBuf {
    let out = trailkeep(dir, &["keys", "public"]);
    assert!(out.status.success());
    let p = dir.join("verifier.pub");
    std::fs::write(&p, &out.stdout).unwrap();
    p
}

fn offline_verify(dir: &Path, archive: &Path, pubkey: &Path) -> (i32, Value) {
    let url = format!("file://{}", archive.display());
    let out = trailkeep(
        dir,
        &[
            "verify",
            "--archive",
            &url,
            "--public-key",
            pubkey.to_str().unwrap(),
            "--json",
        ],
    );
    (out.status.code().unwrap_or(-1), json_of(&out))
}

fn hot_info(dir: &Path, stream: &str) -> (Option<u64>, Option<u64>, u64) {
    let conn = rusqlite::Connection::open(dir.join("trailkeep.db")).unwrap();
    conn.query_row(
        "SELECT (SELECT MIN(seq) FROM events e WHERE e.stream_id = s.id), \
         (SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = s.id), \
         (SELECT COUNT(*) FROM events e WHERE e.stream_id = s.id) FROM streams s WHERE s.name = ?1",
        [stream],
        |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?.map(|v| v as u64),
                r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                r.get::<_, i64>(2)? as u64,
            ))
        },
    )
    .unwrap()
}

#[tokio::test]
async fn archive_verify_restore_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(&dir, &[("orders", 2500), ("logins", 40)], &[]).await;
    std::fs::write(
        tmp.path().join("cfg.toml"),
        "[archive]\nsegment_events = 1000\n",
    )
    .unwrap();
    let cfg = tmp.path().join("cfg.toml");
    let cfg = cfg.to_str().unwrap();

    // Nothing is old enough under the default 90 days.
    let out = trailkeep(&dir, &["--config", cfg, "archive", "run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(user_run(&json_of(&out)).0, 0);

    let out = archive_now(&dir, cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_of(&out);
    assert_eq!(user_run(&r), (2540, 2540, 4), "{r:#}");
    let archive = dir.join("archive");
    assert_eq!(count(&archive, ".ndjson.gz"), 4);
    assert_eq!(count(&archive, ".json"), 4);
    assert_eq!(hot_info(&dir, "orders"), (None, Some(2500), 0));

    // verify covers hot and cold; offline needs only the bucket and the key.
    let (code, v) = common::verify_json(&dir);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(common::user_events(&v["archive"]), 2540, "{v:#}");
    let pubkey = public_key(&dir);
    let (code, v) = offline_verify(&dir, &archive, &pubkey);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(common::user_events(&v), 2540, "{v:#}");
    assert!(
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["first_seq"] == 1)
    );

    // More events after the archived ones: the hot part links to the cold part.
    seed(&dir, &[("orders", 10)], &[]).await; // ids repeat? no: orders-0..9 are archived, so these are new rows
    let (code, v) = common::verify_json(&dir);
    assert_eq!(code, 0, "{v:#}");
    // Issue #15: counts said the hot events only. Per stream and in all,
    // hot (`events`), archived and their total.
    let orders = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "orders")
        .unwrap();
    assert_eq!(
        (
            orders["events"].as_u64(),
            orders["events_archived"].as_u64(),
            orders["events_total"].as_u64()
        ),
        (Some(10), Some(2500), Some(2510)),
        "{orders:#}"
    );
    assert_eq!(
        v["events_archived"], v["archive"]["summary"]["events"],
        "{v:#}"
    );
    assert_eq!(
        v["events_total"].as_u64(),
        Some(v["events"].as_u64().unwrap() + v["events_archived"].as_u64().unwrap())
    );
    let out = trailkeep(&dir, &["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("valid stream=orders events=10 archived=2500 ")),
        "{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    let total = v["events_total"].as_u64().unwrap();
    assert!(
        last.contains(&format!(
            "{total} events ({} hot, {} archived)",
            v["events"], v["events_archived"]
        )),
        "{last}"
    );

    // Restore a range across two objects; it is marked, verified, and never archived again.
    let out = trailkeep(
        &dir,
        &[
            "--config", cfg, "restore", "--stream", "orders", "--from", "990", "--to", "1010",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rr = json_of(&out);
    assert_eq!(
        (rr["restored"].as_u64(), rr["objects"].as_u64()),
        (Some(21), Some(2)),
        "{rr:#}"
    );
    let conn = rusqlite::Connection::open(dir.join("trailkeep.db")).unwrap();
    let marked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE restored IS NOT NULL AND seq BETWEEN 990 AND 1010",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(marked, 21);
    let (code, v) = common::verify_json(&dir);
    assert_eq!(code, 0, "restored rows verify: {v:#}");
    let out = archive_now(&dir, cfg);
    assert!(out.status.success());
    let again = json_of(&out);
    let again_user: Vec<&Value> = again["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !b["stream"].as_str().unwrap().starts_with('_'))
        .collect();
    assert_eq!(again_user.len(), 1, "only the 10 new events: {again:#}");
    assert_eq!(again_user[0]["start_seq"], 2501);
    assert_eq!(count(&archive, ".ndjson.gz"), 5, "no object written twice");
    let listed = json_of(&trailkeep(&dir, &["archive", "list", "--json"]));
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| !b["stream"].as_str().unwrap().starts_with('_'))
            .count(),
        5,
        "{listed:#}"
    );
    let logins = json_of(&trailkeep(
        &dir,
        &["archive", "list", "--stream", "logins", "--json"],
    ));
    assert_eq!(logins.as_array().unwrap().len(), 1);
    let (code, v) = offline_verify(&dir, &archive, &pubkey);
    assert_eq!(code, 0, "{v:#}");
    let user_events: u64 = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["stream"].as_str().unwrap().starts_with('_'))
        .map(|s| s["events"].as_u64().unwrap())
        .sum();
    assert_eq!(user_events, 2550, "{v:#}");

    // A range that is not archived is refused, naming it.
    let out = trailkeep(
        &dir,
        &[
            "--config", cfg, "restore", "--stream", "orders", "--from", "2000", "--to", "9999",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not all archived"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A flipped byte in an object on disk: offline verify exits 1 and names the key.
    let victim = files_under(&archive)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("orders/events"))
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&victim, bytes).unwrap();
    let (code, v) = offline_verify(&dir, &archive, &pubkey);
    assert_eq!(code, 1);
    let rel = victim
        .strip_prefix(&archive)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["key"] == rel.as_str() && p["kind"] == "object_sha256_mismatch"),
        "{v:#}"
    );
    let text = trailkeep(
        &dir,
        &[
            "verify",
            "--archive",
            &format!("file://{}", archive.display()),
            "--public-key",
            pubkey.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!("INVALID object {rel}")),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().starts_with("FAILED archive"),
        "{stdout}"
    );
    let (code, _) = common::verify_json(&dir);
    assert_eq!(code, 1, "the combined verify sees the archive too");
}

#[tokio::test]
async fn archive_api_lists_runs_and_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(&dir, &[("s", 300)], &[]).await;
    let server = Server::start(&dir, &[]).await;
    let admin = create_key(&dir, "admin");
    let reader = create_key(&dir, "read");
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/v1/archive/run?older_than=0s", server.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{}/v1/archive/run?older_than=soon", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r: Value = c
        .post(format!("{}/v1/archive/run?older_than=0s", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user_run(&r).0, 300, "{r:#}");
    let list: Value =
        common::get_json(&format!("{}/v1/archives?stream=s", server.url), &admin).await;
    let b = &list["batches"][0];
    assert_eq!(
        (
            b["start_seq"].as_u64(),
            b["end_seq"].as_u64(),
            b["count"].as_u64()
        ),
        (Some(1), Some(300), Some(300))
    );
    assert_eq!(b["manifest_sha256"].as_str().unwrap().len(), 64);
    let streams: Value = common::get_json(&format!("{}/v1/streams", server.url), &admin).await;
    let s = streams.as_array().map_or(&streams["streams"][0], |a| &a[0]);
    assert_eq!(s["archived_seq"], 300, "{streams:#}");
    assert_eq!(s["oldest_hot_seq"], Value::Null);
    let r: Value = c
        .post(format!("{}/v1/streams/s/restore?from=10&to=19", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["restored"], 10, "{r:#}");
    // Seqs 1-9 are still archived: a read from 1 says so (it used to skip
    // to seq 10 in silence); the restored range reads from 10 and ends
    // where it ends.
    let read = |from: u64| {
        c.get(format!(
            "{}/v1/streams/s/events?from_seq={from}&limit=100",
            server.url
        ))
        .bearer_auth(&admin)
        .send()
    };
    let r = read(1).await.unwrap();
    assert_eq!(r.status(), 410);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (
            e["error"]["archived"]["to_seq"].as_u64(),
            e["error"]["archived"]["next_hot_seq"].as_u64()
        ),
        (Some(9), Some(10)),
        "{e:#}"
    );
    let ev = read(10).await.unwrap().text().await.unwrap();
    assert_eq!(ev.lines().count(), 10);
    assert!(ev.lines().next().unwrap().contains("\"seq\":10"));
    assert!(server.terminate().success());
}

/// Issue #15: a read from an archived seq (moved to the cold archive and
/// deleted from hot) answered an empty 200, so a script paging the stream
/// believed it was empty. It is 410 `archived` with the range, where the
/// hot store goes on, the archive object holding it, and how to restore
/// it; a read key bound to the stream gets the same.
#[tokio::test]
async fn reading_archived_seqs_answers_410_with_the_range_and_how_to_get_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(&dir, &[("s", 5)], &[]).await;
    let server = Server::start(&dir, &[]).await;
    let admin = create_key(&dir, "admin");
    let ingest = create_key(&dir, "ingest");
    let out = trailkeep(
        &dir,
        &["keys", "create", "--scope", "read", "--stream", "s"],
    );
    let reader = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/v1/archive/run?older_than=0s", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let get = |from: u64, key: &str| {
        c.get(format!(
            "{}/v1/streams/s/events?from_seq={from}",
            server.url
        ))
        .bearer_auth(key)
        .send()
    };
    let r = get(2, &reader).await.unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "archived");
    assert_eq!(e["error"]["field"], "from_seq");
    let a = &e["error"]["archived"];
    assert_eq!(
        (
            a["stream"].as_str(),
            a["from_seq"].as_u64(),
            a["to_seq"].as_u64(),
            a["archived_seq"].as_u64(),
            a["head_seq"].as_u64()
        ),
        (Some("s"), Some(2), Some(5), Some(5), Some(5)),
        "{e:#}"
    );
    assert_eq!(a["oldest_hot_seq"], Value::Null);
    assert_eq!(a["next_hot_seq"], Value::Null);
    assert_eq!(
        a["restore_command"],
        "trailkeep restore --stream s --from 2 --to 5"
    );
    assert_eq!(
        a["restore_request"],
        "POST /v1/streams/s/restore?from=2&to=5"
    );
    let key = a["objects"][0]["object_key"].as_str().unwrap();
    assert!(
        std::fs::metadata(dir.join("archive").join(key)).is_ok(),
        "the object named is in the archive: {key}"
    );
    let m = e["error"]["message"].as_str().unwrap();
    for needle in [
        "seqs 2-5",
        "trailkeep restore --stream s --from 2 --to 5",
        "/restore?from=2&to=5",
    ] {
        assert!(m.contains(needle), "{needle}: {m}");
    }
    // New events go on after the archived ones: a read from 1 (a script
    // paging from the start) is told where the hot store goes on.
    let r = c
        .post(format!("{}/v1/streams/s/events", server.url))
        .bearer_auth(&ingest)
        .json(&json!([{"type": "a"}, {"type": "b"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = get(1, &reader).await.unwrap().json().await.unwrap();
    let a = &e["error"]["archived"];
    assert_eq!(
        (
            a["from_seq"].as_u64(),
            a["to_seq"].as_u64(),
            a["next_hot_seq"].as_u64(),
            a["oldest_hot_seq"].as_u64()
        ),
        (Some(1), Some(5), Some(6), Some(6)),
        "{e:#}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("from_seq=6")
    );
    // From a hot seq, and past the head: as before.
    let r = get(6, &reader).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().lines().count(), 2);
    let r = get(8, &reader).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, String::new())
    );
    // The documented restore brings them back.
    let r = c
        .post(format!("{}/v1/streams/s/restore?from=2&to=5", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get(2, &reader).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6, 7]);
    assert!(server.terminate().success());
}

/// `serve` runs the archiver on its interval by itself.
#[tokio::test]
async fn serve_archives_on_its_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(&dir, &[("s", 500)], &[]).await;
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(&cfg, "[archive]\ninterval = \"1s\"\nolder_than = \"0s\"\n").unwrap();
    let server = Server::start(&dir, &["--config", cfg.to_str().unwrap()]).await;
    let admin = create_key(&dir, "admin");
    let batches = common::poll(
        std::time::Duration::from_secs(20),
        "the interval's archive run to record a batch",
        async || {
            let b = common::get_json(&format!("{}/v1/archives?stream=s", server.url), &admin).await;
            b["batches"]
                .as_array()
                .is_some_and(|b| !b.is_empty())
                .then_some(b)
        },
    )
    .await;
    assert_eq!(batches["batches"][0]["end_seq"], 500, "{batches:#}");
    assert!(server.terminate().success());
    assert_eq!(hot_info(&dir, "s"), (None, Some(500), 0));
}

/// Runs `archive run --older-than 0s` with the failpoint set: the process
/// aborts there, as `kill -9` would.
fn run_until(dir: &Path, cfg: &str, failpoint: &str) -> std::process::Output {
    Command::new(BIN)
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--config",
            cfg,
            "archive",
            "run",
            "--older-than",
            "0s",
            "--json",
        ])
        .env("TRAILKEEP_TEST_FAILPOINT", failpoint)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_crash_after_any_archive_step_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let seeded = tmp.path().join("seeded");
    seed(&seeded, &[("s", 12_000)], &[]).await;
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        "[archive]\nsegment_events = 3000\nlease_ttl_ms = 1500\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    for point in [
        "archive.after_object",
        "archive.after_manifest",
        "archive.after_checkpoint",
        "archive.after_record",
        "archive.after_delete_chunk",
    ] {
        let dir = tmp.path().join(point);
        copy_dir(&seeded, &dir);
        let crashed = run_until(&dir, cfg, point);
        assert!(
            !crashed.status.success(),
            "{point}: the failpoint must stop the run"
        );
        assert!(String::from_utf8_lossy(&crashed.stderr).contains(point));
        // Invariant 5: nothing left hot before its batch was recorded.
        let (oldest, archived, hot) = hot_info(&dir, "s");
        match point {
            "archive.after_delete_chunk" => {
                assert!(hot < 12_000 && hot > 0, "{point}: half deleted ({hot})")
            }
            "archive.after_record" => assert_eq!(
                (oldest, archived, hot),
                (Some(1), Some(3000), 12_000),
                "{point}"
            ),
            _ => assert_eq!((oldest, archived, hot), (Some(1), None, 12_000), "{point}"),
        }
        // Run again once the crashed run's lease has expired: complete, no
        // duplicate, nothing overwritten or missing. (A shorter lease lost
        // its renewal to a busy SQLite writer on a loaded 2-core CI run.)
        // Wall-clock on purpose: the lease's TTL runs on the clock.
        std::thread::sleep(std::time::Duration::from_millis(1600));
        let out = archive_now(&dir, cfg);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = json_of(&out);
        if point != "archive.after_delete_chunk" && point != "archive.after_record" {
            assert!(
                r["resumed_objects"].as_u64().unwrap() >= 1,
                "{point}: the crashed run's object was reused: {r:#}"
            );
        }
        let archive = dir.join("archive");
        assert_eq!(count(&archive, ".ndjson.gz"), 4, "{point}");
        assert_eq!(count(&archive, ".json"), 4, "{point}");
        assert_eq!(hot_info(&dir, "s"), (None, Some(12_000), 0), "{point}");
        let pubkey = public_key(&dir);
        let (code, v) = offline_verify(&dir, &archive, &pubkey);
        assert_eq!(code, 0, "{point}: {v:#}");
        assert_eq!(
            common::user_events(&v),
            12_000,
            "{point}: hot ∪ cold holds every event"
        );
    }
}

/// Several processes share one PostgreSQL store and one archive: the
/// archiver lease lets one archive at a time, and a holder killed mid-run
/// blocks the others only until its lease expires.
#[tokio::test]
async fn on_postgres_a_killed_archiver_holds_others_off_only_until_its_lease_expires() {
    let Some(pg) = common::fresh_postgres("tk_archive").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    seed(&data, &[("s", 5000)], &["--store", &pg.url]).await;
    let archive = tmp.path().join("shared-archive");
    let archive_url = format!("file://{}", archive.display());
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        "[archive]\nsegment_events = 1000\nlease_ttl_ms = 1500\n",
    )
    .unwrap();
    let run = |failpoint: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args([
            "--data-dir",
            data.to_str().unwrap(),
            "--store",
            &pg.url,
            "--archive",
            &archive_url,
        ])
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "archive",
            "run",
            "--older-than",
            "0s",
            "--json",
        ])
        .env("RUST_LOG", "warn");
        if let Some(f) = failpoint {
            c.env("TRAILKEEP_TEST_FAILPOINT", f);
        }
        c.output().unwrap()
    };
    let crashed = run(Some("archive.after_record"));
    assert!(!crashed.status.success());
    let blocked = run(None);
    assert_eq!(blocked.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&blocked.stderr).contains("another archiver is running"),
        "{}",
        String::from_utf8_lossy(&blocked.stderr)
    );
    // Wall-clock on purpose: waiting past the killed holder's lease TTL
    // (1.5 s) is what this test is about.
    std::thread::sleep(std::time::Duration::from_millis(1700));
    let done = run(None);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let r = json_of(&done);
    assert_eq!((user_run(&r).0, user_run(&r).1), (4000, 5000), "{r:#}");
    assert_eq!(count(&archive, ".ndjson.gz"), 5);
    verify_on_postgres(&data, &pg.url, &archive, 5000);
}

/// Two `serve` nodes on one PostgreSQL: the node holding the archiver lease
/// dies mid-run (after recording its first batch, as `kill -9` would stop
/// it); the other node's worker takes the lease once it expires and
/// finishes the archive, with nothing lost or duplicated.
#[tokio::test]
async fn on_postgres_another_serve_node_finishes_the_archive_of_a_killed_one() {
    let Some(pg) = common::fresh_postgres("tk_archive_nodes").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    seed(&data, &[("s", 4000)], &["--store", &pg.url]).await;
    let archive = tmp.path().join("shared-archive");
    let archive_url = format!("file://{}", archive.display());
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        "[archive]\ninterval = \"1s\"\nolder_than = \"0s\"\nsegment_events = 1000\nlease_ttl_ms = 2000\n",
    )
    .unwrap();
    let node = |failpoint: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args([
            "--data-dir",
            data.to_str().unwrap(),
            "--store",
            &pg.url,
            "--archive",
            &archive_url,
        ])
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        if let Some(f) = failpoint {
            c.env("TRAILKEEP_TEST_FAILPOINT", f);
        }
        c.spawn().unwrap()
    };
    // Node A dies at the failpoint before anyone talks to it: any port.
    let mut a = node(Some("archive.after_record"));
    let mut status = None;
    common::wait_until(
        std::time::Duration::from_secs(30),
        "node A to reach the failpoint",
        || {
            status = a.try_wait().unwrap();
            status.is_some()
        },
    )
    .await;
    let status = status.unwrap();
    assert!(!status.success(), "node A died mid-run");
    assert_eq!(
        count(&archive, ".ndjson.gz"),
        1,
        "A archived one batch before dying"
    );
    let b = Server::start(
        &data,
        &[
            "--store",
            &pg.url,
            "--archive",
            &archive_url,
            "--config",
            cfg.to_str().unwrap(),
        ],
    )
    .await;
    common::wait_until(
        std::time::Duration::from_secs(30),
        "node B to finish the archive",
        || count(&archive, ".json") == 4,
    )
    .await;
    assert!(b.terminate().success());
    assert_eq!(count(&archive, ".ndjson.gz"), 4);
    let v = verify_on_postgres(&data, &pg.url, &archive, 4000);
    assert_eq!(v["streams"][0]["events"], 0, "nothing left hot: {v:#}");
}

/// Offline verify of `archive` with the key from the PostgreSQL deployment
/// (must hold `events`), then the combined hot + cold verify; returns the
/// latter's report.
fn verify_on_postgres(data: &Path, pg_url: &str, archive: &Path, events: u64) -> Value {
    let base = ["--data-dir", data.to_str().unwrap(), "--store", pg_url];
    let out = Command::new(BIN)
        .args(base)
        .args(["keys", "public"])
        .output()
        .unwrap();
    let pubkey = data.with_extension("pub");
    std::fs::write(&pubkey, &out.stdout).unwrap();
    let (code, v) = offline_verify(data, archive, &pubkey);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(common::user_events(&v), events, "{v:#}");
    let archive_url = format!("file://{}", archive.display());
    let out = Command::new(BIN)
        .args(base)
        .args(["--archive", &archive_url, "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
