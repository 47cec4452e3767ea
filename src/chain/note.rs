//! C2SP signed notes with Ed25519 keys.
//!
//! Spec: <https://c2sp.org/signed-note>. A note is UTF-8 text ending in a
//! newline, a blank line, then signature lines
//! `— <name> base64(keyid[4] || signature[64])`. The key id is the first four
//! bytes of `SHA-256(name || "\n" || 0x01 || public key)`; verifier keys are
//! written `name+hexkeyid+base64(0x01 || public key)` and private keys
//! `PRIVATE+KEY+name+hexkeyid+base64(0x01 || seed)`, as Go's
//! `golang.org/x/mod/sumdb/note` does, so its tools read ours.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

const ALG_ED25519: u8 = 1;
const MAX_SIGNATURES: usize = 100;

/// Why a note or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The text or key does not follow the format.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The note has no signature by the expected key.
    #[error("note has no signature by {0}")]
    NoSignature(String),
    /// A signature line by the expected key does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// Splits `name+hexkeyid+base64(0x01 || 32 bytes)` into its parts, checking
/// the name, the 8 lowercase hex digits and the Ed25519 algorithm byte. The
/// base64 part may itself contain '+', so it splits at most twice.
fn split_key(s: &str) -> Option<(&str, u32, [u8; 32])> {
    let mut parts = s.splitn(3, '+');
    let (name, id, key) = (parts.next()?, parts.next()?, parts.next()?);
    let id_ok = id.len() == 8
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !valid_name(name) || !id_ok {
        return None;
    }
    let id = u32::from_str_radix(id, 16).ok()?;
    let raw = STANDARD.decode(key).ok()?;
    if raw.len() != 33 || raw[0] != ALG_ED25519 {
        return None;
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&raw[1..]);
    Some((name, id, bytes))
}

/// Returns the signed-note key id of an Ed25519 public key under `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// An Ed25519 note verifier key.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `name+hexkeyid+base64(0x01 || key)`.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] when any part is wrong, including a key id
    /// that does not match the key.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let bad = NoteError::Malformed("verifier key");
        let (name, id, pk) = split_key(s).ok_or(bad.clone())?;
        if key_id(name, &pk) != id {
            return Err(bad);
        }
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| bad)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: id,
            key,
        })
    }

    /// Returns the key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Returns whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.key
            .verify(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteVerifier({self})")
    }
}

/// An Ed25519 note signer. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NoteSigner({}+{:08x}, key redacted)",
            self.name, self.key_id
        )
    }
}

impl NoteSigner {
    /// Returns a signer for a 32-byte Ed25519 seed.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] when `name` is not a valid key name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::Malformed("key name"));
        }
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+name+hexkeyid+base64(0x01 || seed)`.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] when any part is wrong. The message never
    /// includes the key.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let bad = NoteError::Malformed("private key");
        let rest = s
            .trim_end_matches('\n')
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(bad.clone())?;
        let (name, id, seed) = split_key(rest).ok_or(bad.clone())?;
        let signer = Self::from_seed(name, &seed).map_err(|_| bad.clone())?;
        if signer.key_id != id {
            return Err(bad);
        }
        Ok(signer)
    }

    /// Returns a 32-byte secret for `purpose`, derived from the signing key
    /// (HMAC-SHA256 keyed by its seed, HKDF's expand step for one block):
    /// a secret exactly the holders of this key share, and that reveals
    /// nothing about it. Distinct purposes give independent keys.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac as _;
        let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.key.to_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(purpose.as_bytes());
        m.update(&[1]);
        m.finalize().into_bytes().into()
    }

    /// Returns the private key in the `PRIVATE+KEY+…` form. Handle as a secret.
    pub fn to_private_key(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(raw)
        )
    }

    /// Returns the matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Returns the key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Signs raw bytes (Ed25519). Callers prefix a context string of their
    /// own so a signature can never be taken for a note's.
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// Returns `text` signed: the text, a blank line, and one signature line.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] when `text` is empty, does not end in a
    /// newline, or contains a blank line or a control character.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            STANDARD.encode(raw)
        ))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    let bad = NoteError::Malformed("note text");
    if !text.ends_with('\n') || text.contains("\n\n") || text.starts_with('\n') {
        return Err(bad);
    }
    if text.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(bad);
    }
    Ok(())
}

/// Checks a signed note against `verifier` and returns its text.
///
/// Signatures by other keys are ignored, as the spec allows cosignatures.
///
/// # Errors
/// [`NoteError::Malformed`] for a note not in the format,
/// [`NoteError::NoSignature`] when no line is by `verifier`,
/// [`NoteError::BadSignature`] when a line by `verifier` does not verify.
pub fn open<'a>(msg: &'a str, verifier: &NoteVerifier) -> Result<&'a str, NoteError> {
    let split = msg
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("note: no signature block"))?;
    let (text, sigs) = (&msg[..=split], &msg[split + 2..]);
    check_text(text)?;
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::Malformed("note: signature block"));
    }
    let mut found = false;
    let who = format!("{}+{:08x}", verifier.name, verifier.key_id);
    for (n, line) in sigs[..sigs.len() - 1].split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(NoteError::Malformed("note: too many signatures"));
        }
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or(NoteError::Malformed("signature line"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("signature line"))?;
        if !valid_name(name) {
            return Err(NoteError::Malformed("signature name"));
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature base64"))?;
        if raw.len() < 4 {
            return Err(NoteError::Malformed("signature length"));
        }
        let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        if name != verifier.name || id != verifier.key_id {
            continue;
        }
        let sig: [u8; 64] = raw[4..]
            .try_into()
            .map_err(|_| NoteError::BadSignature(who.clone()))?;
        if !verifier.verify(text.as_bytes(), &sig) {
            return Err(NoteError::BadSignature(who));
        }
        found = true;
    }
    if found {
        Ok(text)
    } else {
        Err(NoteError::NoSignature(who))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors published with golang.org/x/mod/sumdb/note (note_test.go).
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn derived_keys_are_shared_by_holders_of_the_key_only() {
        let a = NoteSigner::parse(PETER_SKEY).expect("parses");
        let again = NoteSigner::parse(PETER_SKEY).expect("parses");
        let other = NoteSigner::from_seed("PeterNeumann", &[7; 32]).expect("valid");
        let k = a.derive_key("purpose one");
        assert_eq!(k, again.derive_key("purpose one"), "same key, same secret");
        assert_ne!(k, a.derive_key("purpose two"), "purposes are independent");
        assert_ne!(
            k,
            other.derive_key("purpose one"),
            "another key, another secret"
        );
        assert_ne!(&k[..], &a.key.to_bytes()[..], "not the seed itself");
    }

    #[test]
    fn signs_exactly_like_the_published_vector() {
        let signer = NoteSigner::parse(PETER_SKEY).expect("published private key parses");
        assert_eq!(signer.verifier().to_string(), PETER_VKEY);
        assert_eq!(signer.to_private_key(), PETER_SKEY);
        let signed = signer.sign(TEXT).expect("text is valid");
        assert_eq!(signed, format!("{TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn opens_published_notes_with_cosignatures() {
        let peter = NoteVerifier::parse(PETER_VKEY).expect("parses");
        let enoch = NoteVerifier::parse(ENOCH_VKEY).expect("parses");
        let msg = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        assert_eq!(open(&msg, &peter), Ok(TEXT));
        assert_eq!(open(&msg, &enoch), Ok(TEXT));
        let only_peter = format!("{TEXT}\n{PETER_SIG}");
        assert!(matches!(
            open(&only_peter, &enoch),
            Err(NoteError::NoSignature(_))
        ));
    }

    #[test]
    fn refuses_corrupt_signature_text_and_keys() {
        let peter = NoteVerifier::parse(PETER_VKEY).expect("parses");
        let corrupt = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert!(matches!(
            open(&corrupt, &peter),
            Err(NoteError::BadSignature(_))
        ));
        let edited = format!("{}\n{PETER_SIG}", TEXT.replace("answer", "ANSWER"));
        assert!(matches!(
            open(&edited, &peter),
            Err(NoteError::BadSignature(_))
        ));
        for bad in [
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        ] {
            assert!(
                matches!(open(&bad, &peter), Err(NoteError::Malformed(_))),
                "accepted {bad:?}"
            );
        }
        // Every single-byte change of the verifier key is refused.
        let mut b = PETER_VKEY.as_bytes().to_vec();
        for i in 0..b.len() {
            b[i] = b[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&b) {
                assert!(NoteVerifier::parse(s).is_err(), "accepted mangled key {s}");
            }
            b[i] = b[i].wrapping_sub(1);
        }
        // Wrong key hash and unknown algorithm (vectors from note_test.go).
        assert!(
            NoteVerifier::parse(
                "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
            )
            .is_err()
        );
        assert!(
            NoteVerifier::parse(
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            )
            .is_err()
        );
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let signer = NoteSigner::parse(PETER_SKEY).expect("parses");
        let dbg = format!("{signer:?}");
        assert!(!dbg.contains("AYEKFALV"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }
}
