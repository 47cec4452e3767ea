//! Console sessions: signing in with an API key, the session cookie, and
//! CSRF tokens.
//!
//! A session is a random 256-bit token in an `HttpOnly`, `SameSite=Strict`
//! cookie (`Secure` under TLS), scoped to `/ui`. The server keeps, per
//! session, the SHA-256 of that token, the key id it was opened with, and a
//! CSRF token; never the API key's secret. Every request looks the key up
//! again ([`crate::auth::Authenticator::active`]), so a revoked key's
//! sessions end within a second. Sessions live in this process's memory:
//! a restart or another node signs people out (ARCHITECTURE.md "Console").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(super) const COOKIE: &str = "tk_session";
/// The sign-in form's double-submit cookie (CSRF before a session exists).
pub(super) const LOGIN_COOKIE: &str = "tk_login";
/// A session unused this long ends.
pub(super) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub(super) const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// At most this many sessions; the least recently used go first.
const MAX_SESSIONS: usize = 10_000;
/// At most this many sessions per key.
const MAX_PER_KEY: usize = 16;

/// A random 256-bit token, base64url.
pub(super) fn random_token() -> String {
    let mut b = [0u8; 32];
    // The OS RNG failing is unrecoverable: no session can be made safely.
    getrandom::fill(&mut b)
        .unwrap_or_else(|e| panic!("operating system random source failed: {e}"));
    URL_SAFE_NO_PAD.encode(b)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether two secrets are equal, in constant time.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

struct Session {
    key_id: String,
    csrf: String,
    opened: Instant,
    seen: Instant,
}

/// What a live session holds.
#[derive(Debug, Clone)]
pub(super) struct Opened {
    /// The key it was opened with.
    pub(super) key_id: String,
    /// Its CSRF token (every form carries it).
    pub(super) csrf: String,
}

/// Open sessions, by the SHA-256 of their token.
#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for `key_id`; returns its cookie token.
    pub(super) fn open(&self, key_id: &str) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| live(s, now));
        // One key cannot push everyone else out: past its own cap, its
        // least recently used session goes.
        let own: Vec<_> = map
            .iter()
            .filter(|(_, s)| s.key_id == key_id)
            .map(|(k, s)| (*k, s.seen))
            .collect();
        if own.len() >= MAX_PER_KEY
            && let Some((oldest, _)) = own.iter().min_by_key(|(_, seen)| *seen)
        {
            map.remove(oldest);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&token),
            Session {
                key_id: key_id.to_owned(),
                csrf: random_token(),
                opened: now,
                seen: now,
            },
        );
        token
    }

    /// The live session `token` names; `touch`: marked as used now (a
    /// page's own background refresh is not use, so an open tab still
    /// idles out).
    pub(super) fn get(&self, token: &str, touch: bool) -> Option<Opened> {
        let now = Instant::now();
        let mut map = self.lock();
        let d = digest(token);
        let s = map.get_mut(&d)?;
        if !live(s, now) {
            map.remove(&d);
            return None;
        }
        if touch {
            s.seen = now;
        }
        Some(Opened {
            key_id: s.key_id.clone(),
            csrf: s.csrf.clone(),
        })
    }

    /// Ends the session `token` names.
    pub(super) fn close(&self, token: &str) {
        self.lock().remove(&digest(token));
    }

    /// Ends every session opened with `key_id` (its key was revoked).
    pub(super) fn close_key(&self, key_id: &str) {
        self.lock().retain(|_, s| s.key_id != key_id);
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.opened) < ABSOLUTE
}

/// The value of cookie `name` in the request, if any.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the console: `HttpOnly`, `SameSite=Strict`,
/// path `/ui`, `Secure` under TLS; `max_age` 0 deletes it.
pub(super) fn set_cookie(name: &str, value: &str, secure: bool, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a state-changing request comes from the console's own pages.
/// A browser's `Sec-Fetch-Site` decides when sent (every current browser
/// sends it); otherwise `Origin`, when sent, must be this host (`null`, as
/// sent from sandboxed or privacy-restricted contexts, is refused). The
/// CSRF token is checked besides.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(o), Some(h)) => {
            let authority = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            authority == Some(h)
        }
        _ => false,
    }
}

/// Where to go after signing in: a console path only, never another site.
pub(super) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/ui/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_find_and_close() {
        let s = Sessions::default();
        let t = s.open("k1");
        let o = s.get(&t, true).expect("open");
        assert_eq!(o.key_id, "k1");
        assert_ne!(o.csrf, t, "the CSRF token is not the session token");
        assert!(s.get("nope", true).is_none());
        s.close(&t);
        assert!(s.get(&t, true).is_none());
        let a = s.open("k2");
        let b = s.open("k3");
        s.close_key("k2");
        assert!(s.get(&a, true).is_none());
        assert!(s.get(&b, true).is_some());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"), "a prefix is not the secret");
        assert!(!same("", "a"));
        assert!(
            same("", ""),
            "two empty strings are equal (callers never hand out empty tokens)"
        );
    }

    #[test]
    fn sessions_idle_out_and_end_after_twelve_hours() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let s = |opened: Instant, seen: Instant| Session {
            key_id: "k".into(),
            csrf: "c".into(),
            opened,
            seen,
        };
        assert!(live(&s(t0, t0), t0 + 29 * min));
        assert!(!live(&s(t0, t0), t0 + 30 * min), "30 idle minutes end it");
        assert!(!live(&s(t0, t0), t0 + 31 * min));
        // Used all along, it still ends 12 hours after sign-in.
        let used = t0 + 11 * 60 * min + 50 * min;
        assert!(live(&s(t0, used), t0 + 11 * 60 * min + 55 * min));
        assert!(!live(&s(t0, used), t0 + 12 * 60 * min));
        assert_eq!(IDLE, 30 * min);
        assert_eq!(ABSOLUTE, 12 * 60 * min);
    }

    #[test]
    fn the_least_recently_used_session_goes_first_when_full() {
        let s = Sessions::default();
        let first = s.open("first");
        let second = s.open("second");
        assert!(s.get(&first, true).is_some() && s.get(&second, true).is_some());
        // `second` is now the least recently used.
        assert!(s.get(&first, true).is_some());
        for i in 0..MAX_SESSIONS - 2 {
            s.open(&format!("k{i}"));
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        let last = s.open("last");
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        assert!(
            s.get(&second, true).is_none(),
            "the least recently used went"
        );
        assert!(s.get(&first, true).is_some() && s.get(&last, true).is_some());
    }

    #[test]
    fn one_key_keeps_at_most_its_cap_and_refreshes_do_not_count_as_use() {
        let s = Sessions::default();
        let other = s.open("other");
        let first = s.open("k");
        let mut rest = Vec::new();
        for _ in 1..MAX_PER_KEY {
            rest.push(s.open("k"));
        }
        assert!(s.get(&first, false).is_some(), "at the cap, all are kept");
        let newest = s.open("k");
        assert!(
            s.get(&first, false).is_none(),
            "past it, the key's oldest went"
        );
        assert!(s.get(&newest, false).is_some() && s.get(&other, false).is_some());
        assert_eq!(
            s.lock().values().filter(|x| x.key_id == "k").count(),
            MAX_PER_KEY
        );
        // A refresh leaves `seen` alone; a request by the user moves it.
        let seen = |t: &str| s.lock()[&digest(t)].seen;
        let before = seen(&other);
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get(&other, false).is_some());
        assert_eq!(seen(&other), before);
        assert!(s.get(&other, true).is_some());
        assert!(seen(&other) > before);
    }

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(
            safe_next(Some("/ui/events?stream=a")),
            "/ui/events?stream=a"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/ui//evil.example",
            "/v1/streams",
            "/ui/\\evil",
            "/ui/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().expect("header"));
        assert!(
            same_origin(&h),
            "no Origin: a same-origin form post in older browsers"
        );
        h.insert(
            header::ORIGIN,
            "http://127.0.0.1:8080".parse().expect("header"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            "http://evil.example".parse().expect("header"),
        );
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            "http://127.0.0.1:8080".parse().expect("header"),
        );
        h.insert("sec-fetch-site", "cross-site".parse().expect("header"));
        assert!(!same_origin(&h));
        // Chromium sends `Origin: null` on a same-origin form post from a
        // page with `Referrer-Policy: no-referrer`: Sec-Fetch-Site decides.
        h.insert(header::ORIGIN, "null".parse().expect("header"));
        h.insert("sec-fetch-site", "same-origin".parse().expect("header"));
        assert!(same_origin(&h));
        h.remove("sec-fetch-site");
        assert!(!same_origin(&h), "null without Sec-Fetch-Site is refused");
        h.insert("sec-fetch-site", "same-site".parse().expect("header"));
        assert!(!same_origin(&h), "another subdomain is not this console");
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; tk_session=xyz; b=2".parse().expect("header"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(set_cookie(COOKIE, "v", true, IDLE).contains("; Secure"));
        assert!(!set_cookie(COOKIE, "v", false, IDLE).contains("Secure"));
    }
}
