//! Invariant 9 end to end: secrets (API tokens, the signing key, a source's
//! upstream key, the manifest HMAC secret, a destination's signing secret
//! and URL token, the TLS key) never appear in logs, error messages, pages,
//! metrics, `--json` outputs or the `_audit` stream, whatever the server is
//! asked, including the failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, create_key, trailkeep};

#[tokio::test]
async fn no_secret_reaches_a_log_an_error_or_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let hmac = "hmac-secret-5b1f0c7e2a9d4e31";
    let upstream_key = "upstream-key-8c2d6a0f71e94b3a";
    let whsec = "whsec_ZGVzdC1zaWduaW5nLXNlY3JldC0wZDRjN2IxOQ==";
    let url_token = "url-token-6e1b9a4c07d2f358";
    std::fs::write(tmp.path().join("hmac"), hmac).unwrap();
    std::fs::write(tmp.path().join("upstream"), upstream_key).unwrap();
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\nhmac_secret_file = \"{}\"\ninterval = \"1s\"\nolder_than = \"0s\"\n\n\
             [[sources]]\nname = \"up\"\ntype = \"sse\"\nurl = \"http://127.0.0.1:1/v1/events/stream\"\nstream = \"up\"\nallow_private = true\n\
             api_key_file = \"{}\"\nreconnect_initial_ms = 50\nreconnect_max_ms = 100\n\n\
             [[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://user:{url_token}@127.0.0.1:1/hook?token={url_token}\"\n\
             secret_env = \"TK_TEST_WHSEC\"\nallow_private = true\nmax_age_ms = 50\nbackoff_max_ms = 100\n",
            tmp.path().join("hmac").display(),
            tmp.path().join("upstream").display(),
        ),
    )
    .unwrap();
    let admin = create_key(&dir, "admin");
    let ingest = create_key(&dir, "ingest");
    let secret_of = |t: &str| t.splitn(3, '_').nth(2).unwrap().to_owned();

    // Port 0, learnt from the "serving" line; stderr is collected (every
    // log line is searched for secrets below).
    let common::Serving {
        mut child,
        port,
        log,
    } = common::spawn_serving(
        Command::new(BIN)
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ])
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "debug")
            .env("TK_TEST_WHSEC", whsec),
    );
    let url = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    // Ready means started: the signing key exists by then.
    common::wait_for(Duration::from_secs(20), "serve to be ready", async || {
        c.get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let signing = std::fs::read_to_string(dir.join("signing.key")).unwrap();
    // PRIVATE+KEY+name+keyid+base64: base64 may itself contain '+'.
    let signing_secret = signing
        .trim()
        .strip_prefix("PRIVATE+KEY+")
        .and_then(|r| r.splitn(3, '+').nth(2))
        .unwrap()
        .to_owned();

    let mut pages = String::new();
    let mut get = async |req: reqwest::RequestBuilder| {
        let r = req.send().await.unwrap();
        pages.push_str(&r.text().await.unwrap());
    };
    let ev = serde_json::json!([{"type": "a.b", "data": {"k": "v"}}]);
    get(c
        .post(format!("{url}/v1/streams/s/events"))
        .bearer_auth(&ingest)
        .json(&ev))
    .await;
    // Failures: a forged token built from a real one, a wrong scope, bad input.
    let forged = format!("{}x", ingest);
    get(c
        .post(format!("{url}/v1/streams/s/events"))
        .bearer_auth(&forged)
        .json(&ev))
    .await;
    get(c.get(format!("{url}/v1/streams")).bearer_auth(&ingest)).await;
    get(c
        .post(format!("{url}/v1/streams/s/events"))
        .bearer_auth(&ingest)
        .body("{not json"))
    .await;
    get(c.get(format!("{url}/v1/sources")).bearer_auth(&admin)).await;
    get(c
        .get(format!("{url}/v1/sources/rejected"))
        .bearer_auth(&admin))
    .await;
    get(c
        .post(format!("{url}/v1/archive/run?older_than=0s"))
        .bearer_auth(&admin))
    .await;
    get(c.get(format!("{url}/v1/archives")).bearer_auth(&admin)).await;
    get(c.post(format!("{url}/v1/verify")).bearer_auth(&admin)).await;
    get(c.get(format!("{url}/metrics"))).await;
    // Let the source and the destination fail a few times, and the
    // archiver run on its interval; then read what admins see of those
    // failures.
    common::wait_for(
        Duration::from_secs(20),
        "the source to fail twice, the destination to record its error and the archiver to run",
        async || {
            let dests: serde_json::Value =
                common::get_json(&format!("{url}/v1/destinations"), &admin).await;
            log.text().matches("event source failed").count() >= 2
                && dests["destinations"][0]["last_error"].is_string()
                && log.contains("archive run finished")
        },
    )
    .await;
    get(c.get(format!("{url}/v1/destinations")).bearer_auth(&admin)).await;
    get(c.get(format!("{url}/v1/sources")).bearer_auth(&admin)).await;
    get(c
        .get(format!("{url}/v1/destinations/hook/dead-letters"))
        .bearer_auth(&admin))
    .await;
    get(c.get(format!("{url}/metrics"))).await;
    get(c.get(format!("{url}/v1/openapi.json"))).await;
    get(c
        .get(format!("{url}/v1/streams/_audit/events"))
        .bearer_auth(&admin))
    .await;
    let revoke_id = ingest.split('_').nth(1).unwrap();
    let cli = trailkeep(&dir, &["keys", "revoke", revoke_id]);
    let cli_list = trailkeep(&dir, &["keys", "list", "--json"]);
    let cli_status = trailkeep(
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "sources",
            "status",
            "--json",
        ],
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    // After the stop: the refusals flushed at shutdown are in `_audit`,
    // and the CLI's JSON reports.
    let cli_audit = trailkeep(&dir, &["verify", "--json"]);
    let cli_dests = trailkeep(
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "destinations",
            "status",
            "--json",
        ],
    );
    let cli_letters = trailkeep(
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "destinations",
            "dead-letters",
            "--all",
            "--json",
        ],
    );
    let cli_batches = trailkeep(&dir, &["archive", "list", "--json"]);
    // Every stored event, hot and archived (`_audit` among them), and
    // every archive object, manifest and index.
    let mut stored = {
        let c = rusqlite::Connection::open(dir.join("trailkeep.db")).unwrap();
        let mut q = c.prepare("SELECT body FROM events").unwrap();
        q.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut todo = vec![dir.join("archive")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            if p.extension().is_some_and(|x| x == "gz") {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&bytes[..]),
                    &mut text,
                )
                .unwrap();
                stored.push_str(&text);
            } else {
                stored.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    assert!(
        stored.contains("\"auth.refused\"") && stored.contains("\"archive.run\""),
        "_audit holds the refusals and the runs: {stored}"
    );
    assert!(
        pages.contains("\"last_error_detail\"") && pages.contains("\"name\":\"hook\""),
        "admins saw the destination's failures: {pages}"
    );

    let logs = log.text();
    assert!(
        logs.contains("DEBUG") || logs.contains("INFO"),
        "the log was captured: {logs}"
    );
    assert!(
        logs.contains("event source failed"),
        "the source's failures were logged: {logs}"
    );
    assert!(
        pages.contains("\"manifest_key\":\"s/manifests/"),
        "the archive ran (HMAC-signed manifests): {pages}"
    );
    let mut everything = logs.clone();
    everything.push_str(&pages);
    everything.push_str(&stored);
    for out in [
        &cli,
        &cli_list,
        &cli_status,
        &cli_audit,
        &cli_dests,
        &cli_letters,
        &cli_batches,
    ] {
        everything.push_str(&String::from_utf8_lossy(&out.stdout));
        everything.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    for (what, secret) in [
        ("admin token secret", secret_of(&admin)),
        ("ingest token secret", secret_of(&ingest)),
        ("signing key", signing_secret),
        ("manifest HMAC secret", hmac.to_owned()),
        ("source upstream key", upstream_key.to_owned()),
        (
            "destination signing secret",
            whsec["whsec_".len()..].to_owned(),
        ),
        ("destination URL token", url_token.to_owned()),
    ] {
        assert!(secret.len() >= 16, "{what} is a real secret");
        assert!(
            !everything.contains(&secret),
            "{what} leaked:\n{everything}"
        );
    }
}

/// A TLS key file that does not parse: serve refuses to start, naming the
/// setting, without echoing the key material.
#[test]
fn a_bad_tls_key_is_named_not_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let material = "c2VjcmV0LXRscy1rZXktbWF0ZXJpYWwtOWYzYTFiN2M";
    let key = tmp.path().join("key.pem");
    let cert = tmp.path().join("cert.pem");
    std::fs::write(
        &key,
        format!("-----BEGIN PRIVATE KEY-----\n{material}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    std::fs::write(
        &cert,
        format!("-----BEGIN CERTIFICATE-----\n{material}\n-----END CERTIFICATE-----\n"),
    )
    .unwrap();
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let dir = tmp.path().join("data");
    create_key(&dir, "admin");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--config", cfg.to_str().unwrap()])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("tls_"), "names the setting: {text}");
    assert!(!text.contains(material), "key material leaked: {text}");
    assert!(!text.contains("c2VjcmV0"), "key material leaked: {text}");
}
