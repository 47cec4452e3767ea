//! Node-to-node ingest forwarding, authenticated with a key only the nodes
//! hold.
//!
//! A node that does not own a stream forwards the request to the owner
//! named in the store's `nodes` table. Whoever can write that table can
//! point the URL anywhere, so a forward carries no client credential: the
//! forwarder authenticates the client itself and sends the key's *id*,
//! signed with HMAC-SHA256 under a key derived from the checkpoint signing
//! key (which every node of a cluster must share, and which neither the
//! database nor the bucket holds). The owner checks the signature, looks
//! the key up again (a revoked key stays refused) and signs its answer,
//! bound to the request's signature; the forwarder relays only an answer
//! the owner signed. So a repointed URL gets no token and cannot fake an
//! acknowledgement, and a client cannot claim to be a node.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use sha2::Digest as _;

/// Marks a request one node sent on to another (the node's id): the
/// receiver commits it itself, whoever it believes owns the stream, so a
/// forward never loops.
pub(super) const FORWARDED_BY: HeaderName = HeaderName::from_static("trailkeep-forwarded-by");
/// The id of the API key the forwarding node authenticated.
const FORWARDED_KEY: HeaderName = HeaderName::from_static("trailkeep-forwarded-key");
/// When the forward was signed (Unix milliseconds).
const FORWARDED_AT: HeaderName = HeaderName::from_static("trailkeep-forwarded-at");
/// SHA-256 of the body as sent (hex).
const FORWARDED_BODY: HeaderName = HeaderName::from_static("trailkeep-forwarded-body-sha256");
/// 16 random bytes (base64url): no two forwards sign alike.
const FORWARDED_NONCE: HeaderName = HeaderName::from_static("trailkeep-forwarded-nonce");
/// The forwarding node's signature over all of the above, the node it is
/// for, and every value of the body headers.
const FORWARDED_MAC: HeaderName = HeaderName::from_static("trailkeep-forwarded-mac");
/// The owner's signature over its answer.
pub(super) const ANSWER_MAC: HeaderName = HeaderName::from_static("trailkeep-answer-mac");

/// How far a forward's time may be from the receiver's clock. Within it a
/// node takes each signed forward once ([`Replays`]); outside it, not at
/// all.
pub const FORWARD_WINDOW: Duration = Duration::from_secs(60);

/// What the derived key is for (changing it invalidates every signature).
pub const PURPOSE: &str = "trailkeep node-to-node forwarding v1";

/// The key nodes sign forwards and their answers with.
#[derive(Clone)]
pub struct PeerKey([u8; 32]);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(redacted)")
    }
}

/// The signature a forward was sent with (its answer is bound to it).
pub(super) type RequestMac = [u8; 32];

/// A forward whose headers carry a valid signature; its body is checked
/// against the signed digest once read.
#[derive(Debug)]
pub(super) struct Forwarded {
    /// The node that sent it.
    pub(super) from: String,
    /// The API key that node authenticated.
    pub(super) key_id: String,
    at: i64,
    digest: [u8; 32],
    mac: RequestMac,
}

impl Forwarded {
    /// Whether `body` is the body that was signed.
    pub(super) fn body_matches(&self, body: &[u8]) -> bool {
        sha2::Sha256::digest(body).as_slice() == self.digest
    }
}

/// The request's headers the receiver parses the body by, every value.
pub(super) struct BodyHeaders<'a> {
    pub(super) content_type: Vec<&'a [u8]>,
    pub(super) content_encoding: Vec<&'a [u8]>,
}

impl<'a> BodyHeaders<'a> {
    pub(super) fn of(headers: &'a HeaderMap) -> Self {
        let all = |n| headers.get_all(n).iter().map(|v| v.as_bytes()).collect();
        Self {
            content_type: all(axum::http::header::CONTENT_TYPE),
            content_encoding: all(axum::http::header::CONTENT_ENCODING),
        }
    }
}

/// A list of values as one signed part: the count, then each value with
/// its length.
fn list(values: &[&[u8]]) -> Vec<u8> {
    let mut out = (values.len() as u64).to_be_bytes().to_vec();
    for v in values {
        out.extend_from_slice(&(v.len() as u64).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// Who sends a forward, to whom, for which key and stream.
#[derive(Clone, Copy)]
pub(super) struct Route<'a> {
    pub(super) from: &'a str,
    pub(super) to: &'a str,
    pub(super) key_id: &'a str,
    pub(super) stream: &'a str,
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl PeerKey {
    /// A key from 32 secret bytes (see [`PURPOSE`]).
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// HMAC-SHA256 over length-prefixed parts: no two different lists of
    /// parts sign the same bytes.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    fn request_mac(
        &self,
        r: Route<'_>,
        (at_ms, nonce): (i64, &[u8]),
        body: &BodyHeaders<'_>,
        digest: &[u8; 32],
    ) -> RequestMac {
        self.mac(&[
            b"forward",
            r.from.as_bytes(),
            r.to.as_bytes(),
            r.key_id.as_bytes(),
            r.stream.as_bytes(),
            at_ms.to_string().as_bytes(),
            nonce,
            &list(&body.content_type),
            &list(&body.content_encoding),
            digest,
        ])
    }

    /// The headers that sign a forward of `body` along `route` (the body
    /// headers are sent alongside, every value as it came), and the
    /// signature its answer must be bound to.
    pub(super) fn sign_request(
        &self,
        route: Route<'_>,
        body_headers: &BodyHeaders<'_>,
        body: &[u8],
    ) -> (Vec<(HeaderName, String)>, RequestMac) {
        let at = now_ms();
        let mut nonce = [0u8; 16];
        // The OS RNG failing is unrecoverable (as for API keys).
        getrandom::fill(&mut nonce)
            .unwrap_or_else(|e| panic!("operating system random source failed: {e}"));
        let digest: [u8; 32] = sha2::Sha256::digest(body).into();
        let mac = self.request_mac(route, (at, &nonce), body_headers, &digest);
        let headers = vec![
            (FORWARDED_BY, route.from.to_owned()),
            (FORWARDED_KEY, route.key_id.to_owned()),
            (FORWARDED_AT, at.to_string()),
            (FORWARDED_NONCE, URL_SAFE_NO_PAD.encode(nonce)),
            (FORWARDED_BODY, hex::encode(digest)),
            (FORWARDED_MAC, URL_SAFE_NO_PAD.encode(mac)),
        ];
        (headers, mac)
    }

    /// Checks a forward's signature (before its body is read) as node `me`:
    /// `None` when any header is missing, repeated or malformed, the time is
    /// outside [`FORWARD_WINDOW`], or the signature is not this key's for a
    /// forward to `me`.
    pub(super) fn check_request(
        &self,
        headers: &HeaderMap,
        me: &str,
        stream: &str,
    ) -> Option<Forwarded> {
        self.check_request_at(headers, me, stream, now_ms())
    }

    fn check_request_at(
        &self,
        headers: &HeaderMap,
        me: &str,
        stream: &str,
        now: i64,
    ) -> Option<Forwarded> {
        let text = |n: &HeaderName| {
            let mut values = headers.get_all(n).iter();
            let v = values.next()?;
            values.next().is_none().then(|| v.to_str().ok()).flatten()
        };
        let from = text(&FORWARDED_BY)?;
        let key_id = text(&FORWARDED_KEY)?;
        let at: i64 = text(&FORWARDED_AT)?.parse().ok()?;
        let nonce = URL_SAFE_NO_PAD.decode(text(&FORWARDED_NONCE)?).ok()?;
        let digest: [u8; 32] = hex::decode(text(&FORWARDED_BODY)?).ok()?.try_into().ok()?;
        let mac: [u8; 32] = URL_SAFE_NO_PAD
            .decode(text(&FORWARDED_MAC)?)
            .ok()?
            .try_into()
            .ok()?;
        if now.abs_diff(at) > FORWARD_WINDOW.as_millis() as u64 {
            return None;
        }
        let route = Route {
            from,
            to: me,
            key_id,
            stream,
        };
        let expected = self.request_mac(route, (at, &nonce), &BodyHeaders::of(headers), &digest);
        let same: bool = subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..]).into();
        same.then(|| Forwarded {
            from: from.to_owned(),
            key_id: key_id.to_owned(),
            at,
            digest,
            mac,
        })
    }

    fn answer_mac(&self, node: &str, request: &RequestMac, answer: &Answer<'_>) -> [u8; 32] {
        self.mac(&[
            b"answer",
            node.as_bytes(),
            &answer.status.to_be_bytes(),
            request,
            &list(&answer.retry_after),
            &list(&answer.content_type),
            sha2::Sha256::digest(answer.body).as_slice(),
        ])
    }

    /// The [`ANSWER_MAC`] value with which `node` answers `forward`.
    pub(super) fn sign_answer(
        &self,
        node: &str,
        forward: &Forwarded,
        answer: &Answer<'_>,
    ) -> String {
        URL_SAFE_NO_PAD.encode(self.answer_mac(node, &forward.mac, answer))
    }

    /// Whether `mac` (the [`ANSWER_MAC`] header) proves that `node`, holding
    /// this key, gave this answer to the forward signed `request`.
    pub(super) fn check_answer(
        &self,
        node: &str,
        request: &RequestMac,
        answer: &Answer<'_>,
        mac: Option<&[u8]>,
    ) -> bool {
        let Some(mac) = mac.and_then(|m| URL_SAFE_NO_PAD.decode(m).ok()) else {
            return false;
        };
        let expected = self.answer_mac(node, request, answer);
        subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..]).into()
    }
}

/// What an answer's signature covers: everything the forwarder relays.
pub(super) struct Answer<'a> {
    pub(super) status: u16,
    pub(super) retry_after: Vec<&'a [u8]>,
    pub(super) content_type: Vec<&'a [u8]>,
    pub(super) body: &'a [u8],
}

/// The forwards a node has taken, by signature, in buckets of their time:
/// a forward is taken once. Entries older than [`FORWARD_WINDOW`] (which
/// would be refused for their time anyway) are dropped, so memory is
/// bounded by the forward rate over one window and a bucket.
#[derive(Debug, Default)]
pub struct Replays(std::sync::Mutex<HashMap<i64, HashSet<RequestMac>>>);

/// The width of a [`Replays`] bucket, in ms.
const BUCKET_MS: i64 = 10_000;

impl Replays {
    /// Whether `f` is taken for the first time (and remembers it).
    pub(super) fn first_time(&self, f: &Forwarded) -> bool {
        self.first_time_at(f, now_ms())
    }

    fn first_time_at(&self, f: &Forwarded, now: i64) -> bool {
        let oldest = (now - FORWARD_WINDOW.as_millis() as i64).div_euclid(BUCKET_MS);
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|bucket, _| *bucket >= oldest);
        seen.entry(f.at.div_euclid(BUCKET_MS))
            .or_default()
            .insert(f.mac)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const KEY: PeerKey = PeerKey([9; 32]);
    const ROUTE: Route<'static> = Route {
        from: "n1",
        to: "n2",
        key_id: "key1",
        stream: "s",
    };

    fn signed(body: &[u8]) -> (HeaderMap, RequestMac) {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let (sig, mac) = KEY.sign_request(ROUTE, &BodyHeaders::of(&h), body);
        for (n, v) in sig {
            h.insert(n, HeaderValue::from_str(&v).expect("header text"));
        }
        (h, mac)
    }

    fn at(h: &HeaderMap) -> i64 {
        h[&FORWARDED_AT]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("a number")
    }

    #[test]
    fn a_signed_forward_checks_and_names_its_node_and_key() {
        let (h, _) = signed(b"[]");
        let f = KEY.check_request(&h, "n2", "s").expect("valid");
        assert_eq!((f.from.as_str(), f.key_id.as_str()), ("n1", "key1"));
        assert!(f.body_matches(b"[]"));
        assert!(!f.body_matches(b"[{}]"), "another body");
    }

    #[test]
    fn any_change_to_a_signed_forward_is_refused() {
        let (h, _) = signed(b"[]");
        assert!(
            KEY.check_request(&h, "n2", "other").is_none(),
            "another stream"
        );
        assert!(KEY.check_request(&h, "n3", "s").is_none(), "another node");
        assert!(
            PeerKey([8; 32]).check_request(&h, "n2", "s").is_none(),
            "another key"
        );
        for (name, value) in [
            (FORWARDED_BY, "n3"),
            (FORWARDED_KEY, "key2"),
            (FORWARDED_AT, "1"),
            (FORWARDED_NONCE, "AAAAAAAAAAAAAAAAAAAAAA"),
            (FORWARDED_BODY, "00"),
            (FORWARDED_MAC, "AAAA"),
            (axum::http::header::CONTENT_TYPE, "application/x-ndjson"),
            (axum::http::header::CONTENT_ENCODING, "gzip"),
        ] {
            let mut changed = h.clone();
            changed.insert(
                name.clone(),
                HeaderValue::from_str(value).expect("header text"),
            );
            assert!(
                KEY.check_request(&changed, "n2", "s").is_none(),
                "{name} changed to {value}"
            );
        }
        for name in [
            FORWARDED_BY,
            FORWARDED_KEY,
            FORWARDED_AT,
            FORWARDED_NONCE,
            FORWARDED_BODY,
            FORWARDED_MAC,
        ] {
            let mut missing = h.clone();
            missing.remove(&name);
            assert!(
                KEY.check_request(&missing, "n2", "s").is_none(),
                "{name} missing"
            );
            let mut twice = h.clone();
            twice.append(&name, h[&name].clone());
            assert!(
                KEY.check_request(&twice, "n2", "s").is_none(),
                "{name} twice"
            );
        }
        // A value added to a body header the receiver parses by (a second
        // Content-Encoding, say) is not the signed request.
        for name in [
            axum::http::header::CONTENT_TYPE,
            axum::http::header::CONTENT_ENCODING,
        ] {
            let mut added = h.clone();
            added.append(&name, HeaderValue::from_static("identity"));
            assert!(
                KEY.check_request(&added, "n2", "s").is_none(),
                "{name} added"
            );
        }
    }

    #[test]
    fn two_forwards_of_the_same_request_sign_differently() {
        let (a, mac_a) = signed(b"[]");
        let (b, mac_b) = signed(b"[]");
        assert_ne!(mac_a, mac_b);
        assert_ne!(a[&FORWARDED_NONCE], b[&FORWARDED_NONCE]);
    }

    #[test]
    fn a_forward_is_stamped_with_the_wall_clock_and_the_key_never_shown() {
        let (h, _) = signed(b"[]");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        assert!(
            (now - at(&h)).abs() < 5_000,
            "stamped {}, now {now}",
            at(&h)
        );
        assert_eq!(format!("{KEY:?}"), "PeerKey(redacted)");
    }

    #[test]
    fn a_forward_is_taken_only_within_the_window() {
        let (h, _) = signed(b"[]");
        let at = at(&h);
        let window = FORWARD_WINDOW.as_millis() as i64;
        for (now, ok) in [
            (at, true),
            (at + window, true),
            (at - window, true),
            (at + window + 1, false),
            (at - window - 1, false),
        ] {
            assert_eq!(
                KEY.check_request_at(&h, "n2", "s", now).is_some(),
                ok,
                "{} ms after signing",
                now - at
            );
        }
    }

    #[test]
    fn a_forward_is_taken_once_and_forgotten_only_past_the_window() {
        let (h, _) = signed(b"[]");
        let f = KEY.check_request(&h, "n2", "s").expect("valid");
        let (other, _) = signed(b"[]");
        let g = KEY.check_request(&other, "n2", "s").expect("valid");
        let replays = Replays::default();
        let window = FORWARD_WINDOW.as_millis() as i64;
        assert!(replays.first_time(&f), "taken now, by the wall clock");
        assert!(!replays.first_time(&f), "a replay, by the wall clock");
        let replays = Replays::default();
        assert!(replays.first_time_at(&f, f.at));
        assert!(!replays.first_time_at(&f, f.at), "a replay");
        assert!(replays.first_time_at(&g, f.at), "another forward");
        assert!(
            !replays.first_time_at(&f, f.at + window),
            "still remembered at the window's end"
        );
        assert!(
            replays.first_time_at(&f, f.at + window + 2 * BUCKET_MS),
            "forgotten once its time alone refuses it"
        );
        assert_eq!(
            replays.0.lock().expect("lock").len(),
            1,
            "older buckets dropped"
        );
    }

    #[test]
    fn an_answer_is_bound_to_its_node_status_headers_forward_and_body() {
        let (h, mac) = signed(b"[]");
        let f = KEY.check_request(&h, "n2", "s").expect("valid");
        let answer = |status, retry: &'static [u8], body: &'static [u8]| Answer {
            status,
            retry_after: vec![retry],
            content_type: vec![b"application/json"],
            body,
        };
        let sig = KEY.sign_answer("owner", &f, &answer(200, b"1", b"{\"ok\":1}"));
        let check = |node, request: &RequestMac, a: &Answer<'_>, key: &PeerKey| {
            key.check_answer(node, request, a, Some(sig.as_bytes()))
        };
        let good = answer(200, b"1", b"{\"ok\":1}");
        assert!(check("owner", &mac, &good, &KEY));
        assert!(!check("other", &mac, &good, &KEY), "node");
        assert!(
            !check("owner", &mac, &answer(400, b"1", b"{\"ok\":1}"), &KEY),
            "status"
        );
        assert!(
            !check("owner", &mac, &answer(200, b"999", b"{\"ok\":1}"), &KEY),
            "retry-after"
        );
        let mut typed = answer(200, b"1", b"{\"ok\":1}");
        typed.content_type = vec![b"text/html"];
        assert!(!check("owner", &mac, &typed, &KEY), "content-type");
        assert!(!check("owner", &[0; 32], &good, &KEY), "forward");
        assert!(
            !check("owner", &mac, &answer(200, b"1", b"{\"ok\":2}"), &KEY),
            "body"
        );
        assert!(!check("owner", &mac, &good, &PeerKey([8; 32])), "key");
        assert!(!KEY.check_answer("owner", &mac, &good, None), "unsigned");
    }
}
