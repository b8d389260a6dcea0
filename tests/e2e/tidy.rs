//! The architecture's invariants, checked on the source (rust-analyzer's `tidy.rs` is the
//! model): each check names the files that break it. ARCHITECTURE.md lists the same
//! invariants; a new one belongs in both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

crate::trials!(tidy: wasmtime_only_in_runtime, hyper_only_in_server, config_and_server_only_from_the_top, every_file_says_what_it_is_for, files_stay_small, imports_run_one_way);

/// A file past this many lines is doing more than one job.
const MAX_LINES: usize = 600;

/// The layers of `host/src`, top first: a module imports only modules of the layers
/// below its own (`lib.rs` and `main.rs`, the root, are above them all).
const LAYERS: &[&[&str]] = &[
    &["", "main", "component_cmd", "telemetry"],
    &["demo"],
    &["client_config", "stdio", "sources_watch"],
    &["config"],
    &["server"],
    &["mcp"],
    &["runtime"],
    &["sql_tools", "audit", "limits"],
    &["store"],
    &["metrics"],
    &["db"],
    &["tls"],
    &["access", "invocation", "secret", "units"],
];

/// Files still past [`MAX_LINES`], with the ceiling each must stay under until it is
/// split (a file that shrinks below the limit must leave this list).
const OVERSIZED: &[(&str, usize)] = &[];

/// The modules that may import `crate::config`: the composition root and the commands.
const CONFIG_USERS: &[&str] = &[
    "lib.rs",
    "main.rs",
    "config/",
    "demo/",
    "client_config.rs",
    "component_cmd.rs",
    "sources_watch.rs",
    "stdio.rs",
    "telemetry.rs",
];

/// The modules that may import `crate::server`: those above it.
const SERVER_USERS: &[&str] = &[
    "lib.rs",
    "main.rs",
    "config/",
    "demo/",
    "component_cmd.rs",
    "server/",
];

/// The host crate's sources: (path relative to `host/src`, text).
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).unwrap();
                let name = relative.to_string_lossy().replace('\\', "/");
                files.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    assert!(files.len() > 50, "host/src not found at {}", root.display());
    files
}

/// The code of a file: comments and string literals' lines ignored well enough for
/// `use` and path checks (doc comments mention crates by name).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|line| {
        let line = line.trim_start();
        !line.starts_with("//") && !line.starts_with('*') && !line.starts_with("/*")
    })
}

/// Files whose code names the crate `crate_name` at all: as a path's first segment
/// (`crate_name::…`, `::crate_name::…`), in a `use` or `extern crate`, or re-exported;
/// any identifier that is exactly the name counts (comments do not).
fn users_of(crate_name: &str) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(_, text)| {
            code_lines(text).any(|line| {
                line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|word| word == crate_name)
            })
        })
        .map(|(name, _)| name)
        .collect()
}

/// Files that import `module` (or anything in it), resolved as the import graph does:
/// groups, `super::` and re-exports of it included.
fn importers_of(module: &str) -> Vec<String> {
    let graph = import_graph();
    let prefix = format!("{module}::");
    let mut files: Vec<String> = sources()
        .into_iter()
        .map(|(file, _)| file)
        .filter(|file| {
            graph
                .get(&module_of(file))
                .is_some_and(|to| to.iter().any(|t| t == module || t.starts_with(&prefix)))
        })
        .collect();
    files.sort();
    files
}

fn assert_only_in(users: Vec<String>, allowed: &[&str], what: &str) {
    let outside: Vec<_> = users
        .into_iter()
        .filter(|file| !allowed.iter().any(|a| file == a || file.starts_with(a)))
        .collect();
    assert!(outside.is_empty(), "{what} used in {outside:?}");
}

/// Only `runtime/` knows wasmtime (and WASI).
async fn wasmtime_only_in_runtime() {
    let mut users = users_of("wasmtime");
    users.extend(users_of("wasmtime_wasi"));
    assert_only_in(users, &["runtime/"], "wasmtime");
}

/// Only `server/` knows hyper.
async fn hyper_only_in_server() {
    let mut users = users_of("hyper");
    users.extend(users_of("hyper_util"));
    assert_only_in(users, &["server/"], "hyper");
}

/// Configuration is the top of the stack and the server the layer under it: nothing
/// below imports them.
async fn config_and_server_only_from_the_top() {
    assert_only_in(importers_of("config"), CONFIG_USERS, "crate::config");
    assert_only_in(importers_of("server"), SERVER_USERS, "crate::server");
}

/// Every file opens with a `//!` line saying what it is for.
async fn every_file_says_what_it_is_for() {
    let silent: Vec<_> = sources()
        .into_iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(name, _)| name)
        .collect();
    assert!(silent.is_empty(), "files without a //! line: {silent:?}");
}

/// No file passes [`MAX_LINES`] (but those in [`OVERSIZED`], under their ceilings).
async fn files_stay_small() {
    let mut problems = Vec::new();
    let files = sources();
    for (name, text) in &files {
        let lines = text.lines().count();
        match OVERSIZED.iter().find(|(file, _)| file == name) {
            Some((_, ceiling)) if lines > *ceiling => {
                problems.push(format!("{name}: {lines} lines, over its ceiling {ceiling}"))
            }
            Some(_) if lines <= MAX_LINES => {
                problems.push(format!("{name}: {lines} lines; take it off OVERSIZED"))
            }
            Some(_) => {}
            None if lines > MAX_LINES => problems.push(format!(
                "{name}: {lines} lines (at most {MAX_LINES}); split it"
            )),
            None => {}
        }
    }
    for (file, _) in OVERSIZED {
        if !files.iter().any(|(name, _)| name == file) {
            problems.push(format!("{file} is gone; take it off OVERSIZED"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The module a file belongs to (`db/pool.rs` → `db::pool`, `db/mod.rs` → `db`).
fn module_of(file: &str) -> String {
    let path = file.trim_end_matches(".rs");
    let path = path.strip_suffix("/mod").unwrap_or(path);
    match path {
        "lib" | "main" => String::new(),
        _ => path.replace('/', "::"),
    }
}

/// `text` without its unit-test module (`#[cfg(test)] mod tests` and what follows: it
/// is the last item of a file by convention).
fn without_tests(text: &str) -> &str {
    let marker = text
        .match_indices("#[cfg(test)]")
        .map(|(i, _)| i)
        .find(|&i| {
            text[i + "#[cfg(test)]".len()..]
                .trim_start()
                .starts_with("mod tests")
        });
    match marker {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The file-level import graph: an edge for every `crate::…` and `super::…` path that
/// names another file's module. A parent and its own child modules are one unit (the
/// parent is the module's face, the children its parts, and Rust lets them see each
/// other's private items).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let modules: BTreeSet<String> = files.iter().map(|(f, _)| module_of(f)).collect();
    // The longest module that is a prefix of `path`.
    let resolve = |path: &[&str]| -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in &files {
        if file.ends_with("/tests.rs") {
            continue; // unit tests may import anything
        }
        let here = module_of(file);
        // `super` is the module's parent (`db/pool.rs` and `db/mod.rs` alike name their
        // module by path: `db::pool`, `db`).
        let mut base: Vec<&str> = here.split("::").filter(|s| !s.is_empty()).collect();
        base.pop();
        // A file's unit tests (`#[cfg(test)] mod tests`, at its end) may import anything.
        let code: String = code_lines(without_tests(text))
            .collect::<Vec<_>>()
            .join("\n");
        let edges = graph.entry(here.clone()).or_default();
        let starts = code
            .match_indices("crate::")
            .chain(code.match_indices("super::"));
        for (start, head) in starts {
            // (`crate::` inside a longer name, `mycrate::`, is not ours, nor the inner
            // `super::` of `super::super::`, which the outer one reads)
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in paths_at(&code[start + head.len()..]) {
                let mut target: Vec<&str> = match head {
                    "crate::" => Vec::new(),
                    _ => base.clone(),
                };
                let mut words = path.as_slice();
                while let Some((&"super", more)) = words.split_first() {
                    target.pop();
                    words = more;
                }
                target.extend(words);
                if let Some(to) = resolve(&target)
                    && to != here
                    && !to.is_empty()
                    && !here.starts_with(&format!("{to}::"))
                    && !to.starts_with(&format!("{here}::"))
                {
                    edges.insert(to);
                }
            }
        }
    }
    graph
}

/// The paths a `use` or a path expression names from `text` on (what follows `crate::`
/// or `super::`): `a::b::C` is one, `{a, b::{c, d}}` is `a`, `b::c` and `b::d`.
fn paths_at(text: &str) -> Vec<Vec<&str>> {
    let mut prefix = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        prefix.push(&rest[..end]);
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(more) => rest = more,
            None => return vec![prefix],
        }
    }
    let Some(group) = rest.strip_prefix('{') else {
        return vec![prefix];
    };
    // The group's items, split at commas outside nested braces.
    let (mut depth, mut from, mut paths) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                for item in std::iter::once(&group[from..i]) {
                    for path in paths_at(item.trim()) {
                        paths.push(prefix.iter().copied().chain(path).collect());
                    }
                }
                return paths;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                for path in paths_at(group[from..i].trim()) {
                    paths.push(prefix.iter().copied().chain(path).collect());
                }
                from = i + 1;
            }
            _ => {}
        }
    }
    paths
}

/// Groups of modules that import each other, directly or not (Tarjan's algorithm).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(walk: &mut Walk<'g>, node: &'g str) {
        let n = walk.index.len();
        walk.index.insert(node, n);
        walk.low.insert(node, n);
        walk.stack.push(node);
        for next in walk.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !walk.index.contains_key(next) {
                visit(walk, next);
                let low = walk.low[node].min(walk.low[next]);
                walk.low.insert(node, low);
            } else if walk.stack.contains(&next) {
                let low = walk.low[node].min(walk.index[next]);
                walk.low.insert(node, low);
            }
        }
        if walk.low[node] == walk.index[node] {
            let mut group = Vec::new();
            while let Some(top) = walk.stack.pop() {
                group.push(top.to_owned());
                if top == node {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                walk.found.push(group);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            visit(&mut walk, node);
        }
    }
    walk.found
}

/// No import circle, between files or between top-level modules: every layer imports
/// only the layers below it.
async fn imports_run_one_way() {
    let graph = import_graph();
    let by_file = circles(&graph);
    assert!(
        by_file.is_empty(),
        "files that import each other: {by_file:?}"
    );
    let top = |m: &str| m.split("::").next().unwrap_or("").to_owned();
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &graph {
        let entry = modules.entry(top(from)).or_default();
        entry.extend(tos.iter().map(|t| top(t)).filter(|t| *t != top(from)));
    }
    let by_module = circles(&modules);
    assert!(
        by_module.is_empty(),
        "modules that import each other: {by_module:?}"
    );
    // And each imports only layers below its own (ARCHITECTURE.md's order).
    let rank = |module: &str| {
        LAYERS
            .iter()
            .position(|layer| layer.contains(&module))
            .unwrap_or_else(|| panic!("{module} is in no layer of LAYERS"))
    };
    let upward: Vec<String> = modules
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| rank(from) >= rank(to))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(upward.is_empty(), "imports that do not go down: {upward:?}");
    // The checker sees the imports it must, and finds a circle where there is one (a
    // test of the test).
    let toy: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circles(&toy), [["a", "b", "c"]]);
    assert!(users_of("wasmtime").contains(&"runtime/engine.rs".to_owned()));
    assert!(users_of("hyper").contains(&"server/conn.rs".to_owned()));
    assert!(importers_of("config").contains(&"demo/mod.rs".to_owned()));
    assert!(importers_of("server").contains(&"config/mod.rs".to_owned()));
    assert!(
        without_tests("a\n#[cfg(test)]\nfn b() {}\n#[cfg(test)]\nmod tests {}")
            .ends_with("fn b() {}\n")
    );
    assert_eq!(
        paths_at("{a, b::{c, d}, e::F}; x"),
        [vec!["a"], vec!["b", "c"], vec!["b", "d"], vec!["e", "F"]]
    );
    assert!(
        graph["metrics"].contains("invocation"),
        "{:?}",
        graph["metrics"]
    );
    assert!(graph["server::streamable"].contains("server::stream_budget"));
    assert!(graph["server::streamable"].contains("server::sessions"));
}
