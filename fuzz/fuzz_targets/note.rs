//! Fuzzes signed notes (`chain::note`): verifier and private key strings,
//! `open` against a fixed key, and the checkpoint body inside a note.
//!
//! Asserts: a parsed key prints back to the same string; whatever `open`
//! accepts carries a signature line by the key that verifies over the
//! returned text, which is the note up to its blank line; a note we sign
//! opens to its text, and no one-byte change to it opens at all; a parsed
//! checkpoint prints and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::chain::checkpoint::Checkpoint;
use trailkeep::chain::note::{NoteSigner, NoteVerifier, open};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("fuzz.log", &[7; 32]).expect("valid name")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = NoteVerifier::parse(text) {
        assert_eq!(v.to_string(), text, "verifier key round trip");
    }
    if let Ok(s) = NoteSigner::parse(text) {
        assert_eq!(s.to_private_key(), text.trim_end_matches('\n'));
        assert_eq!(
            NoteVerifier::parse(&s.verifier().to_string()),
            Ok(s.verifier())
        );
    }
    if let Ok(cp) = Checkpoint::parse(text) {
        assert_eq!(Checkpoint::parse(&cp.to_text()), Ok(cp.clone()));
    }

    let signer = signer();
    let verifier = signer.verifier();
    if let Ok(body) = open(text, &verifier) {
        // The text is the note up to its last blank line.
        assert!(text.starts_with(body) && text[body.len()..].starts_with('\n'));
        let sigs = &text[body.len() + 1..];
        let ok = sigs.lines().any(|l| {
            l.strip_prefix("\u{2014} fuzz.log ")
                .and_then(|b| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.decode(b).ok()
                })
                .and_then(|raw| <[u8; 64]>::try_from(raw.get(4..)?).ok())
                .is_some_and(|sig| verifier.verify(body.as_bytes(), &sig))
        });
        assert!(ok, "open accepted a note without a verifying signature");
    }

    // Sign the input as a note text (when it is one) and tamper with it.
    if let Ok(signed) = signer.sign(text) {
        assert_eq!(open(&signed, &verifier), Ok(text));
        let mut bytes = signed.clone().into_bytes();
        let at = (data.len() * 31) % bytes.len();
        bytes[at] ^= 1 << (data.len() % 8);
        if let Ok(changed) = String::from_utf8(bytes) {
            assert!(
                open(&changed, &verifier).is_err(),
                "a changed note opened: {changed:?}"
            );
        }
    }
});
