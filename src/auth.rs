//! API keys: generation, hashing, constant-time checks and scopes.
//!
//! A token reads `tk_<16 hex id>_<43 base64url secret>` (256 bits of
//! entropy); the `tk_` prefix lets secret scanners recognise it. Only the
//! SHA-256 of the secret part is stored, next to the public id, scope and
//! stream. Verification looks the key up by id and compares hashes with
//! `subtle`'s constant-time equality.
//!
//! Scopes: `ingest` may only append; `read` may only read; `admin` may do
//! both and run admin operations. A key bound to a stream touches no other
//! and sees no other, on every route; `*` means every stream. [`allows`] is
//! the one function that decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{KeyRecord, Store, StoreError};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Append events.
    Ingest,
    /// Read events, streams, checkpoints and proofs.
    Read,
    /// Everything, including verify.
    Admin,
}

impl Scope {
    /// Returns the stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// How long a looked-up key is trusted before it is read again; bounds how
/// long a revocation takes to reach a running server.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing is unrecoverable: no key can be made safely.
    getrandom::fill(&mut b)
        .unwrap_or_else(|e| panic!("operating system random source failed: {e}"));
    b
}

/// Returns the SHA-256 of a token's secret part.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Returns a new key record and its token (to be shown once).
pub fn generate(scope: Scope, stream: &str, created: &str) -> (KeyRecord, String) {
    let id = hex::encode(random_bytes::<8>());
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let token = format!("tk_{id}_{secret}");
    let rec = KeyRecord {
        id,
        scope: scope.as_str().into(),
        stream: stream.into(),
        secret_hash: secret_hash(&secret),
        created: created.into(),
        revoked: None,
    };
    (rec, token)
}

/// Splits a token into its id and secret parts.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("tk_")?;
    if rest.len() < 18 || !rest.is_char_boundary(16) {
        return None;
    }
    let (id, secret) = rest.split_at(16);
    let secret = secret.strip_prefix('_')?;
    (id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some((id, secret))
}

/// What a request acts on, for [`allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One stream: its events, checkpoints, proofs, archive batches,
    /// restores, verification, dead letters.
    Stream(&'a str),
    /// Every stream at once: an archive run, pausing a destination that
    /// serves more than one stream. Only a key for `*` may.
    AllStreams,
    /// A listing that the handler narrows to the streams the key
    /// [`sees`] (streams, sources, destinations, batches).
    Listing,
}

/// Decides every API call: whether `key` grants `needed` on `target`.
/// Admin includes read and ingest; a key bound to a stream acts on that
/// stream only, never on every stream, and sees only it in listings.
pub fn allows(key: &KeyRecord, needed: Scope, target: Target<'_>) -> bool {
    let scope_ok = key.scope == "admin" || key.scope == needed.as_str();
    let stream_ok = match target {
        Target::Stream(s) => sees(key, s),
        Target::AllStreams => key.stream == "*",
        Target::Listing => true,
    };
    scope_ok && stream_ok
}

/// Whether `key` may see `stream` at all (in listings, statuses, errors).
pub fn sees(key: &KeyRecord, stream: &str) -> bool {
    key.stream == "*" || key.stream == stream
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No, malformed, unknown, revoked or wrong token (HTTP 401).
    #[error("missing or invalid API key")]
    Unauthenticated,
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Looked-up keys by id (None: no such key) with the time of the lookup.
type KeyCache = HashMap<String, (Option<KeyRecord>, Instant)>;

/// Verifies bearer tokens against the store, caching lookups briefly.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Arc<Mutex<KeyCache>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

impl Authenticator {
    /// Returns an authenticator over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    /// Returns the active key that `token` proves.
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`] for any token that is not a valid,
    /// active key; the reason is deliberately not told apart.
    pub async fn authenticate(&self, token: &str) -> Result<KeyRecord, AuthError> {
        let (id, secret) = parse_token(token).ok_or(AuthError::Unauthenticated)?;
        let key = self.lookup(id).await?;
        let key = key.ok_or(AuthError::Unauthenticated)?;
        let ok: bool = key.secret_hash.ct_eq(&secret_hash(secret)).into();
        if !ok || key.revoked.is_some() {
            return Err(AuthError::Unauthenticated);
        }
        Ok(key)
    }

    /// Returns key `id` while it is active: a console session, opened by
    /// proving the token once, stays valid only as long as its key.
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`] when the key is unknown or revoked.
    pub async fn active(&self, id: &str) -> Result<KeyRecord, AuthError> {
        let key = self.lookup(id).await?.ok_or(AuthError::Unauthenticated)?;
        if key.revoked.is_some() {
            return Err(AuthError::Unauthenticated);
        }
        Ok(key)
    }

    /// Key `id` as stored, read again at most once per [`KEY_CACHE_TTL`].
    async fn lookup(&self, id: &str) -> Result<Option<KeyRecord>, AuthError> {
        let cached = {
            let c = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.get(id)
                .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
                .map(|(k, _)| k.clone())
        };
        if let Some(k) = cached {
            return Ok(k);
        }
        let k = self.store.get_key(id).await?;
        let mut c = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(id.to_owned(), (k.clone(), Instant::now()));
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_hash_to_the_record() {
        let (rec, token) = generate(Scope::Read, "s", "t");
        assert!(
            token.starts_with("tk_") && token.len() == 3 + 16 + 1 + 43,
            "{token}"
        );
        let (id, secret) = parse_token(&token).expect("parses");
        assert_eq!(id, rec.id);
        assert_eq!(secret_hash(secret), rec.secret_hash);
        let (_, other) = generate(Scope::Read, "s", "t");
        assert_ne!(token, other, "tokens are random");
        for bad in [
            "",
            "tk_",
            "tk_0123456789abcdef",
            "tk_0123456789abcdef_",
            "xx_0123456789abcdef_abc",
            "tk_0123456789abcdeg_abc",
        ] {
            assert!(parse_token(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn scopes_and_streams() {
        let key = |scope: &str, stream: &str| KeyRecord {
            id: "i".into(),
            scope: scope.into(),
            stream: stream.into(),
            secret_hash: [0; 32],
            created: String::new(),
            revoked: None,
        };
        let (a, b) = (Target::Stream("a"), Target::Stream("b"));
        assert!(allows(&key("ingest", "a"), Scope::Ingest, a));
        assert!(
            !allows(&key("ingest", "a"), Scope::Read, a),
            "ingest cannot read"
        );
        assert!(
            !allows(&key("read", "a"), Scope::Ingest, a),
            "read cannot ingest"
        );
        assert!(
            !allows(&key("read", "a"), Scope::Admin, a),
            "read is not admin"
        );
        assert!(
            !allows(&key("read", "a"), Scope::Read, b),
            "one stream's key reads no other"
        );
        assert!(allows(&key("read", "*"), Scope::Read, b));
        assert!(allows(&key("admin", "*"), Scope::Ingest, b));
        assert!(allows(&key("admin", "a"), Scope::Read, a));
        assert!(!allows(&key("admin", "a"), Scope::Admin, b));
        assert!(
            !allows(&key("admin", "a"), Scope::Admin, Target::AllStreams),
            "a stream-bound admin never acts on every stream"
        );
        assert!(allows(&key("admin", "*"), Scope::Admin, Target::AllStreams));
        assert!(allows(&key("read", "a"), Scope::Read, Target::Listing));
        assert!(!allows(&key("ingest", "*"), Scope::Read, Target::Listing));
        assert!(sees(&key("read", "a"), "a") && !sees(&key("read", "a"), "b"));
        assert!(sees(&key("read", "*"), "_trailkeep"));
    }
}
