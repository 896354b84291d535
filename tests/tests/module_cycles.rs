//! The modules of each crate form no cycle: a reader can take them in order, each using only
//! modules before it. A module's dependencies are the sibling modules its code names through
//! `crate::` (comments, doc links and `#[cfg(test)] mod tests` left out: they build nothing the
//! library uses); the crate root, which only declares and re-exports, is not a module here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's crates whose modules are checked.
const CRATES: &[&str] = &[
    "pylock-core",
    "pylock-open",
    "pylock-redis",
    "pylock-memcache",
    "pylock-etcd",
    "pylock",
    "pylock-cli",
    "pylock-bench",
    "tests",
];

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cycles = Vec::new();
    let mut modules = 0;
    for krate in CRATES {
        let graph = module_graph(&root.join(krate).join("src"));
        modules += graph.len();
        if let Some(cycle) = find_cycle(&graph) {
            cycles.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
    }
    assert!(
        modules > 40,
        "only {modules} modules found: is the source where it was?"
    );
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("lock", &["request", "wait"][..]),
        ("request", &[][..]),
        ("wait", &["guard"][..]),
        ("guard", &["lock"][..]),
    ]
    .into_iter()
    .map(|(module, uses)| {
        (
            module.to_owned(),
            uses.iter().map(|u| (*u).to_owned()).collect(),
        )
    })
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(
            vec!["guard", "lock", "wait", "guard"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );
}

/// Top-level module (a file `src/x.rs` or a directory `src/x/`) -> the sibling modules its
/// code uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("read src").flatten() {
        let path = entry.path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.is_dir() {
            if name != "bin" {
                files.entry(name).or_default().extend(rust_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && !matches!(name.as_str(), "lib" | "main")
        {
            files.entry(name).or_default().push(path);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, paths)| {
            let mut uses = BTreeSet::new();
            for path in paths {
                let code = code_of(&std::fs::read_to_string(path).expect("read a module"));
                for (i, _) in code.match_indices("crate::") {
                    let name: String = code[i + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if modules.contains(&name) && &name != module {
                        uses.insert(name);
                    }
                }
            }
            (module.clone(), uses)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read a module directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// The source without comments and without its unit tests.
fn code_of(source: &str) -> String {
    let source = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cycle of `graph`, as the modules along it with the first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}
