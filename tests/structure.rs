//! The code's structure, checked from its text so it stays as the README's Layout describes:
//! no import cycle among the modules of `src/`, `plan` and everything it uses free of the AWS
//! SDK, AWS status strings only in the vocabulary's string tables, where observe converts the
//! SDK's, and in tests, no delegate key joined by hand, functions that fit on a screen, and a
//! Layout table with a row for every module.

use std::collections::{BTreeMap, BTreeSet};

/// Each module of `src/` with its code (the text before its `#[cfg(test)] mod tests`); the
/// files of a module's folder (`src/plan/upgrade.rs`) count as the module's own code.
fn modules() -> BTreeMap<String, String> {
    let dir = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, path) in rust_files(std::path::Path::new(&dir)) {
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        out.entry(name).or_default().push_str(code);
    }
    out
}

/// The `.rs` files under `dir`, each with the top module it belongs to.
fn rust_files(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.is_dir() {
            out.extend(
                rust_files(&path)
                    .into_iter()
                    .map(|(_, p)| (stem.clone(), p)),
            );
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((stem, path));
        }
    }
    out
}

/// The modules of ours a module's code names (`crate::x`, or `x::` after `use crate::{…}`).
fn uses(code: &str, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in modules.keys() {
        let direct = format!("crate::{name}");
        let listed = code.split("use crate::{").skip(1).any(|rest| {
            let list = rest.split("};").next().unwrap_or_default();
            list.split([',', '{', ' ', '\n'])
                .any(|item| item == name || item.starts_with(&format!("{name}::")))
        });
        let at_word_end = |i: usize| {
            code[i + direct.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_')
        };
        if code.match_indices(&direct).any(|(i, _)| at_word_end(i)) || listed {
            out.insert(name.clone());
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    modules
        .iter()
        .map(|(name, code)| {
            let mut used = uses(code, &modules);
            used.remove(name);
            (name.clone(), used)
        })
        .collect()
}

/// Every module reachable from `start`, itself included.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([start.to_string()]);
    let mut todo = vec![start.to_string()];
    while let Some(m) = todo.pop() {
        for next in graph.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_module_imports_itself_through_others() {
    let g = graph();
    assert!(
        g["plan"].contains("observed"),
        "the reader misses imports: {:?}",
        g["plan"]
    );
    for (name, used) in &g {
        for next in used {
            assert!(
                !reachable(&g, next).contains(name),
                "import cycle: {name} uses {next}, which leads back to {name}"
            );
        }
    }
}

#[test]
fn the_plan_and_what_it_uses_know_no_aws_sdk() {
    let g = graph();
    let modules = modules();
    let closure = reachable(&g, "plan");
    assert!(closure.contains("model") && closure.contains("task_definition"));
    for m in &closure {
        assert!(
            !modules[m].contains("aws_sdk_"),
            "plan reaches {m}, which names an aws_sdk_ item"
        );
    }
    // The vocabulary is a leaf; classify needs nothing of heal.
    assert!(g["model"].is_empty(), "model uses {:?}", g["model"]);
    assert!(!g["classify"].contains("heal"));
}

#[test]
fn aws_status_strings_live_only_in_the_vocabulary() {
    let statuses = [
        "ACTIVE",
        "INACTIVE",
        "DRAINING",
        "IN_PROGRESS",
        "COMPLETED",
        "PENDING",
        "RUNNING",
        "STOPPED",
        "PRIMARY",
        "HEALTHY",
        "UNHEALTHY",
        "UNKNOWN",
        "PROVISIONING",
        "DEACTIVATING",
        "STOPPING",
        "DEPROVISIONING",
    ];
    for (name, code) in modules() {
        if name == "model" {
            continue;
        }
        // The vocabulary's string tables spell them, and observe turns the SDK's into them.
        if name != "observe" {
            for status in statuses {
                let quoted = format!("\"{status}\"");
                assert!(
                    !code.contains(&quoted),
                    "{name}.rs compares or writes {quoted}: use the enum in model.rs"
                );
            }
        }
        assert!(
            !code.split("format!(").skip(1).any(two_names_with_a_slash),
            "{name}.rs builds a delegate key by hand: use model::DelegateKey"
        );
    }
}

#[test]
fn the_readme_layout_names_every_module() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let layout = readme
        .split("\n## Layout\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Layout section");
    // A module is named in the first cell of a row of the table, not anywhere in the section.
    let rows: Vec<&str> = layout
        .lines()
        .filter_map(|l| l.strip_prefix('|')?.split('|').next())
        .collect();
    let missing: Vec<String> = modules()
        .into_keys()
        .filter(|m| m != "lib" && !rows.iter().any(|r| r.contains(&format!("`{m}.rs`"))))
        .collect();
    assert!(
        missing.is_empty(),
        "README's Layout does not name {missing:?}"
    );
}

/// Callers of a direct request branch on its `errorType`: README's table says what each means.
#[test]
fn the_readme_explains_every_error_type() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    // The first cells of the table that follows "A direct request that fails", and the kinds
    // each names.
    let documented: Vec<&str> = readme
        .split("A direct request that fails")
        .nth(1)
        .expect("README explains a direct request's failures")
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .filter_map(|l| l.trim_start().strip_prefix('|')?.split('|').next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .collect();
    let handler = &modules()["handler"];
    let kinds = handler
        .split("pub fn kind(&self)")
        .nth(1)
        .and_then(|rest| rest.split("\n    }\n").next())
        .expect("handler.rs has HandlerError::kind");
    let named: Vec<&str> = kinds
        .split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(named.len() >= 10, "the kinds were not found: {named:?}");
    let missing: Vec<&&str> = named.iter().filter(|k| !documented.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "README's errorType table does not explain {missing:?}"
    );
    let stale: Vec<&&str> = documented
        .iter()
        .filter(|d| **d != "errorType" && !named.contains(d))
        .collect();
    assert!(
        stale.is_empty(),
        "README's errorType table names kinds the function does not give: {stale:?}"
    );
}

/// Whether a format string (what follows `format!(`, on its line or the next) is `{a}/{b}` and
/// nothing else.
fn two_names_with_a_slash(rest: &str) -> bool {
    let Some(rest) = rest.trim_start().strip_prefix('"') else {
        return false;
    };
    let literal = rest.split('"').next().unwrap_or_default();
    let placeholder = |p: &str| p.starts_with('{') && p.ends_with('}') && p.len() >= 2;
    matches!(literal.split_once('/'), Some((a, b)) if placeholder(a) && placeholder(b))
}

/// The longest function allowed outside tests: one screen.
const MAX_FUNCTION_LINES: usize = 80;

#[test]
fn functions_fit_on_a_screen() {
    let mut long = Vec::new();
    for (name, code) in modules() {
        let lines: Vec<&str> = code.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if !is_fn {
                continue;
            }
            let indent = &line[..line.len() - t.len()];
            let close = format!("{indent}}}");
            let Some(len) = lines[i..].iter().position(|l| *l == close) else {
                continue; // a declaration without a body
            };
            if len + 1 > MAX_FUNCTION_LINES {
                long.push(format!("{name}.rs:{} ({} lines)", i + 1, len + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions longer than {MAX_FUNCTION_LINES} lines: {long:?}"
    );
}

/// `make` alone lists every target of the Makefile with its line, and runs nothing else.
#[test]
fn make_alone_lists_the_targets() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("make")
        .arg("--no-print-directory")
        .current_dir(root)
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let makefile = std::fs::read_to_string(format!("{root}/Makefile")).unwrap();
    let phony = makefile
        .lines()
        .find_map(|l| l.strip_prefix(".PHONY:"))
        .expect("a .PHONY line");
    for target in phony.split_whitespace() {
        let line = listed
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(target))
            .unwrap_or_else(|| panic!("make does not list {target}:\n{listed}"));
        assert!(
            line.split_whitespace().count() > 2,
            "{target} has no description: {line}"
        );
    }
}
