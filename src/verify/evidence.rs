//! Evidence for one event, checkable offline: the event as stored, an RFC
//! 9162 inclusion proof of its seq, the signed checkpoint the proof ends
//! in, and the log's verifier key (`GET /ui/events/{stream}/{seq}/evidence.json`,
//! `trailkeep verify --evidence FILE`). The console's `proof.js` runs the
//! same steps in the browser.
//!
//! The steps, each named in the outcome: the event's hash is the SHA-256 of
//! its canonical body; its body names the stream and seq; the leaf hash
//! `SHA-256(0x00 || event hash)` climbs the proof to a root; the checkpoint
//! note is signed by the key; the checkpoint names the stream, the proof's
//! size and that root. Pure: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::chain::checkpoint::{Checkpoint, origin};
use crate::chain::merkle::verify_inclusion;
use crate::chain::note::{NoteVerifier, open};
use crate::chain::{Hash, event_hash, leaf_hash};
use crate::event::stored::{scan_stored, split_stored_line};

/// The `format` of an evidence file this version writes and reads.
pub const FORMAT: &str = "trailkeep-evidence/1";

/// An RFC 9162 inclusion proof (base64 hashes), as
/// `GET /v1/streams/{stream}/proof/inclusion` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InclusionProof {
    /// The event's seq.
    pub seq: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// `seq - 1`.
    pub leaf_index: u64,
    /// RFC 9162 leaf hash of the event hash, base64.
    pub leaf_hash: String,
    /// The root of the tree of `size` leaves, base64.
    pub root: String,
    /// The audit path from the leaf upwards, base64.
    pub hashes: Vec<String>,
}

/// One event's evidence (the file `trailkeep verify --evidence` reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// [`FORMAT`].
    pub format: String,
    /// The stream.
    pub stream: String,
    /// The event's seq.
    pub seq: u64,
    /// The event as stored: its canonical JSON with `hash` inside (one line
    /// of `GET /v1/streams/{stream}/events`).
    pub event: String,
    /// Inclusion of `seq` in the checkpoint's tree.
    pub proof: InclusionProof,
    /// The signed checkpoint (a C2SP signed note) of size `proof.size`.
    pub checkpoint: String,
    /// The log's verifier key, `name+hexkeyid+base64(0x01 || key)`, as the
    /// server gave it. Proves nothing by itself: pin yours out of band.
    pub public_key: String,
}

/// A step of the check, and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `event_hash`, `event_fields`, `merkle_path`, `signature`, `checkpoint`.
    pub step: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was checked, or what is wrong.
    pub detail: String,
}

/// The outcome of checking evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Every step passed.
    pub ok: bool,
    /// The stream and seq the file claims.
    pub stream: String,
    /// The seq.
    pub seq: u64,
    /// The checkpoint size the proof ends in.
    pub size: u64,
    /// The root the proof reaches, base64.
    pub root: Option<String>,
    /// The key the signature was checked with.
    pub key: String,
    /// The steps, in order; checking stops at the first that fails.
    pub steps: Vec<Step>,
}

/// Records a step's result; returns whether it passed.
fn step(out: &mut Outcome, name: &'static str, r: Result<String, String>) -> bool {
    let ok = r.is_ok();
    out.steps.push(Step {
        step: name,
        ok,
        detail: r.unwrap_or_else(|e| e),
    });
    ok
}

fn hash64(s: &str) -> Option<Hash> {
    STANDARD.decode(s).ok()?.try_into().ok()
}

/// Checks `evidence` against `verifier` (the key the caller trusts).
pub fn check(evidence: &Evidence, verifier: &NoteVerifier) -> Outcome {
    let mut out = Outcome {
        ok: false,
        stream: evidence.stream.clone(),
        seq: evidence.seq,
        size: evidence.proof.size,
        root: None,
        key: verifier.to_string(),
        steps: Vec::new(),
    };
    // 1. The event's hash is the SHA-256 of its body.
    let Some((body, stored_hash)) = split_stored_line(&evidence.event) else {
        step(
            &mut out,
            "event_hash",
            Err("the event is not a stored event line (a JSON object with a string `hash`)".into()),
        );
        return out;
    };
    let computed = event_hash(body.as_bytes());
    if hex::encode(computed) != stored_hash {
        step(
            &mut out,
            "event_hash",
            Err(format!(
                "the SHA-256 of the event's canonical body is {}, but its hash says {stored_hash}: the event was changed",
                hex::encode(computed)
            )),
        );
        return out;
    }
    step(
        &mut out,
        "event_hash",
        Ok(format!("SHA-256 of the canonical body is {stored_hash}")),
    );
    // 2. The body is the event the file claims.
    let fields = scan_stored(&body);
    let (stream, seq) = fields.as_ref().map_or((None, None), |f| (f.stream, f.seq));
    if stream != Some(evidence.stream.as_str()) || seq != Some(evidence.seq) {
        step(
            &mut out,
            "event_fields",
            Err(format!(
                "the event's body says stream {} seq {}, the evidence claims stream {} seq {}",
                stream.unwrap_or("(none)"),
                seq.map_or_else(|| "(none)".into(), |s| s.to_string()),
                evidence.stream,
                evidence.seq
            )),
        );
        return out;
    }
    if evidence.proof.seq != evidence.seq || evidence.proof.leaf_index + 1 != evidence.seq {
        step(
            &mut out,
            "event_fields",
            Err(format!(
                "the proof is for seq {} (leaf index {}), not seq {}",
                evidence.proof.seq, evidence.proof.leaf_index, evidence.seq
            )),
        );
        return out;
    }
    step(
        &mut out,
        "event_fields",
        Ok(format!(
            "the body is stream {} seq {}",
            evidence.stream, evidence.seq
        )),
    );
    // 3. The leaf climbs the proof to a root.
    let leaf = leaf_hash(&computed);
    let (Some(claimed_root), Some(path)) = (
        hash64(&evidence.proof.root),
        evidence
            .proof
            .hashes
            .iter()
            .map(|h| hash64(h))
            .collect::<Option<Vec<_>>>(),
    ) else {
        step(
            &mut out,
            "merkle_path",
            Err("the proof's root or a path hash is not 32 bytes of base64".into()),
        );
        return out;
    };
    if !verify_inclusion(
        &leaf,
        evidence.seq - 1,
        evidence.proof.size,
        &path,
        &claimed_root,
    ) {
        step(
            &mut out,
            "merkle_path",
            Err(format!(
                "the leaf hash {} with the {} path hashes does not reach the root {} of size {}",
                STANDARD.encode(leaf),
                path.len(),
                evidence.proof.root,
                evidence.proof.size
            )),
        );
        return out;
    }
    out.root = Some(evidence.proof.root.clone());
    step(
        &mut out,
        "merkle_path",
        Ok(format!(
            "leaf {} and {} path hashes reach root {} of size {}",
            STANDARD.encode(leaf),
            path.len(),
            evidence.proof.root,
            evidence.proof.size
        )),
    );
    // 4. The checkpoint is signed by the key.
    let text = match open(&evidence.checkpoint, verifier) {
        Ok(t) => t,
        Err(e) => {
            step(
                &mut out,
                "signature",
                Err(format!("the checkpoint note: {e}")),
            );
            return out;
        }
    };
    step(
        &mut out,
        "signature",
        Ok(format!(
            "the checkpoint note is signed by {}+{:08x} (Ed25519)",
            verifier.name(),
            verifier.key_id()
        )),
    );
    // 5. The checkpoint is this stream's, of this size and root.
    let cp = match Checkpoint::parse(text) {
        Ok(c) => c,
        Err(e) => {
            step(&mut out, "checkpoint", Err(e.to_string()));
            return out;
        }
    };
    let want_origin = origin(verifier.name(), &evidence.stream);
    let r = if cp.origin != want_origin {
        Err(format!(
            "the checkpoint is for {}, not {want_origin}",
            cp.origin
        ))
    } else if cp.size != evidence.proof.size {
        Err(format!(
            "the checkpoint has size {}, the proof size {}",
            cp.size, evidence.proof.size
        ))
    } else if cp.root != claimed_root {
        Err(format!(
            "the checkpoint's root is {}, the proof reaches {}",
            STANDARD.encode(cp.root),
            evidence.proof.root
        ))
    } else {
        Ok(format!(
            "checkpoint {want_origin} size {} root {}",
            cp.size, evidence.proof.root
        ))
    };
    out.ok = step(&mut out, "checkpoint", r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::merkle::{MemoryTree, inclusion_proof, root};
    use crate::chain::note::NoteSigner;

    fn line(stream: &str, seq: u64) -> String {
        let body = format!(
            r#"{{"id":"e{seq}","prev":"{}","received":"2026-01-01T00:00:00Z","seq":{seq},"stream":"{stream}","time":"2026-01-01T00:00:00Z","type":"t"}}"#,
            crate::chain::ZERO_HASH_HEX
        );
        crate::event::stored_json(&body, &hex::encode(event_hash(body.as_bytes())))
    }

    fn evidence(seq: u64, size: u64) -> (Evidence, NoteVerifier) {
        let signer = NoteSigner::from_seed("log.example", &[7; 32]).expect("name");
        let lines: Vec<String> = (1..=size).map(|s| line("s", s)).collect();
        let mut tree = MemoryTree::default();
        for l in &lines {
            let (body, _) = split_stored_line(l).expect("stored line");
            tree.push(leaf_hash(&event_hash(body.as_bytes())));
        }
        let r = root(&tree, size).expect("root");
        let cp = Checkpoint {
            origin: origin("log.example", "s"),
            size,
            root: r,
        };
        let path = inclusion_proof(&tree, seq - 1, size).expect("proof");
        let e = Evidence {
            format: FORMAT.into(),
            stream: "s".into(),
            seq,
            event: lines[usize::try_from(seq - 1).expect("small")].clone(),
            proof: InclusionProof {
                seq,
                size,
                leaf_index: seq - 1,
                leaf_hash: String::new(),
                root: STANDARD.encode(r),
                hashes: path.iter().map(|h| STANDARD.encode(h)).collect(),
            },
            checkpoint: signer.sign(&cp.to_text()).expect("text"),
            public_key: signer.verifier().to_string(),
        };
        (e, signer.verifier())
    }

    fn failed_step(o: &Outcome) -> &'static str {
        assert!(!o.ok, "{o:?}");
        o.steps.last().expect("a step").step
    }

    #[test]
    fn valid_evidence_passes_every_step() {
        for (seq, size) in [(1, 1), (3, 5), (5, 5), (7, 13)] {
            let (e, v) = evidence(seq, size);
            let o = check(&e, &v);
            assert!(o.ok, "{o:?}");
            assert_eq!(o.steps.len(), 5);
        }
    }

    #[test]
    fn each_kind_of_tamper_fails_at_its_step() {
        let (e, v) = evidence(3, 5);
        let mut t = e.clone();
        t.event = t.event.replace("\"e3\"", "\"e9\"");
        assert_eq!(failed_step(&check(&t, &v)), "event_hash");
        // Another event of the stream, hash and all.
        let mut t = e.clone();
        t.event = line("s", 2);
        assert_eq!(failed_step(&check(&t, &v)), "event_fields");
        let mut t = e.clone();
        t.proof.hashes.swap(0, 1);
        assert_eq!(failed_step(&check(&t, &v)), "merkle_path");
        let mut t = e.clone();
        t.checkpoint = t.checkpoint.replace("\n5\n", "\n6\n");
        assert_eq!(failed_step(&check(&t, &v)), "signature");
        let other = NoteSigner::from_seed("log.example", &[8; 32]).expect("name");
        assert_eq!(failed_step(&check(&e, &other.verifier())), "signature");
        // The event of another stream, proved and signed as its own.
        let mut t = e.clone();
        t.stream = "x".into();
        assert_eq!(failed_step(&check(&t, &v)), "event_fields");
    }
}
