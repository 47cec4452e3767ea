//! Fuzzes the archive index parser and its signature and HMAC checks
//! (`archive::index`), as `verify --archive` reads `_index/*.json`.
//!
//! Asserts: a parsed index's bytes parse back to the same index and are a
//! fixed point; a re-signed index verifies, also after its bytes are parsed
//! back, and one whose signed fields changed no longer does; the stream
//! lookup finds every stream it names (when the list is sorted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::archive::index::Index;
use trailkeep::chain::note::NoteSigner;

const HMAC_KEY: &[u8] = b"fuzz-hmac-secret";

fuzz_target!(|data: &[u8]| {
    let signer = NoteSigner::from_seed("fuzz.log", &[7; 32]).expect("valid name");
    let verifier = signer.verifier();
    let Ok(i) = Index::parse(data) else {
        return;
    };
    let bytes = i.to_bytes();
    let back = Index::parse(&bytes).expect("an index's own bytes parse");
    assert_eq!(back, i, "round trip");
    assert_eq!(back.to_bytes(), bytes, "canonical bytes are a fixed point");
    assert_eq!(
        back.verify_signature(&verifier).is_ok(),
        i.verify_signature(&verifier).is_ok()
    );
    let _ = i.verify_hmac(HMAC_KEY);
    if i.streams.windows(2).all(|w| w[0].stream < w[1].stream) {
        for s in &i.streams {
            assert_eq!(i.stream(&s.stream), Some(s));
        }
    }

    let signed = i.clone().sign(&signer, Some(HMAC_KEY));
    assert!(signed.verify_signature(&verifier).is_ok());
    let reread = Index::parse(&signed.to_bytes()).expect("signed bytes parse");
    assert_eq!(reread, signed);
    assert!(
        reread.verify_signature(&verifier).is_ok(),
        "signature survives the bytes"
    );
    assert!(
        reread.verify_hmac(HMAC_KEY).is_ok(),
        "hmac survives the bytes"
    );

    let mut changed = signed.clone();
    changed.number ^= 1;
    assert!(changed.verify_signature(&verifier).is_err());
    assert!(changed.verify_hmac(HMAC_KEY).is_err());
    if let Some(s) = changed.streams.first_mut() {
        changed.number ^= 1;
        s.stream.push('x');
        assert!(changed.verify_signature(&verifier).is_err());
    }
});
