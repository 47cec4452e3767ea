//! Fuzzes the archive manifest parser and its signature and HMAC checks
//! (`archive::manifest`), as `verify --archive` and restore read them from
//! a bucket.
//!
//! Asserts: a parsed manifest's bytes parse back to the same manifest, and
//! are a fixed point; a manifest re-signed with the fixed key verifies,
//! also after its bytes are parsed back, and one whose signed fields
//! changed no longer does; a manifest whose signature verifies as parsed
//! still verifies from its canonical bytes (its signature covers what it
//! says).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::archive::manifest::Manifest;
use trailkeep::chain::note::NoteSigner;

const HMAC_KEY: &[u8] = b"fuzz-hmac-secret";

fuzz_target!(|data: &[u8]| {
    let signer = NoteSigner::from_seed("fuzz.log", &[7; 32]).expect("valid name");
    let verifier = signer.verifier();
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    let bytes = m.to_bytes();
    let back = Manifest::parse(&bytes).expect("a manifest's own bytes parse");
    assert_eq!(back, m, "round trip");
    assert_eq!(back.to_bytes(), bytes, "canonical bytes are a fixed point");
    assert!(m.same_batch(&back));

    let as_given = m.verify_signature(&verifier).is_ok();
    assert_eq!(back.verify_signature(&verifier).is_ok(), as_given);
    let _ = m.verify_hmac(HMAC_KEY);

    let signed = m.clone().sign(&signer, Some(HMAC_KEY));
    assert!(signed.verify_signature(&verifier).is_ok());
    assert!(signed.verify_hmac(HMAC_KEY).is_ok());
    let reread = Manifest::parse(&signed.to_bytes()).expect("signed bytes parse");
    assert_eq!(reread, signed);
    assert!(
        reread.verify_signature(&verifier).is_ok(),
        "signature survives the bytes"
    );
    assert!(
        reread.verify_hmac(HMAC_KEY).is_ok(),
        "hmac survives the bytes"
    );

    // Any change to a signed field breaks the signature and the HMAC.
    let mut changed = signed.clone();
    changed.end_seq ^= 1;
    assert!(changed.verify_signature(&verifier).is_err());
    assert!(changed.verify_hmac(HMAC_KEY).is_err());
    let mut changed = signed.clone();
    changed.object.size = changed.object.size.wrapping_add(1);
    assert!(changed.verify_signature(&verifier).is_err(), "{changed:?}");
    let mut changed = signed;
    changed.merkle_root.push('0');
    assert!(changed.verify_signature(&verifier).is_err());
});
