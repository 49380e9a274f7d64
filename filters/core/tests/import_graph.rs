//! The crate's module import graph has no circle, at file level and at folder level.
//!
//! A file imports another when it names an item of it through a `crate::`, `super::` or
//! `self::` path (in a `use` or in code); test modules (`#[cfg(test)]`) are left out. At folder
//! level every folder of `src/` counts as one room among its siblings (a folder module with
//! its face file `x.rs` or `x/mod.rs`), so `a.rs -> b/c.rs -> a.rs` is a circle there even when
//! no file imports itself back. A circle means no room can be read before the others.
//!
//! Run: `cargo test -p fapi-guard-core --test import_graph -- --nocapture` (prints the graph's
//! size, and each circle with the files that tie it when there is one).
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `src/lib.rs` is the crate root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Punct(char),
}

/// Identifiers, `::` and punctuation, with comments, strings and char literals dropped.
fn tokens(text: &str) -> Vec<Tok> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| b.get(i).copied().unwrap_or('\0');
    while i < b.len() {
        let c = b[i];
        if c == '/' && at(i + 1) == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (at(i + 1) == '"' || (at(i + 1) == '#' && !at(i + 2).is_alphanumeric()))
            || (c == 'b' && at(i + 1) == 'r' && (at(i + 2) == '"' || at(i + 2) == '#'))
        {
            // Raw string: r"..", r#".."#, br"..".
            i += if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1; // opening quote
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Tok::Path);
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// The tokens without `#[cfg(test)]` items (a test module with its body, or one item).
fn without_tests(t: Vec<Tok>) -> Vec<Tok> {
    let cfg_test = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if t[i..].starts_with(&cfg_test) {
            i += cfg_test.len();
            // The item ends at its first `;` outside braces, or at the brace closing its body.
            let mut depth = 0;
            while i < t.len() {
                match t[i] {
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    Tok::Punct(';') if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            out.push(t[i].clone());
            i += 1;
        }
    }
    out
}

fn is_root(t: &Tok) -> bool {
    matches!(t, Tok::Ident(s) if s == "crate" || s == "super" || s == "self")
}

/// A use tree from `t[i]` (after `use` or `{`/`,`): every path it names, with `prefix` before.
fn use_tree(t: &[Tok], mut i: usize, prefix: &Module, out: &mut Vec<Module>) -> usize {
    let mut path = prefix.clone();
    while i < t.len() {
        match &t[i] {
            Tok::Ident(s) if s == "as" => {
                i += 2; // `as name`
            }
            Tok::Ident(s) => {
                path.push(s.clone());
                i += 1;
            }
            Tok::Path => i += 1,
            Tok::Punct('{') => {
                i += 1;
                loop {
                    i = use_tree(t, i, &path, out);
                    match t.get(i) {
                        Some(Tok::Punct(',')) => i += 1,
                        _ => break,
                    }
                    if t.get(i) == Some(&Tok::Punct('}')) {
                        break;
                    }
                }
                i += 1; // `}`
                return i;
            }
            _ => break,
        }
    }
    out.push(path);
    i
}

/// Every `crate::`/`super::`/`self::` path a file names.
fn paths(t: &[Tok]) -> Vec<Module> {
    let mut out = Vec::new();
    for i in 0..t.len() {
        let starts_use = t[i] == Tok::Ident("use".into()) && t.get(i + 1).is_some_and(is_root);
        if starts_use {
            use_tree(t, i + 1, &Vec::new(), &mut out);
        } else if is_root(&t[i])
            && t.get(i + 1) == Some(&Tok::Path)
            && !(i > 0 && (t[i - 1] == Tok::Path || t[i - 1] == Tok::Ident("use".into())))
        {
            let mut path = Vec::new();
            let mut j = i;
            while let Some(Tok::Ident(s)) = t.get(j) {
                path.push(s.clone());
                if t.get(j + 1) != Some(&Tok::Path) {
                    break;
                }
                j += 2;
            }
            out.push(path);
        }
    }
    out
}

/// The file a path leads to: the longest module prefix that is a file of the crate.
fn resolve(from: &Module, path: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    let mut full: Module = Vec::new();
    let mut rest = path.as_slice();
    match rest.first().map(String::as_str) {
        Some("crate") => rest = &rest[1..],
        Some("super") | Some("self") => {
            full = from.clone();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        full.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    full.extend(rest.iter().cloned());
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| modules.contains(m))
}

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Strongly connected components with more than one room (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct S<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = S {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = g
        .iter()
        .flat_map(|(a, m)| std::iter::once(a.as_str()).chain(m.keys().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn describe(g: &Graph, circle: &[String]) -> String {
    let mut lines = vec![format!("  circle: {}", circle.join(" , "))];
    for a in circle {
        for (b, why) in g.get(a).into_iter().flatten() {
            if circle.contains(b) {
                let why: Vec<&str> = why.iter().map(String::as_str).collect();
                lines.push(format!("    {a} -> {b}   ({})", why.join("; ")));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn the_module_import_graph_has_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let name = |f: &Path| f.strip_prefix(&src).unwrap().display().to_string();
    let by_module: BTreeMap<Module, String> = files
        .iter()
        .map(|f| (module_of(&src, f), name(f)))
        .collect();
    let modules: BTreeSet<Module> = by_module.keys().cloned().collect();

    // File level.
    let mut edges: Vec<(Module, Module)> = Vec::new();
    for f in &files {
        let from = module_of(&src, f);
        let t = without_tests(tokens(&std::fs::read_to_string(f).unwrap()));
        for p in paths(&t) {
            if let Some(to) = resolve(&from, &p, &modules) {
                if to != from {
                    edges.push((from.clone(), to));
                }
            }
        }
    }
    edges.sort();
    edges.dedup();
    let mut file_graph = Graph::new();
    for (a, b) in &edges {
        file_graph
            .entry(by_module[a].clone())
            .or_default()
            .entry(by_module[b].clone())
            .or_default()
            .insert(format!("{} -> {}", by_module[a], by_module[b]));
    }
    let mut found: Vec<String> = circles(&file_graph)
        .iter()
        .map(|c| format!("file level:\n{}", describe(&file_graph, c)))
        .collect();

    // Folder level: in each folder, its files and its sub-folders (each one room).
    let folders: BTreeSet<Module> = modules
        .iter()
        .flat_map(|m| (0..m.len()).map(move |n| m[..n].to_vec()))
        .collect();
    for dir in &folders {
        let room = |m: &Module| -> Option<String> {
            if m.len() <= dir.len() || m[..dir.len()] != dir[..] {
                return None;
            }
            let child = m[..=dir.len()].to_vec();
            Some(if folders.contains(&child) {
                format!("{}/", child.join("/"))
            } else {
                by_module[m].clone()
            })
        };
        let mut g = Graph::new();
        for (a, b) in &edges {
            if let (Some(ra), Some(rb)) = (room(a), room(b)) {
                if ra != rb {
                    g.entry(ra)
                        .or_default()
                        .entry(rb)
                        .or_default()
                        .insert(format!("{} -> {}", by_module[a], by_module[b]));
                }
            }
        }
        for c in circles(&g) {
            let at = if dir.is_empty() {
                "src/".to_string()
            } else {
                format!("src/{}/", dir.join("/"))
            };
            found.push(format!("folder level, in {at}:\n{}", describe(&g, &c)));
        }
    }

    println!(
        "{} files, {} imports between them, {} folders",
        files.len(),
        edges.len(),
        folders.len()
    );
    for f in &found {
        println!("{f}");
    }
    assert!(
        found.is_empty(),
        "import circles in filters/core/src (break each by moving the shared item to a room both \
         can import):\n{}",
        found.join("\n")
    );
    // The reader must see imports at all, or the check says nothing.
    assert!(edges.len() > 50, "only {} imports read", edges.len());
}
