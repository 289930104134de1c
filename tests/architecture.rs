//! The shape of the house, checked: the top-level modules form a DAG in the order lib.rs's
//! module map states, and no source file grows past the size a reader can hold in their head.
//!
//! Why a test: a layering that is only written down drifts. Here the module map in
//! `src/lib.rs` is the single source of truth (its `//! - [`name`]` lines, in order), and every
//! `crate::<module>` path in code (comments and doc links excluded) must point to a module listed
//! before the one it appears in.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Non-test lines a source file may have (everything before its `#[cfg(test)]` module).
const MAX_LINES: usize = 800;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module order from lib.rs's doc comment: lines `//! - [`name`]: ...`.
fn declared_order() -> Vec<String> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once("`]").map(|(name, _)| name.to_string()))
        .collect()
}

/// The `pub mod x;` lines of lib.rs.
fn declared_modules() -> BTreeSet<String> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The files of top-level module `m`: `src/m.rs` and everything under `src/m/`.
fn module_files(m: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src().join(format!("{m}.rs"));
    if single.exists() {
        files.push(single);
    }
    rust_files(&src().join(m), &mut files);
    files
}

/// Source text without `//` comments (doc links are not dependencies) and without string
/// literals' contents mattering much: good enough for `crate::` paths, which never appear in
/// the strings of this code base.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::`, including grouped imports
/// such as `use crate::{chat::X, node};`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `rustyraft::crate::` cannot occur; skip `$crate::` in macros.
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before == Some('$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                if let Some(name) = ident(item.trim()) {
                    refs.insert(name);
                }
            }
        } else if let Some(name) = ident(rest) {
            refs.insert(name);
        }
    }
    refs
}

fn ident(s: &str) -> Option<String> {
    let name: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Every top-level module's dependencies on other top-level modules, with one file that shows
/// each edge.
fn dependencies(modules: &[String]) -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let known: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut deps = BTreeMap::new();
    for m in modules {
        let mut edges = BTreeMap::new();
        for f in module_files(m) {
            let text = fs::read_to_string(&f).expect("read source");
            for r in crate_refs(&code_only(&text)) {
                if r != *m && known.contains(r.as_str()) {
                    edges.entry(r).or_insert_with(|| f.clone());
                }
            }
        }
        deps.insert(m.clone(), edges);
    }
    deps
}

#[test]
fn the_module_map_lists_every_module_once() {
    let order = declared_order();
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        order.len(),
        "a module is listed twice: {order:?}"
    );
    assert_eq!(
        listed,
        declared_modules(),
        "lib.rs's module map and its `pub mod` lines disagree"
    );
}

#[test]
fn every_module_depends_only_on_modules_above_it() {
    let order = declared_order();
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut violations = Vec::new();
    for (m, edges) in dependencies(&order) {
        for (dep, file) in edges {
            if rank[dep.as_str()] > rank[m.as_str()] {
                violations.push(format!(
                    "{m} -> {dep} (e.g. {}): {dep} is listed below {m} in lib.rs",
                    file.strip_prefix(src()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_source_file_is_too_long() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut long = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).expect("read source");
        let lines = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        if lines > MAX_LINES {
            long.push(format!("{} has {lines} non-test lines", f.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these files along their seams (at most {MAX_LINES} non-test lines each):\n{}",
        long.join("\n")
    );
}

/// The checker itself must see what it is meant to see.
#[test]
fn the_reference_scanner_sees_plain_grouped_and_nested_paths_but_not_comments() {
    let code = code_only(
        "use crate::chat::X;\nuse crate::{node::{A, B}, pb};\nlet x = crate::raft::f();\n\
         // crate::launcher is only a comment\n/// [`crate::server`] is a doc link\n",
    );
    let got = crate_refs(&code);
    let want: BTreeSet<String> = ["chat", "node", "pb", "raft"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}
