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
