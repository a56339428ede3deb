//! The floor plan (docs/architecture.md), read from the code: every module of src/ belongs to a
//! layer, imports only from its own layer or those below, and no two modules import each other,
//! directly or round a cycle, at the top level or inside a folder. Also the names: no loose files
//! in src/ besides main, lib and cli; no two module names one letter apart; no module named like
//! a top-level folder of the repository.
//!
//! References are every `crate::` path (in `use` lines, groups included, and inline) and every
//! `super::` path, outside comments and string literals.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Highest first. A module may use modules of its own layer and of the layers after it.
const LAYERS: &[(&str, &[&str])] = &[
    ("commands", &["commands", "cli"]),
    ("train", &["train", "experiments"]),
    ("services", &["output", "metrics", "checkpoint"]),
    ("substrate", &["model", "data", "distributed", "host"]),
    ("leaves", &["config", "error"]),
];

/// The files src/ may hold outside a folder.
const LOOSE_FILES: &[&str] = &["main.rs", "lib.rs", "cli.rs"];

type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every .rs file under `dir` with its module path (`train/run.rs` is train::run, `train/mod.rs`
/// is train; lib.rs and main.rs are the root, the empty path).
fn modules(dir: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = p.strip_prefix(dir).unwrap().with_extension("");
            let mut path: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path.last().is_some_and(|l| l == "mod") {
                path.pop();
            }
            if path == ["lib"] || path == ["main"] {
                path.clear();
            }
            out.insert(path, std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

/// `text` with comments and the contents of string and char literals blanked out.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(b.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(b.len(), |n| i + n + 2);
            i = end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            i = text[start..]
                .find(&close)
                .map_or(b.len(), |n| start + n + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if rest.starts_with("'\"'") || rest.starts_with("'\\\"'") {
            i += if b[i + 1] == b'\\' { 4 } else { 3 };
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// The paths `s` names after a `crate::` or `super::`: `a::b::c`, or each item of `a::{b, c::d}`
/// (as `a::b`, `a::c`), to the depth that can name a module.
fn paths_after(s: &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut items = Vec::new();
            let mut cur = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut cur));
                        continue;
                    }
                    _ => {}
                }
                cur.push(c);
            }
            items.push(cur);
            let mut out = Vec::new();
            for item in items {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                if item == "self" || item.starts_with("self ") {
                    out.push(prefix.clone());
                    continue;
                }
                for tail in paths_after(item) {
                    let mut p = prefix.clone();
                    p.extend(tail);
                    out.push(p);
                }
            }
            return out;
        }
        let (id, after) = ident_at(rest);
        if id.is_empty() {
            return vec![prefix];
        }
        prefix.push(id.to_string());
        match after.strip_prefix("::") {
            Some(more) => rest = more,
            None => return vec![prefix],
        }
    }
}

/// The modules `module`'s code refers to, each resolved to the longest known module path.
fn references(module: &Module, text: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let code = code_only(text);
    let mut out = BTreeSet::new();
    for (marker, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let mut at = 0;
        while let Some(n) = code[at..].find(marker) {
            let start = at + n;
            at = start + marker.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for tail in paths_after(&code[at..]) {
                let mut full = base.clone();
                full.extend(tail);
                let resolved = (1..=full.len())
                    .rev()
                    .map(|k| full[..k].to_vec())
                    .find(|p| known.contains(p));
                if let Some(p) = resolved.filter(|p| p != module && !p.is_empty()) {
                    out.insert(p);
                }
            }
        }
    }
    out
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

/// A cycle in `edges` over `nodes`, if there is one (as the nodes round it, first repeated).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let from = path.iter().position(|p| p == m).unwrap();
                    let mut cycle = path[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n.as_str()) {
            if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// What is wrong with the floor plan of the modules in `files`: upward imports, cycles, modules
/// without a layer.
fn violations(files: &BTreeMap<Module, String>) -> Vec<String> {
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut problems = Vec::new();
    let mut top_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut folder_edges: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, text) in files {
        let Some(top) = module.first() else { continue };
        let Some(from) = layer_of(top) else {
            problems.push(format!(
                "module {top} has no layer: add it to LAYERS in tests/layers.rs and to docs/architecture.md"
            ));
            continue;
        };
        for target in references(module, text, &known) {
            let to_top = &target[0];
            if to_top != top {
                top_edges
                    .entry(top.clone())
                    .or_default()
                    .insert(to_top.clone());
                if layer_of(to_top).is_some_and(|to| to < from) {
                    problems.push(format!(
                        "{} ({}) uses {} ({}): a layer may only use its own and those below",
                        module.join("::"),
                        LAYERS[from].0,
                        target.join("::"),
                        LAYERS[layer_of(to_top).unwrap()].0
                    ));
                }
            }
            // Siblings in one folder: the child of their common parent each sits in.
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len() && common < target.len() {
                folder_edges
                    .entry(module[..common].to_vec())
                    .or_default()
                    .entry(module[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
    }
    if let Some(c) = find_cycle(&top_edges) {
        problems.push(format!(
            "import cycle between top-level modules: {}",
            c.join(" -> ")
        ));
    }
    for (folder, edges) in &folder_edges {
        if folder.is_empty() {
            continue;
        }
        if let Some(c) = find_cycle(edges) {
            problems.push(format!(
                "import cycle inside {}: {}",
                folder.join("::"),
                c.join(" -> ")
            ));
        }
    }
    problems
}

#[test]
fn modules_import_downward_only_and_form_no_cycle() {
    let problems = violations(&modules(&src()));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn src_holds_folders_and_three_files() {
    let loose: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| !LOOSE_FILES.contains(&n.as_str()))
        .collect();
    assert!(loose.is_empty(), "loose files in src/: {loose:?}");
}

/// One insertion, deletion or substitution apart.
fn one_letter_apart(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => short.iter().zip(&long).filter(|(x, y)| x != y).count() == 1,
        1 => (0..long.len()).any(|i| {
            let mut l = long.clone();
            l.remove(i);
            l == short
        }),
        _ => false,
    }
}

#[test]
fn module_names_are_distinct_and_unlike_the_top_level_folders() {
    let names: BTreeSet<String> = modules(&src())
        .keys()
        .flat_map(|m| m.iter().cloned())
        .collect();
    let close: Vec<(String, String)> = names
        .iter()
        .flat_map(|a| names.iter().map(move |b| (a.clone(), b.clone())))
        .filter(|(a, b)| a < b && one_letter_apart(a, b))
        .collect();
    assert!(close.is_empty(), "module names one letter apart: {close:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let folders: BTreeSet<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "target" && n != "src")
        .collect();
    let clash: Vec<&String> = names.intersection(&folders).collect();
    assert!(
        clash.is_empty(),
        "modules named like a top-level folder: {clash:?}"
    );
}

/// The checker itself: an upward import, a cycle inside a folder and one across the top level are
/// each found, through `use` groups, `super::` and inline paths, and comments and strings are not
/// read as code.
#[test]
fn the_checker_finds_what_it_is_for() {
    let files = |list: &[(&str, &str)]| -> BTreeMap<Module, String> {
        list.iter()
            .map(|(m, t)| {
                let path = if m.is_empty() {
                    Vec::new()
                } else {
                    m.split("::").map(String::from).collect()
                };
                (path, t.to_string())
            })
            .collect()
    };
    let clean = files(&[
        ("config", "use crate::error::Result; // crate::train::x\n"),
        ("error", "const S: &str = \"crate::model::Generator\";"),
        (
            "model",
            "use crate::{config::Config, error::{Error, Result}};",
        ),
        ("train", "fn f() { let _ = crate::model::m(); }"),
        ("train::run", "use super::trainer::T;"),
        ("train::trainer", "use super::schedule::S;"),
        ("train::schedule", ""),
    ]);
    assert_eq!(violations(&clean), Vec::<String>::new());

    let upward = files(&[
        ("config", "use crate::{error, model::arch::Arch};"),
        ("model", ""),
        ("model::arch", ""),
        ("error", ""),
    ]);
    let found = violations(&upward);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("config (leaves) uses model::arch")),
        "{found:?}"
    );

    let folder_cycle = files(&[
        ("train", ""),
        ("train::run", "use super::trainer::T;"),
        ("train::trainer", "fn m() -> f64 { super::run::median() }"),
    ]);
    let found = violations(&folder_cycle);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("import cycle inside train")),
        "{found:?}"
    );

    let top_cycle = files(&[
        ("output", "use crate::metrics::eval;"),
        ("metrics", ""),
        ("metrics::eval", "use crate::output::png;"),
        ("output::png", ""),
    ]);
    let found = violations(&top_cycle);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("import cycle between top-level modules")),
        "{found:?}"
    );
    assert!(violations(&files(&[("utils", "")]))[0].starts_with("module utils has no layer"));
    assert!(one_letter_apart("sample", "samples") && one_letter_apart("stats", "status"));
    assert!(!one_letter_apart("data", "model"));
}
