//! The tiers of `src/lib.rs`'s `# Layout` hold: every `crate::…` path in `src/**/*.rs` points
//! to the module's own top-level module or to one of a lower tier.
//!
//! The tiers are read from the layout list itself (`//! N. `module`, `module`: …`), so the
//! documentation and this test cannot drift apart. Comments are skipped; `use crate::{a, b}`
//! groups count each name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module name → tier, from the numbered list under `# Layout`.
fn tiers(lib: &str) -> BTreeMap<String, usize> {
    let mut tiers = BTreeMap::new();
    let layout = lib
        .split("//! # Layout")
        .nth(1)
        .expect("lib.rs has a `# Layout` section");
    for line in layout.lines().skip(1).map_while(|l| l.strip_prefix("//!")) {
        let line = line.trim_start();
        let Some((n, rest)) = line.split_once(". ") else {
            continue;
        };
        let Ok(tier) = n.parse::<usize>() else {
            continue;
        };
        // The module names: the backticked words before the first `:`.
        let head = rest.split(':').next().unwrap_or("");
        for name in head.split('`').skip(1).step_by(2) {
            tiers.insert(name.to_owned(), tier);
        }
    }
    tiers
}

/// The top-level module a source file belongs to (`lib`, `main` for the crate roots).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments; the sources
/// have no block comments that mention `crate::`, and string literals are left alone).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named by `crate::` paths in `code`.
fn imports(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `$crate::` in macros is not a path of ours.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c == '$' || c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}}`: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        let name: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        out.push(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn every_import_points_down_a_tier() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let tiers = tiers(&lib);
    assert!(tiers.len() > 10, "could not read the tiers: {tiers:?}");
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = tiers.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` is in no tier of lib.rs's layout",
                file.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        for target in imports(&code(&text)) {
            if target == module || target == "self" || target == "super" {
                continue;
            }
            match tiers.get(&target) {
                Some(&t) if t < own => {}
                Some(&t) => wrong.push(format!(
                    "{}: `{module}` (tier {own}) uses `crate::{target}` (tier {t})",
                    file.strip_prefix(src()).unwrap().display()
                )),
                None => wrong.push(format!(
                    "{}: `crate::{target}` is in no tier",
                    file.strip_prefix(src()).unwrap().display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_of_lib_rs_has_a_tier() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let tiers = tiers(&lib);
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(!declared.is_empty());
    for m in &declared {
        assert!(
            tiers.contains_key(*m),
            "`{m}` has no tier in lib.rs's layout"
        );
    }
    for m in tiers.keys() {
        assert!(
            declared.contains(&m.as_str()),
            "the layout names `{m}`, which lib.rs does not declare"
        );
    }
}

#[test]
fn the_import_reader_sees_groups_and_skips_macros() {
    let found = imports(
        "use crate::a::B;\nuse crate::{c, d::{E, F}, g};\nlet x = crate::h::i();\n$crate::j::k!();",
    );
    assert_eq!(found, ["a", "c", "d", "g", "h"]);
    let lib = "//! # Layout\n//! 0. `x`, `y`: leaves.\n//! 1. `z`: above: `w` is not a module.\n";
    let t = tiers(lib);
    assert_eq!(t.get("x"), Some(&0));
    assert_eq!(t.get("y"), Some(&0));
    assert_eq!(t.get("z"), Some(&1));
    assert_eq!(t.get("w"), None);
}
