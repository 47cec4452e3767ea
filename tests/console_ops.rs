//! The console's operations pages over plain HTTP (`/ui/archive`,
//! `/ui/destinations`, `/ui/sources`, `/ui/verify`), against the real
//! binary: a read key sees no admin control and is refused when it posts
//! one anyway; a stream-bound key sees nothing of another stream; an admin
//! runs the archive and sees the batch, restores a range, retries a dead
//! letter, and verifies a tampered store and sees the problem located.
//! The real-browser tests are in tests/ui.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use common::console::{client, hidden, sign_in};
use common::{Server, create_key, get_json, poll, trailkeep, wait_until};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN};
use serde_json::Value;

/// A signed-in console session: its cookie and CSRF token.
struct Session {
    url: String,
    cookie: String,
    csrf: String,
}

impl Session {
    async fn open(url: &str, token: &str) -> Self {
        let cookie = sign_in(url, token).await;
        let mut s = Self {
            url: url.to_owned(),
            cookie,
            csrf: String::new(),
        };
        let (_, page) = s.get("/ui/").await;
        s.csrf = hidden(&page, "csrf");
        s
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let res = client()
            .get(format!("{}{path}", self.url))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// Posts a form as the page would (this origin, the session's token).
    async fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        let res = client()
            .post(format!("{}{path}", self.url))
            .header(COOKIE, &self.cookie)
            .header(ORIGIN, &self.url)
            .form(&form)
            .send()
            .await
            .unwrap();
        let location = res
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        (res.status(), res.text().await.unwrap(), location)
    }
}

fn bound_key(dir: &Path, scope: &str, stream: &str) -> String {
    let out = trailkeep(
        dir,
        &["keys", "create", "--scope", scope, "--stream", stream],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn post_events(url: &str, token: &str, stream: &str, n: usize) {
    let body: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"id": format!("{stream}-{i}"), "type": "grant.created", "time": "2026-12-01T00:00:00Z", "data": {}}))
        .collect();
    let res = client()
        .post(format!("{url}/v1/streams/{stream}/events"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

/// A webhook receiver: answers the scripted statuses first, then 200;
/// counts the events it accepted.
#[derive(Default)]
struct Receiver {
    accepted: Mutex<usize>,
    script: Mutex<VecDeque<u16>>,
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> axum::http::StatusCode {
    if let Some(s) = r.script.lock().unwrap().pop_front() {
        return axum::http::StatusCode::from_u16(s).unwrap();
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    *r.accepted.lock().unwrap() += v["data"]["events"].as_array().unwrap().len();
    axum::http::StatusCode::OK
}

async fn receiver() -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook"), r)
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret_env = \"TK_TEST_WHSEC\"\nallow_private = true\nmax_age_ms = 50\nbackoff_max_ms = 200\n{extra}\n"
    )
}

async fn start(dir: &Path, cfg: &str) -> Server {
    let path = dir.join("cfg.toml");
    std::fs::write(&path, cfg).unwrap();
    Server::start_with_env(
        &dir.join("data"),
        &["--config", path.to_str().unwrap()],
        &[("TK_TEST_WHSEC", SECRET)],
    )
    .await
}

/// A destination `hook` whose receiver refused the first batch of stream
/// `s` (seqs 1-50): one open dead letter.
async fn with_dead_letter(tmp: &Path) -> (Server, Arc<Receiver>, String) {
    let (url, rx) = receiver().await;
    rx.script.lock().unwrap().push_back(400);
    let data = tmp.join("data");
    let admin = create_key(&data, "admin");
    let server = start(tmp, &webhook("hook", &url, "max_events = 50")).await;
    post_events(&server.url, &admin, "s", 100).await;
    wait_until(
        Duration::from_secs(20),
        "the second batch delivered",
        || *rx.accepted.lock().unwrap() == 50,
    )
    .await;
    (server, rx, admin)
}

fn audit_actions(data: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
    let mut q = conn
        .prepare("SELECT e.body FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = '_audit' ORDER BY e.seq")
        .unwrap();
    q.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|b| {
            let v: Value = serde_json::from_str(&b.unwrap()).unwrap();
            v["type"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_read_key_sees_no_operations_control_and_is_refused_posting_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, rx, admin) = with_dead_letter(tmp.path()).await;
    let data = tmp.path().join("data");
    let read = create_key(&data, "read");
    let admin = Session::open(&server.url, &admin).await;
    let read = Session::open(&server.url, &read).await;

    // The admin sees every control.
    let (_, page) = admin.get("/ui/archive").await;
    assert!(
        page.contains("Run archive now") && page.contains("Restore a range"),
        "{page}"
    );
    let (status, page) = admin.get("/ui/destinations/hook").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(">Retry<") && page.contains(">Pause<"),
        "{page}"
    );
    assert!(page.contains("HTTP 400"), "the dead letter: {page}");
    let (status, page) = admin.get("/ui/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(">Verify<"), "{page}");

    // The read key sees the pages without any of them.
    for path in [
        "/ui/archive",
        "/ui/destinations",
        "/ui/destinations/hook",
        "/ui/sources",
    ] {
        let (status, page) = read.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        for control in [
            "Run archive now",
            "Restore a range",
            ">Retry<",
            ">Pause<",
            ">Resume<",
            "/ui/verify",
        ] {
            assert!(
                !page.contains(control),
                "{path} shows {control} to a read key"
            );
        }
    }
    let (_, page) = read.get("/ui/destinations/hook").await;
    assert!(
        !page.contains("HTTP 400"),
        "dead letters are for admins: {page}"
    );
    assert!(
        !page.contains("Last error"),
        "receivers' errors are for admins"
    );
    assert_eq!(read.get("/ui/verify").await.0, StatusCode::FORBIDDEN);

    // Posting them anyway, with a valid session and token: 403, nothing done.
    let posts: [(&str, &[(&str, &str)]); 6] = [
        ("/ui/archive/run", &[("older_than", "0s")]),
        (
            "/ui/archive/restore",
            &[("stream", "s"), ("from", "1"), ("to", "2")],
        ),
        ("/ui/destinations/hook/dead-letters/1/retry", &[]),
        ("/ui/destinations/hook/pause", &[]),
        ("/ui/destinations/hook/resume", &[]),
        ("/ui/verify", &[("what", "hot")]),
    ];
    for (path, fields) in posts {
        let (status, page, _) = read.post(path, fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {page}");
    }
    let letters = get_json(
        &format!("{}/v1/destinations/hook/dead-letters", server.url),
        &admin_token(&data),
    )
    .await;
    assert!(
        letters["dead_letters"][0]["resolved"].is_null(),
        "{letters:#}"
    );
    assert_eq!(*rx.accepted.lock().unwrap(), 50, "nothing was retried");
    let archives = get_json(&format!("{}/v1/archives", server.url), &admin_token(&data)).await;
    assert_eq!(
        archives["batches"].as_array().unwrap().len(),
        0,
        "nothing was archived"
    );
}

/// A fresh admin key for API checks (the sessions' keys stay theirs).
fn admin_token(data: &Path) -> String {
    create_key(data, "admin")
}

#[tokio::test]
async fn a_stream_bound_key_sees_no_other_streams_batches_destinations_sources_or_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = create_key(&data, "admin");
    let alpha_admin = bound_key(&data, "admin", "alpha");
    // Source states as the sources record them, one per stream, each with
    // an error naming its stream.
    {
        use trailkeep::store::SourceStore as _;
        let store =
            trailkeep::store::sqlite::SqliteStore::open(&data.join("trailkeep.db")).unwrap();
        for (name, stream) in [("src-alpha", "alpha"), ("src-zeta", "zeta-secret")] {
            store
                .put_source_state(
                    trailkeep::store::SourceState {
                        name: name.into(),
                        stream: stream.into(),
                        reconnects: 3,
                        last_error: Some(format!("upstream of {stream} refused")),
                        last_error_at: Some("2026-12-01T00:00:00Z".into()),
                        updated: "2026-12-01T00:00:00Z".into(),
                        ..Default::default()
                    },
                    None,
                )
                .await
                .unwrap();
        }
    }
    // Each destination takes one stream and cannot reach its receiver.
    let cfg = format!(
        "{}{}",
        webhook(
            "hook-alpha",
            "http://127.0.0.1:1/hook",
            "streams = [\"alpha\"]"
        ),
        webhook(
            "hook-zeta",
            "http://127.0.0.1:1/zeta-secret",
            "streams = [\"zeta-secret\"]"
        )
    );
    let server = start(tmp.path(), &cfg).await;
    post_events(&server.url, &admin, "alpha", 5).await;
    post_events(&server.url, &admin, "zeta-secret", 5).await;
    let root = Session::open(&server.url, &admin).await;
    let (status, page, _) = root.post("/ui/archive/run", &[("older_than", "0s")]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("zeta-secret/") && page.contains("alpha/"),
        "both streams archived: {page}"
    );

    let bound = Session::open(&server.url, &alpha_admin).await;
    let (status, page) = bound.get("/ui/archive").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("alpha/"), "its own batch: {page}");
    assert!(
        !page.contains("Run archive now"),
        "a run archives every stream: not for a bound key"
    );
    assert!(
        page.contains("Restore a range"),
        "its own stream's range: {page}"
    );
    // The last run's totals and the bucket cover every stream.
    let (_, root_page) = root.get("/ui/archive").await;
    assert!(
        root_page.contains("succeeded</span>, ") && root_page.contains("file://"),
        "{root_page}"
    );
    assert!(
        page.contains("succeeded</span>.") && !page.contains("file://"),
        "no all-stream totals or bucket for a bound key: {page}"
    );
    let (_, older) = bound.get("/ui/archive?stream=zeta-secret").await;
    assert!(!older.contains("zeta-secret/"), "{older}");
    let (_, page) = bound.get("/ui/destinations").await;
    assert!(page.contains("hook-alpha"), "{page}");
    assert_eq!(
        bound.get("/ui/destinations/hook-zeta").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, page) = bound.get("/ui/sources").await;
    assert!(
        page.contains("src-alpha") && page.contains("upstream of alpha refused"),
        "{page}"
    );
    let (status, page, _) = bound.post("/ui/destinations/hook-zeta/pause", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    let (status, page, _) = bound
        .post(
            "/ui/archive/restore",
            &[("stream", "zeta-secret"), ("from", "1"), ("to", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let (status, _, _) = bound
        .post("/ui/verify", &[("what", "hot"), ("stream", "zeta-secret")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Its own verification covers its stream only.
    let (status, _, location) = bound.post("/ui/verify", &[("what", "archive")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let job = location.unwrap();
    let report = poll(
        Duration::from_secs(30),
        "the verification to end",
        async || {
            let (_, page) = bound.get(&job).await;
            (!page.contains("data-running")).then_some(page)
        },
    )
    .await;
    assert!(report.contains("no problem"), "{report}");
    for page in [
        report,
        bound.get("/ui/archive").await.1,
        bound.get("/ui/destinations").await.1,
        bound.get("/ui/destinations/hook-alpha").await.1,
        bound.get("/ui/sources").await.1,
        bound.get("/ui/verify").await.1,
        bound.get("/ui/").await.1,
    ] {
        assert!(
            !page.contains("zeta"),
            "another stream's name, destination, source or error: {page}"
        );
    }
    // The admin for every stream sees both, and the receivers' errors.
    let (_, page) = root.get("/ui/destinations").await;
    assert!(
        page.contains("hook-zeta") && page.contains("hook-alpha"),
        "{page}"
    );
    let (_, page) = root.get("/ui/sources").await;
    assert!(page.contains("src-zeta"), "{page}");
}

#[tokio::test]
async fn run_archive_now_shows_the_batch_then_restore_brings_a_range_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = create_key(&data, "admin");
    let server = Server::start(&data, &[]).await;
    post_events(&server.url, &token, "orders", 10).await;
    let admin = Session::open(&server.url, &token).await;
    let (_, page) = admin.get("/ui/archive").await;
    assert!(page.contains("Nothing archived yet"), "{page}");
    assert!(page.contains("None since this server started"), "{page}");

    let (status, page, _) = admin.post("/ui/archive/run", &[("older_than", "0s")]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Archive run finished"), "{page}");
    assert!(
        page.contains("events archived") && page.contains("<code>orders</code>"),
        "{page}"
    );
    let listed = get_json(&format!("{}/v1/archives?stream=orders", server.url), &token).await;
    let batch = &listed["batches"][0];
    let key = batch["object_key"].as_str().unwrap();
    let sha = batch["manifest_sha256"].as_str().unwrap();
    let (_, page) = admin.get("/ui/archive").await;
    assert!(page.contains(key), "the batch's object key: {page}");
    assert!(
        page.contains(&format!("title=\"{sha}\"")),
        "the manifest SHA-256 in full: {page}"
    );
    assert!(page.contains(&sha[..12]), "and truncated");
    assert!(page.contains("1–10"), "its seq range: {page}");
    assert!(page.contains("succeeded"), "the last run: {page}");
    let (_, page) = admin.get("/ui/archive?stream=orders").await;
    assert!(page.contains(key), "{page}");
    let (_, page) = admin.get("/ui/archive?stream=other").await;
    assert!(!page.contains(key), "{page}");

    // A bad duration is refused with why, and nothing runs.
    let (status, page, _) = admin
        .post("/ui/archive/run", &[("older_than", "soon")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("is not a duration"), "{page}");

    let (status, page, _) = admin
        .post(
            "/ui/archive/restore",
            &[("stream", "orders"), ("from", "2"), ("to", "4")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("3 events brought back"), "{page}");
    let (status, page, _) = admin
        .post(
            "/ui/archive/restore",
            &[("stream", "orders"), ("from", "4"), ("to", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("To must be a seq"), "{page}");
    assert!(server.terminate().success());
    let actions = audit_actions(&data);
    for a in ["archive.run", "archive.restore"] {
        assert!(actions.iter().any(|x| x == a), "{a} in _audit: {actions:?}");
    }
}

#[tokio::test]
async fn an_admin_retries_a_dead_letter_and_sees_the_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, rx, token) = with_dead_letter(tmp.path()).await;
    let admin = Session::open(&server.url, &token).await;
    let (_, page) = admin.get("/ui/destinations").await;
    assert!(page.contains("hook") && page.contains("webhook"), "{page}");
    let id = get_json(
        &format!("{}/v1/destinations/hook/dead-letters", server.url),
        &token,
    )
    .await["dead_letters"][0]["id"]
        .as_i64()
        .unwrap();
    let retry = format!("/ui/destinations/hook/dead-letters/{id}/retry");
    let (_, page) = admin.get("/ui/destinations/hook").await;
    assert!(page.contains(&format!("action=\"{retry}\"")), "{page}");
    assert!(
        page.contains("data-confirm=\"Send dead letter"),
        "it confirms first"
    );

    // Refused again: the outcome says so and the letter stays open.
    rx.script.lock().unwrap().push_back(400);
    let (status, page, _) = admin.post(&retry, &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert!(page.contains("refused it again; it stays open"), "{page}");
    assert!(
        page.contains(&format!("action=\"{retry}\"")),
        "still retryable"
    );

    let (status, page, _) = admin.post(&retry, &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("was delivered to hook and is resolved"),
        "{page}"
    );
    assert!(
        !page.contains(&format!("action=\"{retry}\"")),
        "no retry for a resolved letter"
    );
    assert_eq!(
        *rx.accepted.lock().unwrap(),
        100,
        "the retried batch arrived"
    );
    let (status, _, _) = admin.post(&retry, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "it is no longer open");

    // Pause and resume, with their outcome.
    let (status, page, _) = admin.post("/ui/destinations/hook/pause", &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Delivery to hook is paused") && page.contains(">Resume<"),
        "{page}"
    );
    let st = get_json(&format!("{}/v1/destinations", server.url), &token).await;
    assert_eq!(st["destinations"][0]["paused"], true);
    let (_, page, _) = admin.post("/ui/destinations/hook/resume", &[]).await;
    assert!(page.contains("Delivery to hook resumed"), "{page}");
    assert!(server.terminate().success());
    let actions = audit_actions(&tmp.path().join("data"));
    for a in [
        "dead_letter.retried",
        "destination.paused",
        "destination.resumed",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in _audit: {actions:?}");
    }
}

async fn verify_job(admin: &Session, what: &str) -> String {
    let (status, page, location) = admin.post("/ui/verify", &[("what", what)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let job = location.unwrap();
    poll(
        Duration::from_secs(30),
        "the verification to end",
        async || {
            let (_, page) = admin.get(&job).await;
            (!page.contains("data-running")).then_some(page)
        },
    )
    .await
}

#[tokio::test]
async fn verification_of_a_tampered_store_locates_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = create_key(&data, "admin");
    let server = Server::start(&data, &[]).await;
    post_events(&server.url, &token, "t", 10).await;
    post_events(&server.url, &token, "arch", 4).await;
    let admin = Session::open(&server.url, &token).await;
    let (_, page, _) = admin.post("/ui/archive/run", &[("older_than", "0s")]).await;
    assert!(page.contains("Archive run finished"), "{page}");

    let clean = verify_job(&admin, "archive").await;
    assert!(clean.contains("no problem"), "{clean}");
    assert!(clean.contains("archived events"), "{clean}");

    // Events are archived and gone from hot: put some back to tamper with.
    let (_, page, _) = admin
        .post(
            "/ui/archive/restore",
            &[("stream", "t"), ("from", "1"), ("to", "10")],
        )
        .await;
    assert!(page.contains("10 events brought back"), "{page}");
    let conn = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
    let changed = conn
        .execute(
            "UPDATE events SET body = replace(body, '\"t-4\"', '\"t-X\"') WHERE seq = 5 AND stream_id = (SELECT id FROM streams WHERE name = 't')",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let report = verify_job(&admin, "hot").await;
    assert!(report.contains("problem(s) found"), "{report}");
    let row = report
        .split("<tr>")
        .find(|r| r.contains("hash_mismatch"))
        .unwrap_or_else(|| panic!("no hash_mismatch row: {report}"));
    assert!(
        row.contains("<code>t</code>") && row.contains(">5<"),
        "located by stream and seq: {row}"
    );

    // An archive object removed from the bucket: located by its key.
    let listed = get_json(&format!("{}/v1/archives?stream=arch", server.url), &token).await;
    let key = listed["batches"][0]["object_key"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(data.join("archive").join(&key)).unwrap();
    let report = verify_job(&admin, "archive").await;
    assert!(report.contains("problem(s) found"), "{report}");
    assert!(
        report.contains(&format!("<code>{key}</code>")),
        "located by object key: {report}"
    );

    // The runs are on the record, and the overview raises the alarm.
    let (_, overview) = admin.get("/ui/").await;
    assert!(
        overview.contains("The last verification found"),
        "{overview}"
    );
    assert!(server.terminate().success());
    let runs = audit_actions(&data)
        .iter()
        .filter(|a| *a == "verify.run")
        .count();
    assert_eq!(runs, 3, "each run in _audit");
}
