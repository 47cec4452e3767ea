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
//!
//! # Numbers that would change
//!
//! RFC 8785 writes every number as an IEEE 754 double in ECMAScript's
//! shortest form, so a JSON number whose value no double's shortest form
//! says (`9007199254740993`, `0.1000000000000000000001`, `1e-400`) would be
//! stored, hashed and delivered as another value. The log refuses those,
//! naming them ([`number_change`], [`first_changed_number`]); every other
//! number is kept, however large (`9007199254740994`, `1e+21`). The test
//! is on values, not text: `1.0`, `1E2` and `-0` become `1`, `100` and `0`,
//! the same numbers. Accepted numbers are written by [`write()`], which this
//! check does not touch, so stored events hash as they always did.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// Largest integer an IEEE 754 double carries exactly (2⁵³).
const EXACT_INT: u64 = 1 << 53;

/// A JSON number the log would not store as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberChange {
    /// Where it is, below the value scanned (`.data.amount`, `[2].n`).
    pub path: String,
    /// The number as sent.
    pub text: String,
    /// Its RFC 8785 form, a different value (`None`: beyond any double).
    pub canonical: Option<String>,
}

impl std::fmt::Display for NumberChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.canonical {
            Some(c) => write!(
                f,
                "number {} would be stored as {c}: RFC 8785 writes numbers as IEEE 754 doubles, which cannot hold this value exactly; send it as a string",
                self.text
            ),
            None => write!(
                f,
                "number {} is beyond what an IEEE 754 double holds (RFC 8785); send it as a string",
                self.text
            ),
        }
    }
}

/// Returns `None` when the JSON number `text` keeps its value under RFC
/// 8785, else its canonical form (`Some(None)` when no double holds it).
///
/// The canonical form is that of the double nearest `text` (correctly
/// rounded, as `serde_json` with `float_roundtrip` parses it), written as
/// [`write_f64`] writes it. Both are compared as decimal values.
pub fn number_change(text: &str) -> Option<Option<String>> {
    let f: f64 = match text.parse() {
        Ok(f) if f64::is_finite(f) => f,
        _ => return Some(None),
    };
    let mut canonical = String::new();
    write_f64(&mut canonical, f);
    (decimal(&canonical) != decimal(text)).then_some(Some(canonical))
}

/// Returns whether the integer `u` keeps its value under RFC 8785 (it
/// does up to 2⁵³, and beyond where the nearest double's shortest form
/// says it: `9007199254740994` does, `9007199254740993` does not).
pub fn integer_survives(u: u64) -> bool {
    u <= EXACT_INT || number_change(itoa::Buffer::new().format(u)).is_none()
}

/// A JSON number as a decimal value: sign, significant digits (no leading
/// or trailing zeros) and the power of ten of the last one. Zero is
/// `(false, "", 0)` whatever its sign. `text` is a valid JSON number (or
/// what [`write_f64`] writes: JSON's grammar with `e+`).
pub(crate) fn decimal(text: &str) -> (bool, String, i64) {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    let (exp_neg, exp_digits) = match exp.as_bytes().first() {
        Some(b'-') => (true, &exp[1..]),
        Some(b'+') => (false, &exp[1..]),
        _ => (false, exp),
    };
    // Saturates: an exponent past ±10¹⁸ means no double anyway.
    let mut e: i64 = 0;
    for b in exp_digits.bytes() {
        e = e.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if exp_neg {
        e = -e;
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let e = e.saturating_sub(frac.len() as i64);
    let trimmed = digits.trim_start_matches('0');
    let significant = trimmed.trim_end_matches('0');
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    let e = e.saturating_add((trimmed.len() - significant.len()) as i64);
    (neg, significant.to_owned(), e)
}

/// Returns the first number in the JSON text `json` that RFC 8785 would
/// change ([`number_change`]), with its path from the top (`[1].data.n`).
/// `json` must be valid JSON (parse it first): this only scans for number
/// tokens outside strings.
pub fn first_changed_number(json: &[u8]) -> Option<NumberChange> {
    changed_numbers(json, true).into_iter().next()
}

/// Returns every number in the JSON text `json` that RFC 8785 would
/// change, in order (see [`first_changed_number`]).
pub fn changed_numbers(json: &[u8], first_only: bool) -> Vec<NumberChange> {
    /// Where the scan is: in an object (its current key, as a byte range
    /// of `json`, quotes included) or an array (the current index).
    enum Frame {
        Object(Option<(usize, usize)>),
        Array(usize),
    }
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'{' => stack.push(Frame::Object(None)),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Frame::Array(n)) = stack.last_mut() {
                    *n += 1;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                // A string right after `{` or `,` in an object is its key;
                // one after `:` is a value, which leaves the key as it is.
                let mut j = start;
                while j > 0 && json[j - 1].is_ascii_whitespace() {
                    j -= 1;
                }
                let after = if j > 0 { json[j - 1] } else { b':' };
                if let Some(Frame::Object(key)) = stack.last_mut()
                    && matches!(after, b'{' | b',')
                {
                    *key = Some((start, i + 1));
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < json.len()
                    && matches!(json[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let text = String::from_utf8_lossy(&json[start..=i]);
                if let Some(canonical) = number_change(&text) {
                    let mut path = String::new();
                    for f in &stack {
                        match f {
                            Frame::Object(Some((a, b))) => {
                                path.push('.');
                                let key = std::str::from_utf8(&json[*a..*b])
                                    .ok()
                                    .and_then(|k| serde_json::from_str::<String>(k).ok())
                                    .unwrap_or_default();
                                path.push_str(&key);
                            }
                            Frame::Object(None) => {}
                            Frame::Array(n) => {
                                path.push('[');
                                path.push_str(itoa::Buffer::new().format(*n));
                                path.push(']');
                            }
                        }
                    }
                    out.push(NumberChange {
                        path,
                        text: text.into_owned(),
                        canonical,
                    });
                    if first_only {
                        return out;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

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

    #[test]
    fn numbers_that_keep_their_value_are_kept() {
        for t in [
            "0",
            "-0",
            "0.0",
            "1.0",
            "1E2",
            "1e+2",
            "4.50",
            "2e-3",
            "1e21",
            "1e+21",
            "1E30",
            "0.1",
            "0.30000000000000004",
            "5e-324",
            "1.7976931348623157e308",
            "-42",
            "9007199254740991",
            "9007199254740992",
            "-9007199254740992",
            "9007199254740994",
            "18014398509481984",
            "1152921504606847000",
            "100000000000000000000",
            "295147905179352830000",
            "1.5e-7",
            "0.000001",
            "1e-7",
            "-1e-7",
            "0.000000000000000000000000001",
            "123e-2",
            "1230000e-4",
            "100e-2",
        ] {
            assert_eq!(number_change(t), None, "{t}");
        }
    }

    #[test]
    fn numbers_that_would_change_are_named_with_their_canonical_form() {
        for (t, c) in [
            ("9007199254740993", Some("9007199254740992")),
            ("-9007199254740993", Some("-9007199254740992")),
            ("18446744073709551615", Some("18446744073709552000")),
            ("18446744073709551616", Some("18446744073709552000")),
            ("1152921504606846976", Some("1152921504606847000")),
            ("-9223372036854775808", Some("-9223372036854776000")),
            ("0.1000000000000000000001", Some("0.1")),
            ("2.00000000000000011", Some("2")),
            ("333333333.33333329", Some("333333333.3333333")),
            (
                "123456789012345678901234567890",
                Some("1.2345678901234568e+29"),
            ),
            ("1e-400", Some("0")),
            ("-1e-400", Some("0")),
            ("1e400", None),
            ("-1e400", None),
            ("1e999999999999999999999", None),
        ] {
            assert_eq!(number_change(t), Some(c.map(str::to_owned)), "{t}");
        }
    }

    #[test]
    fn integers_survive_exactly_when_their_text_does() {
        for u in [
            0,
            1,
            (1 << 53) - 1,
            1 << 53,
            (1 << 53) + 2,
            1 << 54,
            1_152_921_504_606_847_000,
        ] {
            assert!(integer_survives(u), "{u}");
        }
        for u in [(1 << 53) + 1, (1 << 53) + 3, 1 << 60, u64::MAX, 1 << 63] {
            assert!(!integer_survives(u), "{u}");
        }
    }

    #[test]
    fn decimal_values_compare_regardless_of_spelling() {
        assert_eq!(decimal("-0"), decimal("0"));
        assert_eq!(decimal("0e5"), (false, String::new(), 0));
        assert_eq!(decimal("120"), (false, "12".into(), 1));
        assert_eq!(decimal("1.20e1"), decimal("12"));
        assert_eq!(decimal("-0.0012"), (true, "12".into(), -4));
        assert_eq!(decimal("1E-2"), decimal("0.01"));
        assert_eq!(decimal("1e+2"), decimal("100"));
        assert_ne!(decimal("-1"), decimal("1"));
        assert_ne!(decimal("1e2"), decimal("1e-2"));
        assert_eq!(decimal("1e99999999999999999999").2, i64::MAX);
    }

    /// The scan is meant for parsed JSON, but any bytes must not panic it
    /// (an unterminated string or escape at the end stops it).
    #[test]
    fn the_scan_stops_at_the_end_of_any_bytes() {
        for j in ["{\"a\":\"abc", "[\"x\\", "\"", "[1e400,\"", "{\"k\":-"] {
            let _ = changed_numbers(j.as_bytes(), false);
        }
        assert_eq!(changed_numbers(b"[1e400,\"", false)[0].path, "[0]");
    }

    #[test]
    fn changed_numbers_are_found_with_their_path_and_only_outside_strings() {
        let find = |j: &str| first_changed_number(j.as_bytes()).map(|c| (c.path, c.text));
        assert_eq!(
            find(r#"{"a":[1,{"b":9007199254740993}]}"#),
            Some((".a[1].b".into(), "9007199254740993".into()))
        );
        assert_eq!(
            find(r#"{"s":"[1e400, \"x\", 9007199254740993]", "k\"ey" : [ 0 , 1e-400 ]}"#),
            Some((".k\"ey[1]".into(), "1e-400".into()))
        );
        assert_eq!(
            find(r#"[{"data":{"x":1}},{"data":{"x":0.10000000000000000001}}]"#),
            Some(("[1].data.x".into(), "0.10000000000000000001".into()))
        );
        assert_eq!(
            find("[[1,[2,1e999]]]"),
            Some(("[0][1][1]".into(), "1e999".into()))
        );
        assert_eq!(
            find(r#"{"a":1,"b":{"c":[2,true,null,false]},"d":-9007199254740993}"#),
            Some((".d".into(), "-9007199254740993".into()))
        );
        assert_eq!(find(r#"{"a":{"b":1},"c":"9007199254740993"}"#), None);
        assert_eq!(
            find(r#"{"big":9007199254740994,"e":1e+21,"z":-0,"f":1.50}"#),
            None
        );
        assert_eq!(
            find("9007199254740993"),
            Some((String::new(), "9007199254740993".into()))
        );
        let all = changed_numbers(br#"[1e400,2,9007199254740993]"#, false);
        assert_eq!(
            all.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
            ["[0]", "[2]"]
        );
        assert_eq!(
            all[0].to_string(),
            "number 1e400 is beyond what an IEEE 754 double holds (RFC 8785); send it as a string"
        );
        assert_eq!(
            all[1].to_string(),
            "number 9007199254740993 would be stored as 9007199254740992: RFC 8785 writes numbers as IEEE 754 doubles, which cannot hold this value exactly; send it as a string"
        );
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
        /// Every canonical number is a fixed point: its own text keeps its
        /// value; and so does any spelling of the same value (trailing
        /// zeros, a shifted exponent), while a digit added far past the
        /// last changes it.
        #[test]
        fn canonical_numbers_keep_and_altered_ones_change(
            f in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            zeros in 0usize..5,
        ) {
            let mut t = String::new();
            write_f64(&mut t, f);
            prop_assert_eq!(number_change(&t), None);
            let (neg, digits, e) = decimal(&t);
            let sign = if neg { "-" } else { "" };
            let d = if digits.is_empty() { "0".to_owned() } else { digits.clone() };
            let respelled = format!("{sign}{d}{}e{}", "0".repeat(zeros), e - zeros as i64);
            prop_assert_eq!(number_change(&respelled), None, "{}", respelled);
            if !digits.is_empty() {
                let altered = format!("{sign}{d}0000000000000000000001e{}", e - 22);
                prop_assert!(number_change(&altered).is_some(), "{}", altered);
            }
        }

        /// The integer shortcut agrees with the text rule.
        #[test]
        fn integer_survives_agrees_with_number_change(u in any::<u64>(), shift in 0u32..64) {
            for v in [u, u >> shift, (u >> shift) << shift] {
                prop_assert_eq!(
                    integer_survives(v),
                    number_change(itoa::Buffer::new().format(v)).is_none(),
                    "{}", v
                );
            }
        }

        /// The scan finds exactly the numbers the text rule refuses, in any
        /// value the serializer writes.
        #[test]
        fn scan_agrees_with_the_rule_on_random_values(v in arb_json()) {
            let text = serde_json::to_string(&v).unwrap();
            let scanned = changed_numbers(text.as_bytes(), false).len();
            fn count(v: &Value) -> usize {
                match v {
                    Value::Number(n) => usize::from(number_change(&n.to_string()).is_some()),
                    Value::Array(a) => a.iter().map(count).sum(),
                    Value::Object(o) => o.values().map(count).sum(),
                    _ => 0,
                }
            }
            prop_assert_eq!(scanned, count(&v));
        }

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
