//! The web console in a real headless browser: Debian's chromium through
//! chromedriver (`common::browser`). `scripts/test.sh` installs both; without
//! them a test is skipped, saying so, except under CI, where that fails.
//! Screenshots go to `artifacts/ui-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::{Browser, ConsoleEntry, DESKTOP, PHONE};
use common::{Server, create_key};
use serde_json::{Value, json};

/// The width and height in a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let png = std::fs::read(path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Waits until the browser's console log holds an error containing each
/// of `needles`.
async fn console_errors(b: &Browser, needles: &[&str]) {
    let mut seen: Vec<ConsoleEntry> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !needles.iter().all(|m| {
        seen.iter()
            .any(|e| e.level == "SEVERE" && e.message.contains(m))
    }) {
        assert!(
            Instant::now() < deadline,
            "the console log lacks errors with {needles:?}: {seen:?}"
        );
        seen.extend(b.console_log().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The browser opens what the server has today, reads it and takes
/// screenshots; its console log reports page errors (so a clean log means
/// something).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reads_pages_takes_screenshots_and_sees_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    let Some(b) = Browser::desktop(&s.url).await else {
        return;
    };

    b.goto("/healthz").await;
    assert_eq!(b.text("body").await, "ok");
    let shot = b.screenshot("healthz").await;
    assert_eq!(png_size(&shot).0, DESKTOP.0);

    b.goto("/v1/openapi.json").await;
    // Chromium shows a JSON document as text in a <pre>.
    let doc: Value = serde_json::from_str(&b.text("pre").await).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/healthz"].is_object(), "{doc}");
    b.wait_for_text("pre", "\"/v1/streams\"", Duration::from_secs(5))
        .await;
    b.screenshot("openapi").await;
    b.assert_no_console_errors().await;

    // An uncaught exception, a console.error and a CSP violation (an
    // inline script under `script-src 'self'`) all show up as errors.
    b.js(
        "setTimeout(() => { throw new Error('probe: uncaught'); });
         console.error('probe: console.error');",
        vec![],
    )
    .await;
    console_errors(&b, &["probe: uncaught", "probe: console.error"]).await;
    b.client()
        .goto(
            "data:text/html,<meta http-equiv=Content-Security-Policy content=\"script-src 'self'\">\
             <script>document.title = 'ran'</script>",
        )
        .await
        .unwrap();
    assert_eq!(b.client().title().await.unwrap(), "");
    console_errors(&b, &["Content Security Policy"]).await;
    b.close().await;
}

/// The helpers page tests use: fill replaces what a field held, submit runs
/// the form's submit handler, click clicks, wait_for_text sees the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_fill_submit_and_click() {
    let Some(b) = Browser::desktop("http://127.0.0.1:9").await else {
        return;
    };
    b.client()
        .goto(
            "data:text/html,<form id=f><input id=who><button>go</button></form>\
             <output id=out></output><button id=count type=button>0</button><script>\
             const $ = (id) => document.getElementById(id);\
             $('f').addEventListener('submit', (e) => { e.preventDefault(); $('out').textContent = 'hello ' + $('who').value; });\
             $('count').addEventListener('click', () => { $('count').textContent = Number($('count').textContent) + 1; });\
             </script>",
        )
        .await
        .unwrap();
    b.fill("#who", "ada").await;
    b.fill("#who", "grace").await;
    b.submit("#f").await;
    b.wait_for_text("#out", "hello grace", Duration::from_secs(5))
        .await;
    assert_eq!(b.text("#out").await, "hello grace");
    b.click("#count").await;
    b.click("#count").await;
    b.wait_for_text("#count", "2", Duration::from_secs(5)).await;
    b.assert_no_console_errors().await;
    b.close().await;
}

/// The phone: 390 CSS pixels wide, screenshots too, and a page with a
/// viewport meta tag is laid out at that width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_is_390_css_pixels_wide() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    let Some(b) = Browser::phone(&s.url).await else {
        return;
    };
    b.goto("/healthz").await;
    let shot = b.screenshot("healthz-phone").await;
    assert_eq!(png_size(&shot), PHONE);
    b.client()
        .goto("data:text/html,<meta name=viewport content='width=device-width'><p>phone")
        .await
        .unwrap();
    let size = b
        .js("return [window.innerWidth, window.innerHeight];", vec![])
        .await;
    assert_eq!(size, json!([PHONE.0, PHONE.1]));
    b.close().await;
}

/// What the console's in-page proof check needs from this browser: a
/// secure context on http://127.0.0.1 (WebCrypto exists only there, on
/// localhost and under https), SHA-256, Ed25519 signature checks, and
/// fetch with a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_has_webcrypto_sha256_and_ed25519() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "read");
    let s = Server::start(dir.path(), &[]).await;
    let Some(b) = Browser::desktop(&s.url).await else {
        return;
    };
    b.goto("/healthz").await;
    // RFC 8032 section 7.1, TEST 1: the empty message.
    let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let signature = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
    let out = b
        .js_async(
            "const [publicHex, signatureHex, key, done] = arguments;
             const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');
             const bytes = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
             (async () => {
               const out = { secureContext: window.isSecureContext };
               out.sha256 = hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode('abc')));
               try {
                 const k = await crypto.subtle.importKey('raw', bytes(publicHex), { name: 'Ed25519' }, false, ['verify']);
                 const sig = bytes(signatureHex);
                 out.ed25519 = 'supported';
                 out.valid = await crypto.subtle.verify({ name: 'Ed25519' }, k, sig, new Uint8Array(0));
                 sig[0] ^= 1;
                 out.tampered = await crypto.subtle.verify({ name: 'Ed25519' }, k, sig, new Uint8Array(0));
               } catch (e) {
                 out.ed25519 = e.name + ': ' + e.message;
               }
               const r = await fetch('/v1/streams', { headers: { authorization: 'Bearer ' + key } });
               out.streams = r.status;
               done(out);
             })().catch((e) => done({ error: String(e) }));",
            vec![json!(public), json!(signature), json!(key)],
        )
        .await;
    eprintln!("this chromium: {out}");
    assert_eq!(out["secureContext"], true, "{out}");
    assert_eq!(
        out["sha256"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "{out}"
    );
    assert_eq!(
        out["ed25519"], "supported",
        "this chromium has no Ed25519 WebCrypto: the console could not check checkpoint \
         signatures in the page ({out})"
    );
    assert_eq!(out["valid"], true, "{out}");
    assert_eq!(out["tampered"], false, "{out}");
    assert_eq!(out["streams"], 200, "{out}");
    b.assert_no_console_errors().await;
    b.close().await;
}

async fn post_event(url: &str, token: &str, stream: &str, id: &str) {
    let res = reqwest::Client::new()
        .post(format!("{url}/v1/streams/{stream}/events"))
        .bearer_auth(token)
        .json(&json!({"id": id, "type": "grant.created", "time": "2026-12-01T00:00:00Z", "data": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
}

/// An admin signs in, sees every stream and a new one appear without a
/// reload, creates a key (after a confirmation: cancelling creates
/// nothing), sees its token once and revokes it; a read key bound to one
/// stream, on a phone, sees that stream only and no admin page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_keys_for_an_admin_and_a_bound_read_key() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let out = common::trailkeep(
        dir.path(),
        &[
            "keys",
            "create",
            "--scope",
            "read",
            "--stream",
            "alpha-orders",
        ],
    );
    assert!(out.status.success());
    let read_alpha = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let s = Server::start(dir.path(), &[]).await;
    post_event(&s.url, &admin, "alpha-orders", "a1").await;
    post_event(&s.url, &admin, "zeta-secret", "z1").await;
    let Some(b) = Browser::desktop(&s.url).await else {
        return;
    };
    b.sign_in(&admin).await;
    let streams = b.text("#streams").await;
    assert!(
        streams.contains("alpha-orders") && streams.contains("zeta-secret"),
        "{streams}"
    );
    b.wait_for_text(
        "#health",
        "Writer: accepting events",
        Duration::from_secs(5),
    )
    .await;
    b.assert_accessible_basics().await;
    b.screenshot("overview").await;
    // A new stream shows up without a reload.
    post_event(&s.url, &admin, "gamma-new", "g1").await;
    b.wait_for_text("#streams", "gamma-new", Duration::from_secs(15))
        .await;

    b.goto("/ui/keys").await;
    b.assert_accessible_basics().await;
    let keys = || {
        let out = common::trailkeep(dir.path(), &["keys", "list", "--json"]);
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap()
            .len()
    };
    let before = keys();
    b.fill("#stream", "alpha-orders").await;
    b.answer_confirm(false).await;
    b.submit("form[action='/ui/keys']").await;
    let asked = b.js("return window.__asked;", vec![]).await;
    assert!(
        asked[0].as_str().unwrap().contains("Create this key"),
        "{asked}"
    );
    assert_eq!(keys(), before, "cancelled: no key");
    b.answer_confirm(true).await;
    b.submit("form[action='/ui/keys']").await;
    b.wait_for_text(".notice", "shown only this once", Duration::from_secs(10))
        .await;
    assert_eq!(keys(), before + 1);
    let token = b
        .js("return document.getElementById('new-token').value;", vec![])
        .await;
    let token = token.as_str().unwrap().to_owned();
    let id = &token[3..19];
    b.screenshot("keys-created").await;
    b.goto("/ui/keys").await;
    let row = format!("#key-{id}");
    b.answer_confirm(true).await;
    b.submit(&format!("{row} form")).await;
    b.wait_for_text(&row, "revoked", Duration::from_secs(10))
        .await;
    b.screenshot("keys").await;
    b.assert_no_console_errors().await;
    b.click("form.who button").await;
    b.wait_for_text("h1", "Sign in", Duration::from_secs(10))
        .await;
    b.close().await;

    let Some(p) = Browser::phone(&s.url).await else {
        return;
    };
    p.sign_in(&read_alpha).await;
    let page = p.text("main").await;
    assert!(page.contains("alpha-orders"), "{page}");
    assert!(
        !page.contains("zeta-secret") && !page.contains("gamma-new"),
        "{page}"
    );
    let nav = p.text("nav").await;
    assert!(!nav.contains("Keys") && !nav.contains("Verify"), "{nav}");
    p.assert_accessible_basics().await;
    p.screenshot("overview-phone-read-key").await;
    p.goto("/ui/keys").await;
    p.wait_for_text("h1", "Admin only", Duration::from_secs(5))
        .await;
    p.close().await;
}

/// Signs in to the console with `token` and waits for the overview.
async fn sign_in(b: &Browser, token: &str) {
    b.sign_in(token).await;
}

async fn post_events(url: &str, token: &str, stream: &str, events: Value) {
    let res = reqwest::Client::new()
        .post(format!("{url}/v1/streams/{stream}/events"))
        .bearer_auth(token)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

/// Waits until the stream's latest signed checkpoint covers `seq`.
async fn signed_through(url: &str, token: &str, stream: &str, seq: u64) {
    common::wait_for(
        Duration::from_secs(20),
        "a checkpoint covering the event",
        async || {
            let res = reqwest::Client::new()
                .get(format!("{url}/v1/streams/{stream}/checkpoint"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let note = res.text().await.unwrap();
            note.lines()
                .nth(1)
                .and_then(|l| l.parse::<u64>().ok())
                .is_some_and(|size| size >= seq)
        },
    )
    .await;
}

/// The Events page in a browser: a new event appears in the list without
/// a reload; its page checks the proof in the browser (hash, Merkle path,
/// Ed25519 signature) and says it verified; a row changed in SQLite makes
/// the page say the proof FAILED, naming the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appear_live_and_the_browser_checks_each_proof() {
    let dir = tempfile::tempdir().unwrap();
    let read = create_key(dir.path(), "read");
    let ingest = create_key(dir.path(), "ingest");
    let s = Server::start(dir.path(), &[]).await;
    post_events(
        &s.url,
        &ingest,
        "payments",
        json!([
            {"type": "grant.created", "actor": "alice", "subject": "doc-1", "data": {"amount": 10}},
            {"type": "grant.revoked", "actor": {"id": "bob", "team": "ops"}, "subject": "doc-1"},
            {"type": "login.failed", "actor": "mallory", "data": {"note": "</script><script>alert(1)</script>"}},
        ]),
    )
    .await;
    let Some(b) = Browser::desktop(&s.url).await else {
        return;
    };
    sign_in(&b, &read).await;

    b.goto("/ui/events?stream=payments").await;
    b.wait_for_text("#events", "login.failed", Duration::from_secs(10))
        .await;
    post_events(
        &s.url,
        &ingest,
        "payments",
        json!([{"type": "payout.sent", "actor": "carol", "subject": "acct-7"}]),
    )
    .await;
    // No reload: the list refreshes itself (data-live).
    b.wait_for_text("#events", "payout.sent", Duration::from_secs(15))
        .await;
    let shot = b.screenshot("events-list").await;
    assert_eq!(png_size(&shot).0, DESKTOP.0);

    signed_through(&s.url, &read, "payments", 4).await;
    b.click("a[href='/ui/events/payments/4']").await;
    let result = b
        .wait_for_text("#proof-result", "Verified", Duration::from_secs(15))
        .await;
    assert!(
        result.contains("event 4 of payments is included in checkpoint size"),
        "{result}"
    );
    let steps = b.text("#proof-steps").await;
    for step in [
        "Event hash",
        "Merkle path",
        "Checkpoint signature",
        "Checkpoint contents",
    ] {
        assert!(steps.contains(step), "{steps}");
    }
    b.screenshot("event-verified").await;
    // The event with markup in it: shown as text, its proof checked.
    b.goto("/ui/events/payments/3").await;
    b.wait_for_text("#proof-result", "Verified", Duration::from_secs(15))
        .await;
    assert!(
        b.text("#stored-line")
            .await
            .contains("</script><script>alert(1)</script>")
    );
    b.assert_no_console_errors().await;

    // Someone with write access to the database edits event 2.
    let conn = rusqlite::Connection::open(dir.path().join("trailkeep.db")).unwrap();
    let n = conn
        .execute(
            "UPDATE events SET body = replace(body, 'grant.revoked', 'grant.renewed') \
             WHERE seq = 2 AND stream_id = (SELECT id FROM streams WHERE name = 'payments')",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    b.goto("/ui/events/payments/2").await;
    let result = b
        .wait_for_text("#proof-result", "FAILED", Duration::from_secs(15))
        .await;
    assert!(
        result.contains("Event hash") && result.contains("the event was changed"),
        "{result}"
    );
    b.screenshot("event-tampered").await;
    b.close().await;

    // The list on a phone.
    let Some(p) = Browser::phone(&s.url).await else {
        return;
    };
    sign_in(&p, &read).await;
    p.goto("/ui/events?stream=payments").await;
    p.wait_for_text("#events", "payout.sent", Duration::from_secs(10))
        .await;
    p.screenshot("events-list-phone").await;
    p.close().await;
}

/// Archive, Destinations, Sources and Verify in a real browser.
mod ops {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    // ---- Archive, Destinations, Sources, Verify (issue #17) ----

    /// Submits the form `css` on the current page, answering its
    /// `data-confirm` question with OK (the question is app.js's
    /// `window.confirm`).
    async fn confirm_and_submit(b: &Browser, css: &str) {
        b.js("window.confirm = () => true;", vec![]).await;
        b.submit(css).await;
    }

    async fn post_events(url: &str, token: &str, stream: &str, n: usize) {
        let body: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("{stream}-{i}"), "type": "grant.created", "data": {}}))
            .collect();
        let res = reqwest::Client::new()
            .post(format!("{url}/v1/streams/{stream}/events"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }

    /// Signing in from the sign-in page opens a session, and a form posted
    /// from a console page is accepted. Regression: under `Referrer-Policy:
    /// no-referrer` the browser sent `Origin: null` with every form, and the
    /// console refused them all, sign-in included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_browser_signs_in_and_its_forms_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let admin = create_key(dir.path(), "admin");
        let s = Server::start(dir.path(), &[]).await;
        let Some(b) = Browser::desktop(&s.url).await else {
            return;
        };
        sign_in(&b, &admin).await;
        b.goto("/ui/verify").await;
        confirm_and_submit(&b, "form[action='/ui/verify']").await;
        b.wait_for_text("#job", "no problem", Duration::from_secs(30))
            .await;
        b.assert_no_console_errors().await;
        b.close().await;
    }

    /// Run the archive now from the Archive page and see its batch appear.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn archive_page_runs_the_archive_and_shows_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let admin = create_key(dir.path(), "admin");
        let s = Server::start(dir.path(), &[]).await;
        post_events(&s.url, &admin, "orders", 12).await;
        let Some(b) = Browser::desktop(&s.url).await else {
            return;
        };
        sign_in(&b, &admin).await;
        b.goto("/ui/archive").await;
        b.wait_for_text("main", "Nothing archived yet", Duration::from_secs(5))
            .await;
        b.fill("#older_than", "0s").await;
        confirm_and_submit(&b, "form[action='/ui/archive/run']").await;
        b.wait_for_text("#outcome", "Archive run finished", Duration::from_secs(20))
            .await;
        b.screenshot("archive-run").await;
        b.goto("/ui/archive?stream=orders").await;
        let table = b
            .wait_for_text("table.batches", "orders/events/", Duration::from_secs(5))
            .await;
        assert!(table.contains("1–12"), "{table}");
        b.screenshot("archive").await;
        b.assert_no_console_errors().await;
        b.close().await;
    }

    /// A webhook receiver refusing its first batch, then accepting.
    async fn refusing_once() -> (String, Arc<AtomicUsize>) {
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (a, r) = (accepted.clone(), refused.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (a, r) = (a.clone(), r.clone());
                async move {
                    if r.fetch_add(1, Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::BAD_REQUEST;
                    }
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    a.fetch_add(
                        v["data"]["events"].as_array().unwrap().len(),
                        Ordering::SeqCst,
                    );
                    axum::http::StatusCode::OK
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (format!("http://{addr}/hook"), accepted)
    }

    /// Retry a dead letter from the destination's page and see it resolved;
    /// the Sources page with a source's state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destinations_page_retries_a_dead_letter() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let admin = create_key(&data, "admin");
        {
            use trailkeep::store::SourceStore as _;
            let store =
                trailkeep::store::sqlite::SqliteStore::open(&data.join("trailkeep.db")).unwrap();
            store
                .put_source_state(
                    trailkeep::store::SourceState {
                        name: "billing-sse".into(),
                        stream: "billing".into(),
                        last_event_id: Some("evt_0192".into()),
                        last_event_time: Some("2026-12-01T10:00:00Z".into()),
                        taken: 192,
                        duplicates: 3,
                        reconnects: 1,
                        last_error: Some("upstream closed the stream".into()),
                        last_error_at: Some("2026-12-01T10:00:05Z".into()),
                        updated: "2026-12-01T10:00:05Z".into(),
                        ..Default::default()
                    },
                    None,
                )
                .await
                .unwrap();
        }
        let (url, accepted) = refusing_once().await;
        let cfg = tmp.path().join("cfg.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret_env = \"TK_TEST_WHSEC\"\nallow_private = true\nmax_age_ms = 50\nbackoff_max_ms = 200\nmax_events = 50\n"
            ),
        )
        .unwrap();
        let s = Server::start_with_env(
            &data,
            &["--config", cfg.to_str().unwrap()],
            &[("TK_TEST_WHSEC", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        )
        .await;
        post_events(&s.url, &admin, "s", 100).await;
        common::wait_until(Duration::from_secs(20), "the second batch", || {
            accepted.load(Ordering::SeqCst) == 50
        })
        .await;
        let Some(b) = Browser::desktop(&s.url).await else {
            return;
        };
        sign_in(&b, &admin).await;
        b.goto("/ui/destinations").await;
        b.wait_for_text("main", "webhook", Duration::from_secs(5))
            .await;
        b.screenshot("destinations").await;
        b.click("a[href='/ui/destinations/hook']").await;
        b.wait_for_text("#dead-letters", "HTTP 400", Duration::from_secs(5))
            .await;
        b.screenshot("destination-hook").await;
        confirm_and_submit(&b, "#dead-letters form").await;
        b.wait_for_text("#outcome", "is resolved", Duration::from_secs(20))
            .await;
        b.wait_for_text("#dead-letters", "resolved", Duration::from_secs(5))
            .await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            100,
            "the retried batch arrived"
        );
        b.screenshot("destination-retried").await;
        b.goto("/ui/sources").await;
        let text = b
            .wait_for_text("#sources", "billing-sse", Duration::from_secs(5))
            .await;
        assert!(
            text.contains("evt_0192") && text.contains("Disconnected"),
            "{text}"
        );
        b.screenshot("sources").await;
        b.assert_no_console_errors().await;
        b.close().await;
    }

    /// Verify a tampered store from the Verify page: the progress, then the
    /// problem located by stream and seq.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_page_locates_a_tampered_event() {
        let dir = tempfile::tempdir().unwrap();
        let admin = create_key(dir.path(), "admin");
        let s = Server::start(dir.path(), &[]).await;
        post_events(&s.url, &admin, "t", 10).await;
        let conn = rusqlite::Connection::open(dir.path().join("trailkeep.db")).unwrap();
        let changed = conn
            .execute(
                "UPDATE events SET body = replace(body, '\"t-6\"', '\"t-X\"') WHERE seq = 7 AND stream_id = (SELECT id FROM streams WHERE name = 't')",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
        drop(conn);
        let Some(b) = Browser::desktop(&s.url).await else {
            return;
        };
        sign_in(&b, &admin).await;
        b.goto("/ui/verify").await;
        b.screenshot("verify").await;
        confirm_and_submit(&b, "form[action='/ui/verify']").await;
        // verify.js swaps the finished report in.
        b.wait_for_text("#job", "problem(s) found", Duration::from_secs(30))
            .await;
        let row = b
            .js(
                "return [...document.querySelectorAll('#problems tbody tr')].map((r) => r.innerText).join('\\n');",
                vec![],
            )
            .await;
        let row = row.as_str().unwrap();
        assert!(
            row.lines().any(|l| l.starts_with("t\t7\thash_mismatch")),
            "located by stream and seq: {row:?}"
        );
        b.screenshot("verify-report").await;
        b.assert_no_console_errors().await;
        b.close().await;
    }
}
