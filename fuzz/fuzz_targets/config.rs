//! Fuzzes the config file: TOML parse (`config::RawConfig::parse`, with
//! `deny_unknown_fields`) and validation (`RawConfig::validate`), which
//! covers `[[sources]]` (and their backfill) and `[[destinations]]`
//! (`destinations::config`).
//!
//! Asserts: no panic, and a refusal names a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::config::{Overrides, RawConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let raw = match RawConfig::parse(text) {
        Ok(raw) => raw,
        Err(e) => {
            assert!(!e.key.is_empty());
            return;
        }
    };
    match raw.validate(&Overrides::default()) {
        Ok(cfg) => {
            for d in &cfg.destinations {
                let _ = d.type_name();
            }
        }
        Err(e) => assert!(!e.key.is_empty(), "{e}"),
    }
});
