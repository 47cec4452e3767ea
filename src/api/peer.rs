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
/// The forwarding node's signature over all of the above.
const FORWARDED_MAC: HeaderName = HeaderName::from_static("trailkeep-forwarded-mac");
/// The owner's signature over its answer.
pub(super) const ANSWER_MAC: HeaderName = HeaderName::from_static("trailkeep-answer-mac");

/// How far a forward's time may be from the receiver's clock: bounds how
/// long a captured forward could be replayed (events with ids come back as
/// duplicates; TLS between nodes keeps them from being captured at all).
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
    digest: [u8; 32],
    mac: RequestMac,
}

impl Forwarded {
    /// Whether `body` is the body that was signed.
    pub(super) fn body_matches(&self, body: &[u8]) -> bool {
        sha2::Sha256::digest(body).as_slice() == self.digest
    }
}

/// The request's headers the receiver parses the body by.
pub(super) struct BodyHeaders<'a> {
    pub(super) content_type: &'a [u8],
    pub(super) content_encoding: &'a [u8],
}

impl<'a> BodyHeaders<'a> {
    pub(super) fn of(headers: &'a HeaderMap) -> Self {
        let get = |n| headers.get(n).map_or(&b""[..], |v| v.as_bytes());
        Self {
            content_type: get(axum::http::header::CONTENT_TYPE),
            content_encoding: get(axum::http::header::CONTENT_ENCODING),
        }
    }
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
        (from, key_id, stream): (&str, &str, &str),
        at_ms: i64,
        body: &BodyHeaders<'_>,
        digest: &[u8; 32],
    ) -> RequestMac {
        self.mac(&[
            b"forward",
            from.as_bytes(),
            key_id.as_bytes(),
            stream.as_bytes(),
            at_ms.to_string().as_bytes(),
            body.content_type,
            body.content_encoding,
            digest,
        ])
    }

    /// The headers that sign a forward of `body` for key `key_id` to
    /// stream `stream` (the body headers are sent alongside as they are),
    /// and the signature its answer must be bound to.
    pub(super) fn sign_request(
        &self,
        (from, key_id, stream): (&str, &str, &str),
        body_headers: &BodyHeaders<'_>,
        body: &[u8],
    ) -> (Vec<(HeaderName, String)>, RequestMac) {
        let at = now_ms();
        let digest: [u8; 32] = sha2::Sha256::digest(body).into();
        let mac = self.request_mac((from, key_id, stream), at, body_headers, &digest);
        let headers = vec![
            (FORWARDED_BY, from.to_owned()),
            (FORWARDED_KEY, key_id.to_owned()),
            (FORWARDED_AT, at.to_string()),
            (FORWARDED_BODY, hex::encode(digest)),
            (FORWARDED_MAC, URL_SAFE_NO_PAD.encode(mac)),
        ];
        (headers, mac)
    }

    /// Checks a forward's signature (before its body is read): `None` when
    /// any header is missing or malformed, the time is outside
    /// [`FORWARD_WINDOW`], or the signature is not this key's.
    pub(super) fn check_request(&self, headers: &HeaderMap, stream: &str) -> Option<Forwarded> {
        self.check_request_at(headers, stream, now_ms())
    }

    fn check_request_at(&self, headers: &HeaderMap, stream: &str, now: i64) -> Option<Forwarded> {
        let text = |n: &HeaderName| headers.get(n)?.to_str().ok();
        let from = text(&FORWARDED_BY)?;
        let key_id = text(&FORWARDED_KEY)?;
        let at: i64 = text(&FORWARDED_AT)?.parse().ok()?;
        let digest: [u8; 32] = hex::decode(text(&FORWARDED_BODY)?).ok()?.try_into().ok()?;
        let mac: [u8; 32] = URL_SAFE_NO_PAD
            .decode(text(&FORWARDED_MAC)?)
            .ok()?
            .try_into()
            .ok()?;
        if now.abs_diff(at) > FORWARD_WINDOW.as_millis() as u64 {
            return None;
        }
        let expected = self.request_mac(
            (from, key_id, stream),
            at,
            &BodyHeaders::of(headers),
            &digest,
        );
        let same: bool = subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..]).into();
        same.then(|| Forwarded {
            from: from.to_owned(),
            key_id: key_id.to_owned(),
            digest,
            mac,
        })
    }

    fn answer_mac(&self, node: &str, status: u16, request: &RequestMac, body: &[u8]) -> [u8; 32] {
        self.mac(&[
            b"answer",
            node.as_bytes(),
            &status.to_be_bytes(),
            request,
            sha2::Sha256::digest(body).as_slice(),
        ])
    }

    /// The [`ANSWER_MAC`] value with which `node` answers `forward`.
    pub(super) fn sign_answer(
        &self,
        node: &str,
        status: u16,
        forward: &Forwarded,
        body: &[u8],
    ) -> String {
        URL_SAFE_NO_PAD.encode(self.answer_mac(node, status, &forward.mac, body))
    }

    /// Whether `mac` (the [`ANSWER_MAC`] header) proves that `node`, holding
    /// this key, gave this answer to the forward signed `request`.
    pub(super) fn check_answer(
        &self,
        node: &str,
        status: u16,
        request: &RequestMac,
        body: &[u8],
        mac: Option<&[u8]>,
    ) -> bool {
        let Some(mac) = mac.and_then(|m| URL_SAFE_NO_PAD.decode(m).ok()) else {
            return false;
        };
        let expected = self.answer_mac(node, status, request, body);
        subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..]).into()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const KEY: PeerKey = PeerKey([9; 32]);

    fn signed(body: &[u8]) -> (HeaderMap, RequestMac) {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let (sig, mac) = KEY.sign_request(("n1", "key1", "s"), &BodyHeaders::of(&h), body);
        for (n, v) in sig {
            h.insert(n, HeaderValue::from_str(&v).expect("header text"));
        }
        (h, mac)
    }

    #[test]
    fn a_signed_forward_checks_and_names_its_node_and_key() {
        let (h, _) = signed(b"[]");
        let f = KEY.check_request(&h, "s").expect("valid");
        assert_eq!((f.from.as_str(), f.key_id.as_str()), ("n1", "key1"));
        assert!(f.body_matches(b"[]"));
        assert!(!f.body_matches(b"[{}]"), "another body");
    }

    #[test]
    fn any_change_to_a_signed_forward_is_refused() {
        let (h, _) = signed(b"[]");
        assert!(KEY.check_request(&h, "other").is_none(), "another stream");
        assert!(
            PeerKey([8; 32]).check_request(&h, "s").is_none(),
            "another key"
        );
        for (name, value) in [
            (FORWARDED_BY, "n2"),
            (FORWARDED_KEY, "key2"),
            (FORWARDED_AT, "1"),
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
                KEY.check_request(&changed, "s").is_none(),
                "{name} changed to {value}"
            );
        }
        for name in [
            FORWARDED_BY,
            FORWARDED_KEY,
            FORWARDED_AT,
            FORWARDED_BODY,
            FORWARDED_MAC,
        ] {
            let mut missing = h.clone();
            missing.remove(&name);
            assert!(KEY.check_request(&missing, "s").is_none(), "{name} missing");
        }
    }

    #[test]
    fn a_forward_is_stamped_with_the_wall_clock_and_the_key_never_shown() {
        let (h, _) = signed(b"[]");
        let at: i64 = h[&FORWARDED_AT]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("a number");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        assert!((now - at).abs() < 5_000, "stamped {at}, now {now}");
        assert_eq!(format!("{KEY:?}"), "PeerKey(redacted)");
    }

    #[test]
    fn a_forward_is_taken_only_within_the_window() {
        let (h, _) = signed(b"[]");
        let at: i64 = h[&FORWARDED_AT]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("a number");
        let window = FORWARD_WINDOW.as_millis() as i64;
        for (now, ok) in [
            (at, true),
            (at + window, true),
            (at - window, true),
            (at + window + 1, false),
            (at - window - 1, false),
        ] {
            assert_eq!(
                KEY.check_request_at(&h, "s", now).is_some(),
                ok,
                "{} ms after signing",
                now - at
            );
        }
    }

    #[test]
    fn an_answer_is_bound_to_its_node_status_forward_and_body() {
        let (h, mac) = signed(b"[]");
        let f = KEY.check_request(&h, "s").expect("valid");
        let sig = KEY.sign_answer("owner", 200, &f, b"{\"ok\":1}");
        let check = |node, status, request: &RequestMac, body: &[u8], key: &PeerKey| {
            key.check_answer(node, status, request, body, Some(sig.as_bytes()))
        };
        assert!(check("owner", 200, &mac, b"{\"ok\":1}", &KEY));
        assert!(!check("other", 200, &mac, b"{\"ok\":1}", &KEY), "node");
        assert!(!check("owner", 400, &mac, b"{\"ok\":1}", &KEY), "status");
        assert!(
            !check("owner", 200, &[0; 32], b"{\"ok\":1}", &KEY),
            "forward"
        );
        assert!(!check("owner", 200, &mac, b"{\"ok\":2}", &KEY), "body");
        assert!(
            !check("owner", 200, &mac, b"{\"ok\":1}", &PeerKey([8; 32])),
            "key"
        );
        assert!(
            !KEY.check_answer("owner", 200, &mac, b"{\"ok\":1}", None),
            "unsigned"
        );
    }
}
