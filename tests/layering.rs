//! The dependency rule of ARCHITECTURE.md ("Layers"), checked on the
//! source: a module may use modules of its own layer or of layers below,
//! never above, and the modules of one layer form no cycle. A failure names
//! the file, the line and the edge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. Each top-level module of `src/` is in exactly one layer.
const LAYERS: &[&[&str]] = &[
    // Formats, names and identities: no I/O of their own beyond reading a file.
    &[
        "chain",
        "event",
        "jcs",
        "names",
        "failpoint",
        "keyfile",
        "net",
        "node",
        "report",
        "secret",
        "setting",
        "telemetry",
    ],
    // The hot store and what writes the log's own records through it.
    &["store", "selflog", "lease", "shards"],
    // Object storage: below the archive and the object destinations.
    &["objstore"],
    // The append path and API keys.
    &["ingest", "auth"],
    // The services: archive, delivery, sources, verification, self-audit.
    &[
        "archive",
        "destinations",
        "sources",
        "verify",
        "audit",
        "query",
    ],
    // What wires them up and faces users.
    &["api", "ui", "http", "config", "server", "cli", "fuzzing"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::module` a file's code (not its comments) names, by line.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn dependencies_point_down_and_no_layer_has_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &all {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if ["lib", "main"].contains(&module.as_str()) {
            continue;
        }
        let Some(from) = layer_of(&module) else {
            problems.push(format!(
                "src/{module}: in no layer; add it to LAYERS here and to ARCHITECTURE.md"
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for (line, used) in uses(&text) {
            if used == module {
                continue;
            }
            let Some(to) = layer_of(&used) else {
                continue; // an item of lib.rs, not a module
            };
            if to > from {
                problems.push(format!(
                    "{}:{line}: {module} (layer {from}) uses {used} (layer {to}), a layer above",
                    rel.display()
                ));
            } else if to == from {
                edges.entry(module.clone()).or_default().insert(used);
            }
        }
    }
    // Cycles inside a layer: depth-first search over the lateral edges.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_owned());
            cycles.push(c.join(" -> "));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done, cycles);
        }
        path.pop();
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    for c in cycles {
        problems.push(format!("a cycle inside one layer: {c}"));
    }
    assert!(
        problems.is_empty(),
        "the dependency rule is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_code_not_comments() {
    let found = uses(
        "use crate::store::Store; // see crate::api\n/// [`crate::cli`]\nlet x = crate::event::x();",
    );
    assert_eq!(
        found,
        vec![(1, "store".to_owned()), (3, "event".to_owned())]
    );
}
