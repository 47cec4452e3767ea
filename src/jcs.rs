//! RFC 8785 JSON Canonicalization Scheme (JCS) for parsed `serde_json` values.
//!
//! Every hash in the log is taken over JCS bytes, so this module decides
//! whether another implementation of the RFC reproduces our hashes. It is
//! pinned by the RFC's published vectors (`tests/vectors.rs`: the Appendix B
//! numbers, the §3.2.2 example, the §3.2.3 UTF-16 key order) and by a
//! property test against the `serde_json_canonicalizer` crate on random
//! values.
//!
//! Why not that crate on the hot path: it buffers every object member and
//! re-encodes every key as UTF-16 to sort it, which made canonicalizing
//! `actor`/`data` the largest single cost of HTTP ingest (perf: ~40% of the
//! request-handling core in `bench ingest`). Here objects are written
//! straight into one output string:
//!
//! - `serde_json`'s map iterates in code-point order; that already is the
//!   UTF-16 order JCS wants unless a key holds a character at or above
//!   U+E000, so a key order is checked and only sorted when it differs;
//! - integers within ±2⁵³ print as decimal integers (what ECMAScript prints
//!   for them); every other number goes through `ryu-js`, ECMAScript's
//!   `Number.prototype.toString`;
//! - strings escape only `"`, `\` and U+0000–U+001F (the short forms `\b`
//!   `\t` `\n` `\f` `\r`, else `\u00xx` in lowercase hex), as §3.2.2.2 says.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// Largest integer an IEEE 754 double carries exactly (2⁵³).
const EXACT_INT: u64 = 1 << 53;

/// Returns the JCS text of `v`.
pub fn to_string(v: &Value) -> String {
    let mut out = String::with_capacity(128);
    write(&mut out, v);
    out
}

/// Returns the JCS bytes of `v`.
pub fn to_vec(v: &Value) -> Vec<u8> {
    to_string(v).into_bytes()
}

/// Appends the JCS text of `v` to `out`.
pub fn write(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            let mut keys = m.keys();
            let sorted = match keys.next() {
                None => true,
                Some(first) => {
                    let mut prev = first;
                    keys.all(|k| {
                        let ok = key_cmp(prev, k) == Ordering::Less;
                        prev = k;
                        ok
                    })
                }
            };
            if sorted {
                for (i, (k, x)) in m.iter().enumerate() {
                    member(out, i, k, x);
                }
            } else {
                let mut members: Vec<(&String, &Value)> = m.iter().collect();
                members.sort_by(|a, b| key_cmp(a.0, b.0));
                for (i, (k, x)) in members.into_iter().enumerate() {
                    member(out, i, k, x);
                }
            }
            out.push('}');
        }
    }
}

fn member(out: &mut String, i: usize, k: &str, v: &Value) {
    if i > 0 {
        out.push(',');
    }
    write_str(out, k);
    out.push(':');
    write(out, v);
}

/// Orders property names by their UTF-16 code units (RFC 8785 §3.2.3).
///
/// UTF-8 byte order is code-point order, which differs from UTF-16 order
/// only between supplementary characters and U+E000..U+FFFF; those all
/// encode with a lead byte of 0xEE or more.
pub(crate) fn key_cmp(a: &str, b: &str) -> Ordering {
    if a.bytes().chain(b.bytes()).all(|c| c < 0xEE) {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(u) = n.as_u64() {
        if u <= EXACT_INT {
            out.push_str(itoa::Buffer::new().format(u));
            return;
        }
    } else if let Some(i) = n.as_i64()
        && i.unsigned_abs() <= EXACT_INT
    {
        out.push_str(itoa::Buffer::new().format(i));
        return;
    }
    write_f64(out, n.as_f64().unwrap_or(0.0));
}

/// Appends a double as ECMAScript prints it: the shortest round-trip form
/// (1e+30, 0.002, 333333333.3333333; -0 prints as 0). serde_json never
/// parses a non-finite number.
pub fn write_f64(out: &mut String, f: f64) {
    out.push_str(ryu_js::Buffer::new().format(f));
}

/// Writes `s` as a JSON string with exactly the escapes RFC 8785 allows.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn escapes_only_what_the_rfc_names() {
        let v = json!("a\"b\\c\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}\u{2028}é/");
        assert_eq!(
            to_string(&v),
            "\"a\\\"b\\\\c\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}\u{2028}é/\""
        );
    }

    #[test]
    fn integers_beyond_two_to_the_53_print_as_doubles() {
        assert_eq!(
            to_string(&json!(9_007_199_254_740_992u64)),
            "9007199254740992"
        );
        assert_eq!(
            to_string(&json!(-9_007_199_254_740_992i64)),
            "-9007199254740992"
        );
        assert_eq!(to_string(&json!(u64::MAX)), "18446744073709552000");
        assert_eq!(to_string(&json!(i64::MIN)), "-9223372036854776000");
        let v: Value = serde_json::from_str("[-0, 1.0, 1e3, -0.0]").unwrap();
        assert_eq!(to_string(&v), "[0,1,1000,0]");
    }

    #[test]
    fn sorts_keys_that_code_point_order_gets_wrong() {
        // U+FB33 sorts after U+1F600 by code point but before it in UTF-16.
        let v = json!({"\u{fb33}": 1, "\u{1f600}": 2, "a": 3});
        assert_eq!(to_string(&v), "{\"a\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f\u{e000}-\u{e0ff}\u{10000}-\u{100ff}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    "[a-c\u{e000}\u{fb33}\u{1f600}\u{10000}]{0,3}",
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Agrees with an independent implementation of RFC 8785 on random
        /// values, and its output parses back to the same value.
        #[test]
        fn agrees_with_serde_json_canonicalizer(v in arb_json()) {
            let ours = to_string(&v);
            let theirs = serde_json_canonicalizer::to_string(&v).expect("jcs");
            prop_assert_eq!(&ours, &theirs);
        }
    }
}
