//! Manifests: the signed record of one archive object.
//!
//! A manifest is JSON (RFC 8785 canonical form plus a newline, so its bytes
//! and SHA-256 are fixed by its contents). The Ed25519 signature covers
//! `trailkeep-manifest-v1\n` followed by the canonical JSON of the manifest
//! without `signature` and `hmacSha256`; the optional HMAC-SHA256 (operator's
//! shared secret) covers the same bytes. `prevManifestSha256` chains the
//! manifests of a stream, so a removed batch breaks the chain.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use crate::chain::note::{NoteSigner, NoteVerifier};

/// Manifest format version written by this build. Version 2 (issue #15):
/// `firstTime`/`lastTime` are the earliest and latest event `time` in the
/// object, so `firstTime <= lastTime`; in version 1 they were the times of
/// the first and last event by seq, which producers' clocks need not order.
/// Both are read; the verifier checks each by its own meaning.
pub const VERSION: u32 = 2;
/// Versions this build reads.
pub const READS: [u32; 2] = [1, 2];
/// Signing context prefix.
const CONTEXT: &[u8] = b"trailkeep-manifest-v1\n";

/// The archive object a manifest describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectInfo {
    /// Key relative to the archive prefix.
    pub key: String,
    /// SHA-256 of the object as stored, hex.
    pub sha256: String,
    /// Size as stored, bytes.
    pub size: u64,
    /// Size before compression, bytes.
    pub uncompressed_size: u64,
    /// Always `ndjson`.
    pub format: String,
    /// `gzip` or `zstd`.
    pub compression: String,
}

/// The Ed25519 signature over a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The key's name (the log name).
    pub key_name: String,
    /// The key id, 8 hex digits (as in the verifier key `name+id+key`).
    pub key_id: String,
    /// Base64 signature.
    pub value: String,
}

/// One archive object's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Log name.
    pub log: String,
    /// Stream name.
    pub stream: String,
    /// First seq.
    pub start_seq: u64,
    /// Last seq.
    pub end_seq: u64,
    /// Number of events.
    pub count: u64,
    /// The earliest event `time` in the object (version 1: the `time` of
    /// the event at `startSeq`).
    pub first_time: String,
    /// The latest event `time` in the object (version 1: the `time` of the
    /// event at `endSeq`).
    pub last_time: String,
    /// Hash of the event before `startSeq` (64 zeros at seq 1).
    pub prev_hash: String,
    /// Hash of the last event.
    pub last_hash: String,
    /// RFC 9162 Merkle tree hash over the range's event hashes, hex.
    pub merkle_root: String,
    /// The object.
    pub object: ObjectInfo,
    /// SHA-256 of the stream's previous manifest file (None for the first).
    pub prev_manifest_sha256: Option<String>,
    /// When the manifest was made (RFC 3339).
    pub created: String,
    /// Ed25519 signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// HMAC-SHA256 with the operator's shared secret, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_sha256: Option<String>,
}

/// Why a manifest does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON in the manifest format.
    #[error("not a manifest: {0}")]
    Malformed(String),
    /// A version this build does not read.
    #[error("manifest version {0} is not supported")]
    Version(u32),
    /// No signature, a signature by another key, or one that does not verify.
    #[error("signature: {0}")]
    Signature(String),
    /// The HMAC is missing or wrong.
    #[error("hmac: {0}")]
    Hmac(String),
}

/// A JSON document signed the way manifests and archive indexes are: an
/// Ed25519 signature (and, with the operator's shared secret, an
/// HMAC-SHA256) over `CONTEXT` followed by the RFC 8785 form of the
/// document without those two fields; stored as that canonical form plus a
/// newline, so its bytes and SHA-256 are fixed by its contents.
pub(crate) trait SignedDoc: Serialize + Clone {
    /// Signing context, distinct per document kind, so a signature over one
    /// kind is never taken for another (or for a C2SP note by the same key).
    const CONTEXT: &'static [u8];

    /// The signature and HMAC fields, to fill or clear.
    fn seals_mut(&mut self) -> (&mut Option<Signature>, &mut Option<String>);

    /// The signature and HMAC fields.
    fn seals(&self) -> (Option<&Signature>, Option<&str>);

    /// The bytes the signature and HMAC cover.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        let (sig, mac) = unsigned.seals_mut();
        *sig = None;
        *mac = None;
        let mut out = Self::CONTEXT.to_vec();
        out.extend_from_slice(&canonical(&unsigned));
        out
    }

    /// Signs with the log's key and, when given, the shared HMAC secret.
    fn seal(&mut self, signer: &NoteSigner, hmac_key: Option<&[u8]>) {
        let msg = self.signed_bytes();
        let (sig, mac) = self.seals_mut();
        *sig = Some(Signature::make(signer, &msg));
        *mac = hmac_key.map(|k| hex::encode(hmac(k, &msg)));
    }

    /// Checks the signature against `verifier`; the error says what is wrong.
    fn check_signature(&self, verifier: &NoteVerifier) -> Result<(), String> {
        Signature::check(self.seals().0, verifier, &self.signed_bytes())
    }

    /// Checks the HMAC with the shared secret.
    fn check_hmac(&self, key: &[u8]) -> Result<(), String> {
        check_hmac(self.seals().1, key, &self.signed_bytes())
    }

    /// The stored bytes: canonical JSON and a newline.
    fn file_bytes(&self) -> Vec<u8> {
        let mut b = canonical(self);
        b.push(b'\n');
        b
    }
}

impl SignedDoc for Manifest {
    const CONTEXT: &'static [u8] = CONTEXT;
    fn seals_mut(&mut self) -> (&mut Option<Signature>, &mut Option<String>) {
        (&mut self.signature, &mut self.hmac_sha256)
    }
    fn seals(&self) -> (Option<&Signature>, Option<&str>) {
        (self.signature.as_ref(), self.hmac_sha256.as_deref())
    }
}

impl Manifest {
    /// Signs with the log's key and, when given, the shared HMAC secret.
    #[must_use]
    pub fn sign(mut self, signer: &NoteSigner, hmac_key: Option<&[u8]>) -> Self {
        self.seal(signer, hmac_key);
        self
    }

    /// The manifest file's bytes: canonical JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.file_bytes()
    }

    /// Parses a manifest file.
    ///
    /// # Errors
    /// [`ManifestError::Malformed`] or [`ManifestError::Version`].
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if !READS.contains(&m.version) {
            return Err(ManifestError::Version(m.version));
        }
        exact_integers(&m).map_err(ManifestError::Malformed)?;
        Ok(m)
    }

    /// Checks the Ed25519 signature against `verifier`.
    ///
    /// # Errors
    /// [`ManifestError::Signature`] naming what is wrong.
    pub fn verify_signature(&self, verifier: &NoteVerifier) -> Result<(), ManifestError> {
        self.check_signature(verifier)
            .map_err(ManifestError::Signature)
    }

    /// Checks the HMAC with the shared secret.
    ///
    /// # Errors
    /// [`ManifestError::Hmac`] when missing or wrong.
    pub fn verify_hmac(&self, key: &[u8]) -> Result<(), ManifestError> {
        self.check_hmac(key).map_err(ManifestError::Hmac)
    }

    /// Whether `other` describes the same batch: equal in everything but
    /// creation time and signatures (a retried run re-signs at a new time),
    /// and, between format versions (a run the previous version left half
    /// done), the version and the time fields whose meaning changed.
    pub fn same_batch(&self, other: &Self) -> bool {
        let across = self.version != other.version;
        let strip = |m: &Self| {
            let mut m = m.clone();
            m.created = String::new();
            m.signature = None;
            m.hmac_sha256 = None;
            if across {
                m.version = 0;
                m.first_time = String::new();
                m.last_time = String::new();
            }
            m
        };
        strip(self) == strip(other)
    }

    /// Whether `firstTime`/`lastTime` claim the earliest and latest event
    /// time (version 2 on); version 1 claims the times of the events at
    /// `startSeq` and `endSeq`.
    pub fn claims_min_max(&self) -> bool {
        self.version >= 2
    }
}

impl Signature {
    /// Signs `msg` (context prefix included) with the log's key.
    fn make(signer: &NoteSigner, msg: &[u8]) -> Self {
        Self {
            algorithm: "ed25519".into(),
            key_name: signer.name().to_owned(),
            key_id: format!("{:08x}", signer.key_id()),
            value: STANDARD.encode(signer.sign_bytes(msg)),
        }
    }

    /// Checks that `sig` is `verifier`'s signature of `msg`; the error says
    /// what is wrong (missing, another key, does not verify).
    fn check(sig: Option<&Self>, verifier: &NoteVerifier, msg: &[u8]) -> Result<(), String> {
        let Some(sig) = sig else {
            return Err("missing".into());
        };
        if sig.algorithm != "ed25519" {
            return Err(format!("algorithm {:?}", sig.algorithm));
        }
        let want = format!("{:08x}", verifier.key_id());
        if sig.key_name != verifier.name() || sig.key_id != want {
            return Err(format!(
                "made by key {}+{}, not {}+{want}",
                sig.key_name,
                sig.key_id,
                verifier.name()
            ));
        }
        let raw = STANDARD
            .decode(&sig.value)
            .ok()
            .and_then(|v| <[u8; 64]>::try_from(v).ok())
            .ok_or_else(|| "not a base64 Ed25519 signature".to_owned())?;
        if verifier.verify(msg, &raw) {
            Ok(())
        } else {
            Err("does not verify: the document was changed after signing".into())
        }
    }
}

/// HMAC-SHA256 of `msg` with the operator's shared secret.
fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Checks a hex HMAC-SHA256 of `msg` against `key`.
fn check_hmac(given: Option<&str>, key: &[u8], msg: &[u8]) -> Result<(), String> {
    let given = given.ok_or_else(|| "missing".to_owned())?;
    let given = hex::decode(given).map_err(|_| "not hex".to_owned())?;
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    mac.verify_slice(&given)
        .map_err(|_| "does not verify".to_owned())
}

/// Refuses a document with an integer beyond 2^53 - 1. RFC 8785 writes
/// numbers as IEEE doubles, so such an integer shares its canonical form
/// (and so its signature) with its neighbours, and the stored bytes would
/// not parse back to it.
pub(crate) fn exact_integers<T: Serialize>(doc: &T) -> Result<(), String> {
    fn check(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) => n.as_u64().is_none_or(|n| n < 1 << 53),
            serde_json::Value::Array(a) => a.iter().all(check),
            serde_json::Value::Object(o) => o.values().all(check),
            _ => true,
        }
    }
    let v = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    if check(&v) {
        Ok(())
    } else {
        Err("an integer is beyond 2^53 - 1, which RFC 8785 cannot write exactly".into())
    }
}

/// RFC 8785 bytes of a plain struct.
fn canonical<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_value(v)
        .map(|v| crate::jcs::to_vec(&v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: VERSION,
            log: "log.test".into(),
            stream: "s".into(),
            start_seq: 1,
            end_seq: 2,
            count: 2,
            first_time: "2026-01-01T00:00:00Z".into(),
            last_time: "2026-01-01T00:00:01Z".into(),
            prev_hash: "0".repeat(64),
            last_hash: "a".repeat(64),
            merkle_root: "b".repeat(64),
            object: ObjectInfo {
                key: "s/events/dt=2026-01-01/x.ndjson.gz".into(),
                sha256: "c".repeat(64),
                size: 10,
                uncompressed_size: 20,
                format: "ndjson".into(),
                compression: "gzip".into(),
            },
            prev_manifest_sha256: None,
            created: "2026-03-01T00:00:00Z".into(),
            signature: None,
            hmac_sha256: None,
        }
    }

    #[test]
    fn signature_and_hmac_cover_every_field() {
        let signer = NoteSigner::from_seed("log.test", &[7; 32]).unwrap();
        let other = NoteSigner::from_seed("log.test", &[8; 32]).unwrap();
        let m = sample().sign(&signer, Some(b"secret"));
        let bytes = m.to_bytes();
        assert!(bytes.ends_with(b"}\n"));
        let back = Manifest::parse(&bytes).unwrap();
        assert_eq!(back, m);
        back.verify_signature(&signer.verifier()).unwrap();
        back.verify_hmac(b"secret").unwrap();
        assert!(back.verify_hmac(b"other").is_err());
        let e = back.verify_signature(&other.verifier()).unwrap_err();
        assert!(e.to_string().contains("made by key"), "{e}");
        // Any edit breaks both.
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [
            ("\"endSeq\":2", "\"endSeq\":3"),
            ("\"size\":10", "\"size\":11"),
            ("cccc", "cccd"),
        ] {
            let edited = Manifest::parse(text.replacen(from, to, 1).as_bytes()).unwrap();
            let e = edited.verify_signature(&signer.verifier()).unwrap_err();
            assert!(e.to_string().contains("does not verify"), "{from}: {e}");
            assert!(edited.verify_hmac(b"secret").is_err());
        }
        assert!(matches!(
            Manifest::parse(b"{}"),
            Err(ManifestError::Malformed(_))
        ));
        assert!(sample().verify_signature(&signer.verifier()).is_err());
    }

    /// Fuzzing finding (FUZZING.md, `manifest`): RFC 8785 writes integers
    /// as IEEE doubles, so beyond 2^53 - 1 two values share one canonical
    /// form. A manifest signed with `size` 2^53 also verified with 2^53 + 1,
    /// and its bytes parsed back to another value. Such integers are refused.
    #[test]
    fn integers_beyond_2_pow_53_are_refused() {
        let signer = NoteSigner::from_seed("log.test", &[7; 32]).unwrap();
        let mut m = sample();
        m.object.size = 1 << 53;
        let text = String::from_utf8(m.sign(&signer, None).to_bytes()).unwrap();
        assert!(text.contains("\"size\":9007199254740992"), "{text}");
        for n in [
            "9007199254740992",
            "9007199254740993",
            "18446744073709551615",
        ] {
            let tampered = text.replacen("9007199254740992", n, 1);
            let e = Manifest::parse(tampered.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("2^53"), "{n}: {e}");
        }
        let mut ok = sample();
        ok.end_seq = (1 << 53) - 1;
        let back = Manifest::parse(&ok.to_bytes()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn same_batch_ignores_only_time_and_signatures() {
        let signer = NoteSigner::from_seed("log.test", &[7; 32]).unwrap();
        let a = sample().sign(&signer, None);
        let mut b = sample();
        b.created = "2027-01-01T00:00:00Z".into();
        assert!(a.same_batch(&b.clone().sign(&signer, Some(b"k"))));
        b.merkle_root = "d".repeat(64);
        assert!(!a.same_batch(&b));
    }
}
