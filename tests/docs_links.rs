//! The README and docs/ say where things are, and are right: every relative link points at a file
//! that exists (and at a heading that exists, when it names one), and every repository path
//! written in backticks exists. Files move (the tree was reorganised once); the pages must follow.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level folders whose paths the pages cite; a backticked span starting with one is a claim
/// that the file or folder exists.
const CITED_FOLDERS: &[&str] = &[
    "src/",
    "launch/",
    "tests/",
    "bench/",
    "scripts/",
    "docs/",
    "examples/",
    "configs/",
    "docker/",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped, spaces
/// to '-'.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .into_iter()
        .filter_map(|(_, l)| l.strip_prefix('#'))
        .map(|h| slug(h.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links on a line.
fn link_targets(line: &str) -> Vec<&str> {
    line.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &line[i + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .collect()
}

/// Backticked spans on a line.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

fn looks_like_a_cited_path(span: &str) -> bool {
    CITED_FOLDERS.iter().any(|f| span.starts_with(f))
        && span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
}

/// Every broken reference of one page, as "page:line: what".
fn broken_references(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).expect("read page");
    let dir = page.parent().expect("page dir");
    let name = page
        .strip_prefix(root())
        .unwrap_or(page)
        .display()
        .to_string();
    let mut broken = Vec::new();
    for (n, line) in prose_lines(&text) {
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() {
                page.to_path_buf()
            } else {
                dir.join(file)
            };
            if !linked.exists() {
                broken.push(format!(
                    "{name}:{n}: link to {target}: no file {}",
                    linked.display()
                ));
                continue;
            }
            let is_page = linked.extension().is_some_and(|x| x == "md");
            if !anchor.is_empty() && is_page {
                let heads = anchors(&std::fs::read_to_string(&linked).expect("read linked page"));
                if !heads.contains(anchor) {
                    broken.push(format!(
                        "{name}:{n}: link to {target}: no heading #{anchor}"
                    ));
                }
            }
        }
        for span in code_spans(line) {
            if looks_like_a_cited_path(span) && !root().join(span).exists() {
                broken.push(format!("{name}:{n}: `{span}` does not exist"));
            }
        }
    }
    broken
}

#[test]
fn every_link_and_cited_path_in_the_pages_exists() {
    let broken: Vec<String> = pages().iter().flat_map(|p| broken_references(p)).collect();
    assert!(
        broken.is_empty(),
        "the pages cite what is not there:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_finds_a_broken_link_a_missing_heading_and_a_moved_file() {
    let dir = std::env::temp_dir().join(format!("sagan-docs-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.md");
    std::fs::write(
        dir.join("other.md"),
        "# Other\n\n## 5. Containers: `docker/Dockerfile`\n",
    )
    .unwrap();
    std::fs::write(
        &page,
        "# Page\n\n[ok](other.md#5-containers-dockerdockerfile) [self](#page)\n\
         [gone](missing.md) [no head](other.md#nowhere)\n\
         `src/lib.rs` `launch/nodes/nodes.sh` `src/<name>.rs`\n\
         ```\n[in code](not-checked.md) `src/not/checked.rs`\n```\n",
    )
    .unwrap();
    let broken = broken_references(&page);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(broken[0].contains("missing.md"), "{broken:#?}");
    assert!(broken[1].contains("#nowhere"), "{broken:#?}");
    assert!(broken[2].contains("launch/nodes/nodes.sh"), "{broken:#?}");
}
