//! Invariant 9 end to end: secrets (API tokens, the signing key, a source's
//! upstream key, the manifest HMAC secret) never appear in logs, error
//! messages or pages, whatever the server is asked, including the failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, create_key, free_port, trailkeep};

#[tokio::test]
async fn no_secret_reaches_a_log_an_error_or_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let hmac = "hmac-secret-5b1f0c7e2a9d4e31";
    let upstream_key = "upstream-key-8c2d6a0f71e94b3a";
    std::fs::write(tmp.path().join("hmac"), hmac).unwrap();
    std::fs::write(tmp.path().join("upstream"), upstream_key).unwrap();
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\nhmac_secret_file = \"{}\"\ninterval = \"1s\"\nolder_than = \"0s\"\n\n\
             [[sources]]\nname = \"up\"\ntype = \"sse\"\nurl = \"http://127.0.0.1:1/v1/events/stream\"\nstream = \"up\"\nallow_private = true\n\
             api_key_file = \"{}\"\nreconnect_initial_ms = 50\nreconnect_max_ms = 100\n",
            tmp.path().join("hmac").display(),
            tmp.path().join("upstream").display()
        ),
    )
    .unwrap();
    let admin = create_key(&dir, "admin");
    let ingest = create_key(&dir, "ingest");
    let secret_of = |t: &str| t.splitn(3, '_').nth(2).unwrap().to_owned();

    let log = tmp.path().join("serve.log");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    // Ready means started: the signing key exists by then.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !c
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // Let the source fail to connect a few times, and the archiver run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
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

    let logs = std::fs::read_to_string(&log).unwrap();
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
    for out in [&cli, &cli_list, &cli_status] {
        everything.push_str(&String::from_utf8_lossy(&out.stdout));
        everything.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    for (what, secret) in [
        ("admin token secret", secret_of(&admin)),
        ("ingest token secret", secret_of(&ingest)),
        ("signing key", signing_secret),
        ("manifest HMAC secret", hmac.to_owned()),
        ("source upstream key", upstream_key.to_owned()),
    ] {
        assert!(secret.len() >= 16, "{what} is a real secret");
        assert!(
            !everything.contains(&secret),
            "{what} leaked:\n{everything}"
        );
    }
}
