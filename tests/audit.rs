//! Self-audit (issue #13): administrative acts are events in `_audit`,
//! chained and verified like any other stream, naming the key id and never
//! the token; and TLS on the listener with a reload on SIGHUP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use trailkeep::store::EventStore;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Server, create_key, trailkeep};
use serde_json::{Value, json};

async fn audit_events(data: &Path) -> Vec<Value> {
    let out = trailkeep(data, &["verify", "--json"]);
    assert!(
        out.status.success(),
        "_audit verifies: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let store = trailkeep::store::sqlite::SqliteStore::open(&data.join("trailkeep.db")).unwrap();
    store
        .read_events("_audit", 1, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// Every administrative act through the API and the CLI lands in `_audit`
/// with its actor; refused authentications are counted; no token appears.
#[tokio::test]
async fn administrative_acts_are_recorded_in_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out.ndjson");
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"{}\"\nmax_age_ms = 20\n",
            out.display()
        ),
    )
    .unwrap();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]).await;
    let admin = create_key(&data, "admin");
    let admin_id = admin[3..19].to_owned();
    let c = reqwest::Client::new();
    let url = &server.url;
    let call = |method: reqwest::Method, path: &str, token: &str| {
        c.request(method, format!("{url}{path}"))
            .bearer_auth(token)
            .send()
    };
    for (m, p) in [
        (reqwest::Method::POST, "/v1/destinations/f/pause"),
        (reqwest::Method::POST, "/v1/destinations/f/resume"),
        (reqwest::Method::POST, "/v1/archive/run"),
        (reqwest::Method::POST, "/v1/verify"),
        (reqwest::Method::POST, "/v1/streams/s/restore?from=1&to=1"),
    ] {
        let r = call(m, p, &admin).await.unwrap();
        assert!(r.status().as_u16() < 500, "{p}: {}", r.status());
    }
    // Refused: a wrong secret for a real id, a made-up token, no token, and
    // a read key asking for an admin act.
    let wrong = format!("{}AAAA{}", &admin[..20], &admin[24..]);
    for t in [wrong.as_str(), "tk_0123456789abcdef_nope"] {
        assert_eq!(
            call(reqwest::Method::GET, "/v1/streams", t)
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let read = create_key(&data, "read");
    assert_eq!(
        call(reqwest::Method::POST, "/v1/archive/run", &read)
            .await
            .unwrap()
            .status(),
        403
    );
    let id = String::from_utf8(trailkeep(&data, &["keys", "list", "--json"]).stdout).unwrap();
    let keys: Value = serde_json::from_str(&id).unwrap();
    let read_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scope"] == "read")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        trailkeep(&data, &["keys", "revoke", &read_id])
            .status
            .success()
    );
    // SIGTERM flushes the refusals counted so far.
    assert_eq!(server.terminate().code(), Some(0));

    let events = audit_events(&data).await;
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&admin[20..]), "no token secret in _audit");
    assert!(!all.contains(&wrong[20..]), "not even a wrong one");
    let loaded = of_type(&events, "config.loaded");
    assert_eq!(loaded.len(), 1, "{all}");
    assert_eq!(loaded[0]["data"]["destinations"][0]["name"], "f");
    assert_eq!(loaded[0]["data"]["actor"]["kind"], "server");
    let created = of_type(&events, "key.created");
    assert_eq!(created.len(), 2, "{all}");
    assert_eq!(created[0]["data"]["key_id"], admin_id.as_str());
    assert_eq!(created[0]["data"]["scope"], "admin");
    assert_eq!(created[0]["data"]["actor"]["kind"], "cli");
    assert_eq!(
        of_type(&events, "key.revoked")[0]["data"]["key_id"],
        read_id.as_str()
    );
    for (t, n) in [
        ("destination.paused", 1),
        ("destination.resumed", 1),
        ("archive.run", 1),
        ("verify.run", 1),
        ("archive.restore", 1),
    ] {
        let found = of_type(&events, t);
        assert_eq!(found.len(), n, "{t}: {all}");
        assert_eq!(
            found[0]["data"]["actor"],
            json!({"kind": "key", "key_id": admin_id}),
            "{t}"
        );
    }
    assert_eq!(of_type(&events, "verify.run")[0]["data"]["ok"], true);
    assert_eq!(of_type(&events, "archive.run")[0]["data"]["ok"], true);
    let refused = of_type(&events, "auth.refused");
    assert_eq!(refused.len(), 1, "{all}");
    let r = &refused[0]["data"];
    assert_eq!(r["unauthenticated"][&admin_id], 1, "{r}");
    assert_eq!(r["unauthenticated"]["0123456789abcdef"], 1, "{r}");
    assert_eq!(r["forbidden"][&read_id], 1, "{r}");
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it.
fn cert(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    common::tls_cert(dir, name, "IP:127.0.0.1")
}

fn client_trusting(cert: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        // A new TLS handshake for every request: a pooled connection would
        // still speak the certificate it was opened with.
        .pool_max_idle_per_host(0)
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap()
}

/// HTTPS only, with the configured pair; SIGHUP loads a new pair, and a
/// broken one is refused while the previous stays in use.
#[tokio::test]
async fn tls_serves_https_only_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (a_crt, a_key, a_ca) = cert(dir.path(), "a");
    let (b_crt, b_key, b_ca) = cert(dir.path(), "b");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&a_crt, &crt).unwrap();
    std::fs::copy(&a_key, &key).unwrap();
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    // On port 0: the port comes from the "serving" line.
    let common::Serving {
        mut child,
        port,
        log,
    } = common::spawn_serving(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn,trailkeep::server=info"),
    );
    let https = format!("https://127.0.0.1:{port}/healthz");
    let trusts_a = client_trusting(&a_ca);
    let trusts_b = client_trusting(&b_ca);
    common::wait_for(Duration::from_secs(20), "an HTTPS answer", async || {
        trusts_a.get(&https).send().await.is_ok()
    })
    .await;
    assert!(
        trusts_b.get(&https).send().await.is_err(),
        "serves a, not b"
    );
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "no plain HTTP"
    );
    let hup = |pid: u32| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    // A broken pair: refused, a stays in use.
    std::fs::write(&key, "not a key").unwrap();
    hup(child.id());
    common::wait_until(
        Duration::from_secs(10),
        "the failed reload to be logged",
        || log.contains("TLS reload failed"),
    )
    .await;
    assert!(
        trusts_a.get(&https).send().await.is_ok(),
        "a stays after a failed reload: {}",
        log.text()
    );
    // b's pair: served after SIGHUP, without a restart.
    std::fs::copy(&b_crt, &crt).unwrap();
    std::fs::copy(&b_key, &key).unwrap();
    hup(child.id());
    common::wait_for(
        Duration::from_secs(10),
        "b to be served after SIGHUP",
        async || trusts_b.get(&https).send().await.is_ok(),
    )
    .await;
    assert!(
        trusts_a.get(&https).send().await.is_err(),
        "a no longer served"
    );
    child.kill().unwrap();
    let _ = child.wait();

    // A key that does not match the certificate: serve refuses to start,
    // naming the keys.
    std::fs::copy(&a_key, &key).unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.tls_cert_file") || err.contains("server.tls_key_file"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

/// kill -9 between recording an act and doing it (the failpoint aborts the
/// process there): a key is never created unrecorded, and a revocation is
/// never recorded before it took effect.
#[tokio::test]
async fn a_crash_never_leaves_a_key_unrecorded_or_a_revocation_untrue() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_key(&data, "admin");
    let keys = |data: &Path| -> Vec<Value> {
        let out = trailkeep(data, &["keys", "list", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = keys(&data);
    let crashed = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["keys", "create", "--scope", "read"])
        .env("TRAILKEEP_TEST_FAILPOINT", "key.create.recorded")
        .output()
        .unwrap();
    assert!(
        !crashed.status.success(),
        "the failpoint aborted the create"
    );
    assert!(crashed.stdout.is_empty(), "no token was handed out");
    assert_eq!(keys(&data), before, "no key was created");
    let events = audit_events(&data).await;
    let created = of_type(&events, "key.created");
    assert_eq!(created.len(), 2, "both creates are recorded: {events:?}");

    // Revocation: the key is revoked before the record is written.
    let id = before[0]["id"].as_str().unwrap().to_owned();
    let crashed = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["keys", "revoke", &id])
        .env("TRAILKEEP_TEST_FAILPOINT", "key.revoke.done")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let after = keys(&data);
    assert!(after[0]["revoked"].is_string(), "revoked: {after:?}");
}

/// Found by review: the refusals flushed to `_audit` at stop raced the
/// checkpointer's last round and could stay unsigned. After a clean stop,
/// `_audit`'s latest checkpoint covers its head.
#[tokio::test]
async fn what_audit_records_at_stop_is_signed_before_the_process_ends() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_key(&data, "admin");
    for _ in 0..3 {
        let server = Server::start(&data, &[]).await;
        let c = reqwest::Client::new();
        for _ in 0..3 {
            let r = c
                .get(format!("{}/v1/streams", server.url))
                .bearer_auth("tk_nope_nope")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
        assert_eq!(server.terminate().code(), Some(0));
        let c = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
        let (head, signed): (i64, i64) = c
            .query_row(
                "SELECT s.head_seq, COALESCE((SELECT MAX(size) FROM checkpoints k WHERE k.stream_id = s.id), 0) \
                 FROM streams s WHERE s.name = '_audit'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(signed, head, "_audit's head {head} is signed at stop");
    }
}
