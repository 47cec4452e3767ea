//! Fuzzes the checkpoint and signed-note parsers with untrusted text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::chain::checkpoint::Checkpoint;
use trailkeep::chain::note::{NoteVerifier, open};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse(text);
        let _ = NoteVerifier::parse(text);
        if let Ok(v) = NoteVerifier::parse(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ) {
            let _ = open(text, &v);
        }
    }
});
