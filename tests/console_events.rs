//! The console's Events pages over plain HTTP: the listing (visible
//! streams only, filters, keyset paging), the event page and its evidence,
//! and `trailkeep verify --evidence` on the download, before and after the
//! store is tampered with. The in-browser check is in tests/ui.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::console::{client, get, hidden, set_cookie, sign_in};
use common::{Server, create_key, poll, trailkeep};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, COOKIE};
use serde_json::{Value, json};

async fn post(url: &str, token: &str, stream: &str, events: &[Value]) {
    let res = client()
        .post(format!("{url}/v1/streams/{stream}/events"))
        .bearer_auth(token)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

/// The seqs in a listing's table, in page order.
fn seqs(page: &str) -> Vec<u64> {
    page.split("aria-label=\"Event ")
        .skip(1)
        .filter_map(|s| s[..s.find('"').unwrap()].parse().ok())
        .collect()
}

/// The `href` of the link with `rel`, HTML entities undone.
fn rel_link(page: &str, rel: &str) -> Option<String> {
    let at = page.find(&format!("rel=\"{rel}\""))?;
    let before = &page[..at];
    let h = before.rfind("href=\"")? + 6;
    let href = &page[h..h + page[h..].find('"')?];
    Some(href.replace("&amp;", "&"))
}

/// 60 events in `a`: seq n has type `t.even`/`t.odd`, actor `user-{n % 3}`
/// (every third an object with that id), time 2026-12-01 + n hours.
fn seed_events() -> Vec<Value> {
    (1..=60)
        .map(|n: u32| {
            let actor = if n.is_multiple_of(2) {
                json!(format!("user-{}", n % 3))
            } else {
                json!({"id": format!("user-{}", n % 3), "kind": "person"})
            };
            json!({
                "id": if n == 7 { "it's-7".to_owned() } else { format!("e{n}") },
                "type": if n.is_multiple_of(2) { "t.even" } else { "t.odd" },
                "time": format!("2026-12-{:02}T{:02}:00:00Z", 1 + n / 24, n % 24),
                "actor": actor,
                "subject": format!("doc-{n}"),
                "data": {"n": n},
            })
        })
        .collect()
}

#[tokio::test]
async fn listing_shows_visible_streams_filters_and_pages_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let ingest = create_key(dir.path(), "ingest");
    let out = trailkeep(
        dir.path(),
        &["keys", "create", "--scope", "read", "--stream", "a"],
    );
    assert!(out.status.success());
    let bound = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let s = Server::start(dir.path(), &[]).await;
    post(&s.url, &ingest, "a", &seed_events()).await;
    post(
        &s.url,
        &ingest,
        "secret-b",
        &[json!({"type": "x", "id": "b1"})],
    )
    .await;
    let admin_s = sign_in(&s.url, &admin).await;
    let bound_s = sign_in(&s.url, &bound).await;

    // The picker lists only the streams the key sees.
    let (st, page) = get(&s.url, "/ui/events", &admin_s).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        page.contains("?stream=a\"") && page.contains("?stream=secret-b\""),
        "{page}"
    );
    let (_, page) = get(&s.url, "/ui/events", &bound_s).await;
    assert!(page.contains("?stream=a\""), "{page}");
    assert!(
        !page.contains("secret-b"),
        "a bound key never sees another stream's name: {page}"
    );

    // Another stream's listing is the page of a stream that does not exist.
    let (st, other) = get(&s.url, "/ui/events?stream=secret-b", &bound_s).await;
    let (st2, none) = get(&s.url, "/ui/events?stream=nope", &bound_s).await;
    assert_eq!((st, st2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(other, none);
    assert!(!other.contains("secret-b"));

    // Newest first, 50 a page, then the rest through the keyset link.
    let (st, page) = get(&s.url, "/ui/events?stream=a", &bound_s).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(seqs(&page), (11..=60).rev().collect::<Vec<_>>());
    assert!(
        page.contains("data-live="),
        "the first page refreshes itself"
    );
    assert!(
        page.contains("/ui/events/a/60\""),
        "rows link to the event page"
    );
    let next = rel_link(&page, "next").expect("an older page");
    assert!(next.contains("before_seq=11"), "{next}");
    let (_, page) = get(&s.url, &next, &bound_s).await;
    assert_eq!(seqs(&page), (1..=10).rev().collect::<Vec<_>>());
    assert!(rel_link(&page, "next").is_none(), "the last page");
    assert!(!page.contains("data-live="), "an older page stays put");

    // Filters: type, actor (a string or an object's id), subject, id with
    // a quote, time range; and together with paging.
    let f = async |q: &str| {
        let (st, page) = get(&s.url, &format!("/ui/events?stream=a&{q}"), &admin_s).await;
        assert_eq!(st, StatusCode::OK, "{q}: {page}");
        assert!(!page.contains("filter-error"), "{q}: {page}");
        seqs(&page)
    };
    assert_eq!(
        f("type=t.even").await,
        (1..=30).rev().map(|n| 2 * n).collect::<Vec<_>>()
    );
    let user0: Vec<u64> = (1..=60)
        .rev()
        .filter(|n: &u64| n.is_multiple_of(3))
        .collect();
    assert_eq!(f("actor=user-0").await, user0);
    assert_eq!(f("subject=doc-42").await, vec![42]);
    assert_eq!(f("id=it%27s-7").await, vec![7]);
    assert_eq!(f("id=%27%20OR%201%3D1%20--").await, Vec::<u64>::new());
    // 2026-12-02T00:00Z is seq 24; To is exclusive.
    assert_eq!(
        f("from=2026-12-02&to=2026-12-02T03:00").await,
        vec![26, 25, 24]
    );
    assert_eq!(
        f("from=2026-12-02T01:00:00%2B01:00&to=2026-12-02T02:00:00Z&type=t.odd").await,
        vec![25]
    );
    // A bad time names the field and how to write it.
    let (st, page) = get(&s.url, "/ui/events?stream=a&from=yesterday", &admin_s).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        page.contains("filter-error") && page.contains("From"),
        "{page}"
    );
    let (st, _) = get(&s.url, "/ui/events?stream=a&before_seq=x", &admin_s).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

/// The read key's session, the stream's newest event page once a signed
/// checkpoint covers `seq`.
async fn covered_page(url: &str, session: &str, stream: &str, seq: u64) -> String {
    poll(
        Duration::from_secs(20),
        "a checkpoint covering the event",
        async || {
            let (st, page) = get(url, &format!("/ui/events/{stream}/{seq}"), session).await;
            assert_eq!(st, StatusCode::OK, "{page}");
            page.contains("id=\"evidence\"").then_some(page)
        },
    )
    .await
}

async fn download(url: &str, session: &str, stream: &str, seq: u64, to: &Path) {
    let res = client()
        .get(format!("{url}/ui/events/{stream}/{seq}/evidence.json"))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cd = res.headers()[CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cd.starts_with("attachment;") && cd.contains(".evidence.json"),
        "{cd}"
    );
    std::fs::write(to, res.bytes().await.unwrap()).unwrap();
}

/// `verify --evidence FILE [--public-key KEY] [--json]`: exit code, stdout, stderr.
fn verify_evidence(file: &Path, key: Option<&Path>, json: bool) -> (i32, String, String) {
    let mut args = vec!["verify", "--evidence", file.to_str().unwrap()];
    if let Some(k) = key {
        args.extend(["--public-key", k.to_str().unwrap()]);
    }
    if json {
        args.push("--json");
    }
    // No data directory is needed: run it against an empty one.
    let empty = tempfile::tempdir().unwrap();
    let out = trailkeep(empty.path(), &args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The evidence checked by Go's `sumdb/note` and `sumdb/tlog`
/// (tests/data/go/evidence_check.go): exit success and output. `None`
/// without Go (scripts/test.sh installs it; under CI its absence fails).
fn go_check(evidence: &Path, key: &Path) -> Option<(bool, String)> {
    let Ok(go) = std::env::var("TEST_GO") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "TEST_GO is not set: run the tests through scripts/test.sh, which installs Go"
        );
        eprintln!(
            "skipping the Go check of the evidence: TEST_GO is not set (scripts/test.sh sets it)"
        );
        return None;
    };
    let gopath = std::env::var("TEST_GO_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(go)
        .args([
            "run",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/go/evidence_check.go"
            ),
        ])
        .arg(evidence)
        .arg(key)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", cache.path())
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test]
async fn event_page_evidence_verifies_offline_and_fails_after_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let admin = create_key(&dir, "admin");
    let ingest = create_key(&dir, "ingest");
    let out = trailkeep(
        &dir,
        &["keys", "create", "--scope", "read", "--stream", "a"],
    );
    let bound = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = trailkeep(&dir, &["keys", "public"]);
    assert!(out.status.success());
    let pk = tmp.path().join("log.pub");
    std::fs::write(&pk, &out.stdout).unwrap();
    let s = Server::start(&dir, &[]).await;
    let mut events = seed_events();
    // Markup in an event cannot end the evidence's script element.
    events[2]["data"] = json!({"note": "</script><script>alert(1)</script>"});
    post(&s.url, &ingest, "a", &events).await;
    post(&s.url, &ingest, "secret-b", &[json!({"type": "x"})]).await;
    let bound_s = sign_in(&s.url, &bound).await;
    let admin_s = sign_in(&s.url, &admin).await;

    let page = covered_page(&s.url, &bound_s, "a", 3).await;
    let script = &page[page.find("id=\"evidence\"").unwrap()..];
    let script = &script[..script.find("</script>").unwrap()];
    assert!(
        !script.contains('<'),
        "every < is escaped inside the evidence: {script}"
    );
    assert!(script.contains("\\u003c/script>"), "{script}");
    assert!(page.contains("id=\"proof-result\""));
    assert!(page.contains("/ui/assets/proof.js") || page.contains("data-module=\"proof\""));
    assert!(page.contains("/ui/events/a/3/evidence.json"));
    assert!(
        !page.contains("<script>alert"),
        "the event is escaped in the page"
    );
    let stored = common::events_in_db(&dir)[&("a".to_owned(), "e3".to_owned())]
        .1
        .clone();
    assert!(page.contains(&stored), "the page shows the stored hash");

    // Another stream's event, and events that do not exist: the same 404.
    let (st1, other) = get(&s.url, "/ui/events/secret-b/1", &bound_s).await;
    let (st2, none) = get(&s.url, "/ui/events/nope/1", &bound_s).await;
    let (st3, past) = get(&s.url, "/ui/events/a/999", &bound_s).await;
    assert_eq!(
        (st1, st2, st3),
        (
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND
        )
    );
    assert_eq!(other, none);
    assert_eq!(other, past);
    let (st, _) = get(&s.url, "/ui/events/secret-b/1/evidence.json", &bound_s).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = get(&s.url, "/ui/events/secret-b/1", &admin_s).await;
    assert_eq!(st, StatusCode::OK, "an admin for * sees it");

    // The evidence verifies offline with the pinned key.
    let ev = tmp.path().join("e3.json");
    download(&s.url, &bound_s, "a", 3, &ev).await;
    let (code, out, err) = verify_evidence(&ev, Some(&pk), false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("OK: event 3 of stream a is included in checkpoint size"),
        "{out}"
    );
    let (code, out, _) = verify_evidence(&ev, Some(&pk), true);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["key_pinned"], true);
    assert_eq!(v["steps"].as_array().unwrap().len(), 5, "{v:#}");
    // Without a pinned key: checked against the file's, with a warning.
    let (code, out, err) = verify_evidence(&ev, None, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("self-consistent"), "{err}");
    // Another key: the signature step fails, exit 1.
    let other_dir = tmp.path().join("other");
    assert!(trailkeep(&other_dir, &["migrate"]).status.success());
    let other_key = tmp.path().join("other.pub");
    std::fs::write(
        &other_key,
        trailkeep(&other_dir, &["keys", "public"]).stdout,
    )
    .unwrap();
    // Go's note and tlog accept the same file with the pinned key, and
    // refuse it with another key or a changed proof.
    if let Some((ok, out)) = go_check(&ev, &pk) {
        assert!(
            ok && out.starts_with("ok a seq 3 in checkpoint size"),
            "{out}"
        );
        let (ok, out) = go_check(&ev, &other_key).unwrap();
        assert!(!ok && out.contains("checkpoint signature"), "{out}");
        let mut e: Value = serde_json::from_slice(&std::fs::read(&ev).unwrap()).unwrap();
        let first = e["proof"]["hashes"][0].as_str().unwrap().to_owned();
        let mut b =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &first).unwrap();
        b[0] ^= 1;
        e["proof"]["hashes"][0] =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b).into();
        let bent = tmp.path().join("bent.json");
        std::fs::write(&bent, serde_json::to_vec(&e).unwrap()).unwrap();
        let (ok, out) = go_check(&bent, &pk).unwrap();
        assert!(!ok && out.contains("inclusion of seq 3"), "{out}");
    }
    let (code, out, err) = verify_evidence(&ev, Some(&other_key), true);
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["steps"].as_array().unwrap().last().unwrap()["step"],
        "signature"
    );
    // An edited file fails at the event's hash.
    let mut e: Value = serde_json::from_slice(&std::fs::read(&ev).unwrap()).unwrap();
    e["event"] = e["event"]
        .as_str()
        .unwrap()
        .replace("t.odd", "t.even")
        .into();
    let edited = tmp.path().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&e).unwrap()).unwrap();
    let (code, out, _) = verify_evidence(&edited, Some(&pk), false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID event_hash"), "{out}");
    // Not an evidence file, or none at all: exit 2.
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "{}").unwrap();
    assert_eq!(verify_evidence(&junk, Some(&pk), false).0, 2);
    assert_eq!(
        verify_evidence(&tmp.path().join("missing.json"), Some(&pk), false).0,
        2
    );

    // Tampering in the store: a row's body changed in place ...
    let conn = rusqlite::Connection::open(dir.join("trailkeep.db")).unwrap();
    let n = conn
        .execute(
            "UPDATE events SET body = replace(body, '\"doc-5\"', '\"doc-6\"') \
             WHERE seq = 5 AND stream_id = (SELECT id FROM streams WHERE name = 'a')",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    let ev5 = tmp.path().join("e5.json");
    download(&s.url, &bound_s, "a", 5, &ev5).await;
    let (code, out, _) = verify_evidence(&ev5, Some(&pk), false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID event_hash"), "{out}");
    // ... and a history rewritten consistently (hashes and links redone):
    // the tiles and the signed checkpoint still hold the original.
    common::rewrite_consistently(&conn, "a", 10, 60);
    let ev10 = tmp.path().join("e10.json");
    download(&s.url, &bound_s, "a", 10, &ev10).await;
    let (code, out, _) = verify_evidence(&ev10, Some(&pk), false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID merkle_path"), "{out}");
}

#[tokio::test]
async fn an_archived_event_is_read_from_its_object_and_still_proved() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let admin = create_key(&dir, "admin");
    let ingest = create_key(&dir, "ingest");
    let out = trailkeep(&dir, &["keys", "public"]);
    let pk = tmp.path().join("log.pub");
    std::fs::write(&pk, &out.stdout).unwrap();
    let s = Server::start(&dir, &[]).await;
    post(&s.url, &ingest, "a", &seed_events()).await;
    let session = sign_in(&s.url, &admin).await;
    covered_page(&s.url, &session, "a", 60).await;
    s.terminate();

    let out = trailkeep(&dir, &["archive", "run", "--older-than", "0s", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hot: i64 = rusqlite::Connection::open(dir.join("trailkeep.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM events WHERE stream_id = (SELECT id FROM streams WHERE name = 'a')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        hot, 0,
        "every event of a was archived and deleted from the hot store"
    );

    let s = Server::start(&dir, &[]).await;
    let session = sign_in(&s.url, &admin).await;
    let (st, page) = get(&s.url, "/ui/events?stream=a&type=t.even", &session).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        seqs(&page),
        (1..=30).rev().map(|n| 2 * n).collect::<Vec<_>>()
    );
    assert!(page.contains("<td>cold</td>"), "{page}");
    let page = covered_page(&s.url, &session, "a", 12).await;
    assert!(page.contains("read from its archive object"), "{page}");
    let ev = tmp.path().join("e12.json");
    download(&s.url, &session, "a", 12, &ev).await;
    let (code, out, err) = verify_evidence(&ev, Some(&pk), false);
    assert_eq!(code, 0, "{out}{err}");
}

/// Regression: under `Referrer-Policy: no-referrer` a browser sends
/// `Origin: null` with every form POST (Fetch, "serializing a request
/// origin"), so the console's own origin check refused every sign-in and
/// admin form a real browser sent. The policy must let the browser name
/// this origin on same-origin posts, and such a post must pass.
#[tokio::test]
async fn browsers_send_their_origin_with_console_forms() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let s = Server::start(dir.path(), &[]).await;
    let form = client()
        .get(format!("{}/ui/login", s.url))
        .send()
        .await
        .unwrap();
    let policy = form.headers()["referrer-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        [
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin"
        ]
        .contains(&policy.as_str()),
        "under Referrer-Policy {policy} a browser's same-origin form POST carries Origin: null"
    );
    // What Chrome sends under that policy for the sign-in form.
    let cookie = set_cookie(&form, "tk_login").unwrap();
    let login = hidden(&form.text().await.unwrap(), "login");
    let res = client()
        .post(format!("{}/ui/login", s.url))
        .header(COOKIE, &cookie)
        .header("origin", &s.url)
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", admin.as_str()), ("login", &login)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}
