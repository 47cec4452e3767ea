//! The web console (`/ui/`) over plain HTTP, as an attacker or a script
//! sees it: sign-in, the session cookie, CSRF and origin checks, the
//! Content-Security-Policy, and the same per-stream authorization as the
//! API. The real-browser tests are in tests/ui.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::console::{client, get, hidden, set_cookie_line, sign_in};
use common::{Server, create_key, trailkeep, wait_for};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN};

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

#[tokio::test]
async fn console_needs_a_session_and_sends_a_strict_csp() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let s = Server::start(dir.path(), &[]).await;
    let c = client();

    let res = c.get(format!("{}/ui/", s.url)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/ui/login?next=%2Fui%2F");

    let res = c.get(format!("{}/ui/login", s.url)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "CSP {csp} lacks {part}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let page = res.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains(" style="),
        "no inline script or style"
    );

    let session = sign_in(&s.url, &admin).await;
    let res = c.post(format!("{}/ui/login", s.url)).send().await.unwrap();
    assert!(res.status().is_client_error());

    // The cookie is HttpOnly, SameSite=Strict, scoped to /ui, not Secure
    // on plain HTTP.
    let form = c.get(format!("{}/ui/login", s.url)).send().await.unwrap();
    let (lc, _) = set_cookie_line(&form, "tk_login").unwrap();
    let page = form.text().await.unwrap();
    let res = c
        .post(format!("{}/ui/login", s.url))
        .header(COOKIE, &lc)
        .form(&[
            ("token", admin.as_str()),
            ("login", &hidden(&page, "login")),
        ])
        .send()
        .await
        .unwrap();
    let (_, line) = set_cookie_line(&res, "tk_session").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(line.contains(attr), "{line} lacks {attr}");
    }
    assert!(!line.contains("Secure"), "{line}");

    let (status, page) = get(&s.url, "/ui/", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Overview") && page.contains("href=\"/ui/keys\""),
        "{page}"
    );
    assert!(!page.contains(&admin), "the token never appears in a page");

    // An unknown or forged session is no session.
    let (status, _) = get(&s.url, "/ui/", "tk_session=forged").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_refuses_bad_keys_forged_forms_and_ingest_keys() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let ingest = create_key(dir.path(), "ingest");
    let s = Server::start(dir.path(), &[]).await;
    let c = client();
    let form = c.get(format!("{}/ui/login", s.url)).send().await.unwrap();
    let (lc, _) = set_cookie_line(&form, "tk_login").unwrap();
    let login = hidden(&form.text().await.unwrap(), "login");

    let attempt = async |cookie: Option<&str>, token: &str, login: &str, origin: Option<&str>| {
        let mut r = c
            .post(format!("{}/ui/login", s.url))
            .form(&[("token", token), ("login", login)]);
        if let Some(ck) = cookie {
            r = r.header(COOKIE, ck);
        }
        if let Some(o) = origin {
            r = r.header(ORIGIN, o);
        }
        let res = r.send().await.unwrap();
        let status = res.status();
        let session = set_cookie_line(&res, "tk_session");
        (status, session, res.text().await.unwrap())
    };
    // Login CSRF: no double-submit cookie, a wrong one, another origin.
    let (st, sess, _) = attempt(None, &admin, &login, None).await;
    assert_eq!((st, sess.is_some()), (StatusCode::FORBIDDEN, false));
    let (st, sess, _) = attempt(Some("tk_login=other"), &admin, &login, None).await;
    assert_eq!((st, sess.is_some()), (StatusCode::FORBIDDEN, false));
    let (st, sess, _) = attempt(Some(&lc), &admin, &login, Some("http://evil.example")).await;
    assert_eq!((st, sess.is_some()), (StatusCode::FORBIDDEN, false));
    // A wrong or revoked key, and an ingest key.
    let (st, sess, page) = attempt(Some(&lc), "tk_0123456789abcdef_nope", &login, None).await;
    assert_eq!((st, sess.is_some()), (StatusCode::UNAUTHORIZED, false));
    assert!(page.contains("not an active API key"), "{page}");
    let (st, sess, page) = attempt(Some(&lc), &ingest, &login, None).await;
    assert_eq!((st, sess.is_some()), (StatusCode::FORBIDDEN, false));
    assert!(page.contains("ingest key"), "{page}");
    // The same form, honestly sent, works.
    let (st, sess, _) = attempt(Some(&lc), &admin, &login, Some(&s.url)).await;
    assert_eq!((st, sess.is_some()), (StatusCode::SEE_OTHER, true));
    // The sign-in is on the record.
    let audit = client()
        .get(format!("{}/v1/streams/_audit/events", s.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sign_ins = audit
        .lines()
        .filter(|l| l.contains("\"type\":\"console.signed_in\""))
        .count();
    assert_eq!(
        sign_ins, 1,
        "one sign-in succeeded, one is recorded: {audit}"
    );
}

#[tokio::test]
async fn forged_admin_forms_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let s = Server::start(dir.path(), &[]).await;
    let session = sign_in(&s.url, &admin).await;
    let (_, page) = get(&s.url, "/ui/keys", &session).await;
    let csrf = hidden(&page, "csrf");
    let keys = || {
        let out = trailkeep(dir.path(), &["keys", "list", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .len()
    };
    let before = keys();
    let c = client();
    let create = async |csrf: &str, origin: Option<&str>, site: Option<&str>| {
        let mut r = c
            .post(format!("{}/ui/keys", s.url))
            .header(COOKIE, &session)
            .form(&[("csrf", csrf), ("scope", "admin"), ("stream", "*")]);
        if let Some(o) = origin {
            r = r.header(ORIGIN, o);
        }
        if let Some(x) = site {
            r = r.header("sec-fetch-site", x);
        }
        let res = r.send().await.unwrap();
        (res.status(), res.text().await.unwrap())
    };
    assert_eq!(create("", None, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(create("forged", None, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        create(&csrf, Some("http://evil.example"), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        create(&csrf, None, Some("cross-site")).await.0,
        StatusCode::FORBIDDEN
    );
    // Without a session cookie at all: to the sign-in page.
    let res = c
        .post(format!("{}/ui/keys", s.url))
        .form(&[("csrf", csrf.as_str()), ("scope", "admin"), ("stream", "*")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(keys(), before, "no forged request created a key");
    // The real form creates one and shows its token once.
    let (status, page) = create(&csrf, Some(&s.url), Some("same-origin")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("shown only this once"), "{page}");
    assert_eq!(keys(), before + 1);
    let token_at = page.find("value=\"tk_").expect("token shown");
    let token = &page[token_at + 7..];
    let token = &token[..token.find('"').unwrap()];
    let (_, again) = get(&s.url, "/ui/keys", &session).await;
    assert!(!again.contains(token), "the token is shown once only");
    // Sign-out needs the token too.
    let res = c
        .post(format!("{}/ui/logout", s.url))
        .header(COOKIE, &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn read_and_stream_bound_keys_see_only_what_the_api_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let bound = |scope: &str| {
        let out = trailkeep(
            dir.path(),
            &[
                "keys",
                "create",
                "--scope",
                scope,
                "--stream",
                "alpha-orders",
            ],
        );
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let read_alpha = bound("read");
    let admin_alpha = bound("admin");
    let s = Server::start(dir.path(), &[]).await;
    post_events(&s.url, &admin, "alpha-orders", 3).await;
    post_events(&s.url, &admin, "zeta-secret-stream", 2).await;

    let read = sign_in(&s.url, &read_alpha).await;
    let (status, page) = get(&s.url, "/ui/", &read).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("alpha-orders"));
    assert!(
        !page.contains("zeta-secret-stream"),
        "a stream-bound key sees no other stream's name"
    );
    assert!(
        !page.contains("/ui/keys") && !page.contains("/ui/verify"),
        "a read key sees no admin page"
    );
    assert_eq!(
        get(&s.url, "/ui/keys", &read).await.0,
        StatusCode::FORBIDDEN
    );
    let (_, filtered) = get(&s.url, "/ui/?q=zeta", &read).await;
    assert!(!filtered.contains("zeta-secret-stream"));

    // A stream-bound admin manages keys of its stream only and cannot mint
    // a key for every stream.
    let adm = sign_in(&s.url, &admin_alpha).await;
    let (status, page) = get(&s.url, "/ui/keys", &adm).await;
    assert_eq!(status, StatusCode::OK);
    let admin_id = &admin[3..19];
    assert!(
        !page.contains(admin_id),
        "a key for * is not listed to a stream-bound admin"
    );
    let csrf = hidden(&page, "csrf");
    let res = client()
        .post(format!("{}/ui/keys", s.url))
        .header(COOKIE, &adm)
        .form(&[("csrf", csrf.as_str()), ("scope", "admin"), ("stream", "*")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = client()
        .post(format!("{}/ui/keys/{admin_id}/revoke", s.url))
        .header(COOKIE, &adm)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "another scope's key is not found"
    );

    // Revoking a key ends its sessions.
    let out = trailkeep(dir.path(), &["keys", "revoke", &read_alpha[3..19]]);
    assert!(out.status.success());
    wait_for(
        Duration::from_secs(5),
        "the revoked key's session to end",
        async || get(&s.url, "/ui/", &read).await.0 == StatusCode::SEE_OTHER,
    )
    .await;
}

#[tokio::test]
async fn the_overview_pages_a_thousand_streams() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin");
    let s = Server::start(dir.path(), &[]).await;
    let c = client();
    let posts = (0..1000).map(|i| {
        let (c, url, admin) = (c.clone(), s.url.clone(), admin.clone());
        async move {
            let res = c
                .post(format!("{url}/v1/streams/tenant-{i:04}/events"))
                .bearer_auth(&admin)
                .json(&serde_json::json!({"id": "e1", "type": "t", "time": "2026-12-01T00:00:00Z", "data": {}}))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success());
        }
    });
    use futures_util::StreamExt as _;
    futures_util::stream::iter(posts)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let session = sign_in(&s.url, &admin).await;
    // The log's own streams (`_audit`, `_trailkeep`) are listed too.
    let (status, page) = get(&s.url, "/ui/", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("1002 streams."), "the total is shown");
    assert!(page.contains("Page 1 of 11"));
    let (_, page) = get(&s.url, "/ui/?q=tenant-", &session).await;
    assert!(page.contains("1000 streams matching"));
    assert!(page.contains(">tenant-0000<") && page.contains(">tenant-0099<"));
    assert!(
        !page.contains(">tenant-0100<"),
        "one page holds 100 streams"
    );
    assert!(page.contains("Page 1 of 10"));
    let (_, last) = get(&s.url, "/ui/?q=tenant-&page=10", &session).await;
    assert!(last.contains(">tenant-0999<") && !last.contains(">tenant-0000<"));
    let (_, filtered) = get(&s.url, "/ui/?q=tenant-0123", &session).await;
    assert!(filtered.contains("1 stream matching"), "{filtered}");
    // Past the last page: the last page, not an error.
    assert_eq!(
        get(&s.url, "/ui/?page=99", &session).await.0,
        StatusCode::OK
    );
}
