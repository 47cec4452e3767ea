//! Published test vectors: RFC 8785 (canonical JSON, run against `trailkeep::jcs`), RFC 6962/9162 Merkle
//! roots and proofs (transparency-dev/merkle), and a golden chain whose
//! hashes were computed by an independent implementation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use trailkeep::chain::merkle::{self, MemoryTree, verify_consistency, verify_inclusion};
use trailkeep::chain::{Hash, ZERO_HASH_HEX, event_hash, leaf_hash};
use trailkeep::event::{Limits, canonical_bytes, validate};

fn load(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn h(s: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).unwrap();
    out
}

#[test]
fn rfc8785_number_serialization() {
    let v = load("jcs/rfc8785_numbers.json");
    for pair in v["vectors"].as_array().unwrap() {
        let bits = u64::from_str_radix(pair[0].as_str().unwrap(), 16).unwrap();
        let f = f64::from_bits(bits);
        let got = trailkeep::jcs::to_string(&serde_json::json!(f));
        assert_eq!(got, pair[1].as_str().unwrap(), "bits {}", pair[0]);
    }
}

#[test]
fn rfc8785_section_3_2_2_example() {
    let input = r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}"#;
    let v: Value = serde_json::from_str(input).unwrap();
    let want = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
    assert_eq!(trailkeep::jcs::to_string(&v), want);
}

#[test]
fn rfc8785_section_3_2_3_utf16_key_order() {
    let input = "{\"\u{20ac}\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\"}";
    let v: Value = serde_json::from_str(input).unwrap();
    let out = trailkeep::jcs::to_string(&v);
    let order = [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ];
    let positions: Vec<usize> = order.iter().map(|s| out.find(s).unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "UTF-16 order violated: {out}"
    );
}

#[test]
fn merkle_roots_and_proofs_match_published_vectors() {
    let v = load("merkle/rfc6962_vectors.json");
    let leaves: Vec<Hash> = v["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| leaf_hash(&hex::decode(l.as_str().unwrap()).unwrap()))
        .collect();
    let mut tree = MemoryTree::new();
    for (i, l) in leaves.iter().enumerate() {
        tree.push(*l);
        assert_eq!(
            hex::encode(tree.root()),
            v["roots"][i].as_str().unwrap(),
            "root of size {}",
            i + 1
        );
    }
    let root = |size: u64| h(v["roots"][(size - 1) as usize].as_str().unwrap());
    for case in v["inclusion"].as_array().unwrap() {
        let (idx, size) = (
            case["index"].as_u64().unwrap(),
            case["size"].as_u64().unwrap(),
        );
        let want: Vec<Hash> = case["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| h(p.as_str().unwrap()))
            .collect();
        let got = merkle::inclusion_proof(&tree, idx, size).unwrap_or_else(|e| match e {});
        assert_eq!(got, want, "inclusion proof {idx}/{size}");
        assert!(verify_inclusion(
            &leaves[idx as usize],
            idx,
            size,
            &want,
            &root(size)
        ));
        let mut bad = want.clone();
        bad[0][0] ^= 8;
        assert!(
            !verify_inclusion(&leaves[idx as usize], idx, size, &bad, &root(size)),
            "flipped bit accepted"
        );
        assert!(
            !verify_inclusion(&leaves[idx as usize], idx + 1, size, &want, &root(size)),
            "wrong index accepted"
        );
    }
    for case in v["consistency"].as_array().unwrap() {
        let (from, to) = (case["from"].as_u64().unwrap(), case["to"].as_u64().unwrap());
        let want: Vec<Hash> = case["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| h(p.as_str().unwrap()))
            .collect();
        let got = merkle::consistency_proof(&tree, from, to).unwrap_or_else(|e| match e {});
        assert_eq!(got, want, "consistency proof {from}->{to}");
        assert!(verify_consistency(from, to, &root(from), &root(to), &want));
        assert!(
            !verify_consistency(from, to, &root(to), &root(from), &want),
            "swapped roots accepted"
        );
        assert!(
            !verify_consistency(from, to, &root(from), &root(to), &want[..want.len() - 1]),
            "truncated proof accepted"
        );
    }
}

#[test]
fn golden_chain_is_reproduced_byte_for_byte() {
    let v = load("events/golden-chain.json");
    let stream = v["stream"].as_str().unwrap();
    let received = v["received"].as_str().unwrap();
    let mut prev = ZERO_HASH_HEX.to_owned();
    for (i, (input, expected)) in v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["expected"].as_array().unwrap())
        .enumerate()
    {
        let ev = validate(i, input.clone(), received, &Limits::default()).unwrap();
        let bytes = canonical_bytes(&ev, stream, i as u64 + 1, &prev);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            expected["canonical"].as_str().unwrap(),
            "canonical bytes of event {i}"
        );
        let hash = hex::encode(event_hash(&bytes));
        assert_eq!(
            hash,
            expected["hash"].as_str().unwrap(),
            "hash of event {i}"
        );
        prev = hash;
    }
}
