//! Checks the layering that `lib.rs` states: each top-level module of the crate may name
//! (through a `crate::` path) only itself and the modules listed before it in [`LAYERS`]. Test
//! code (`#[cfg(test)]` modules and items) is exempt: a test may wire any adapter it needs.
//! Comments are skipped too, so a doc link may point anywhere.

use std::path::{Path, PathBuf};

/// The layers, innermost first, as `lib.rs` lists them.
const LAYERS: [&str; 7] = [
    "domain", "ports", "app", "adapters", "config", "grpc", "server",
];

/// The layer a source file belongs to: its first path component under `src/`, without `.rs`.
/// None for the crate root (`lib.rs`, `main.rs`) and for this check itself.
fn layer_of(relative: &Path) -> Option<usize> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS.iter().position(|l| *l == name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `source` that are not test code, with their 1-based numbers, and the files of
/// test modules declared out of line (`#[cfg(test)] mod properties;`).
fn production_lines(source: &str) -> (Vec<(usize, &str)>, Vec<String>) {
    let mut kept = Vec::new();
    let mut test_modules = Vec::new();
    let mut lines = source.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if !trimmed.starts_with("#[cfg(test)]") {
            kept.push((i + 1, line));
            continue;
        }
        // Skip the item the attribute applies to: up to its `;` or its balanced braces.
        let mut depth = 0i64;
        let mut opened = false;
        for (_, item) in lines.by_ref() {
            let item_trimmed = item.trim();
            if !opened && depth == 0 && item_trimmed.starts_with("#[") {
                continue;
            }
            if !opened
                && let Some(name) = item_trimmed
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ")
                    .strip_prefix("mod ")
                    .and_then(|rest| rest.strip_suffix(';'))
            {
                test_modules.push(name.trim().to_string());
                break;
            }
            depth += item.matches('{').count() as i64 - item.matches('}').count() as i64;
            opened |= item.contains('{');
            if (opened && depth <= 0) || (!opened && item_trimmed.ends_with(';')) {
                break;
            }
        }
    }
    (kept, test_modules)
}

/// Every `crate::<module>` named on `line`, including each branch of `crate::{a, b::c}`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        // `temporal_state_server::` or `$crate::` are not this crate's paths from inside it.
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            for branch in group.split(',') {
                let name: String = branch
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            found.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    found
}

#[test]
fn each_layer_imports_only_the_layers_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut test_files = Vec::new();
    let mut sources = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).expect("reading a source file");
        let (_, modules) = production_lines(&source);
        let dir = if path.file_name().is_some_and(|n| n == "mod.rs") {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        for module in modules {
            test_files.push(dir.join(format!("{module}.rs")));
            test_files.push(dir.join(&module).join("mod.rs"));
        }
        sources.push((path, source));
    }
    let mut violations = Vec::new();
    let mut checked = 0;
    for (path, source) in &sources {
        if test_files.contains(path) {
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let Some(layer) = layer_of(relative) else {
            continue;
        };
        checked += 1;
        for (number, line) in production_lines(source).0 {
            for module in crate_paths(line) {
                let Some(target) = LAYERS.iter().position(|l| *l == module) else {
                    continue;
                };
                if target > layer {
                    violations.push(format!(
                        "src/{}:{number}: `{}` imports `crate::{module}`, a layer after it",
                        relative.display(),
                        LAYERS[layer]
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "found only {checked} source files under {src:?}"
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_check_sees_imports_and_skips_tests() {
    assert_eq!(
        crate_paths("use crate::{app::App, adapters::memory};"),
        ["app", "adapters"]
    );
    assert_eq!(crate_paths("x = crate::config::f($crate::y)"), ["config"]);
    let source = "use crate::app;\n#[cfg(test)]\nmod tests {\n    use crate::server;\n}\nuse crate::grpc;\n#[cfg(test)]\nmod properties;\n";
    let (kept, modules) = production_lines(source);
    let kept: Vec<_> = kept.iter().map(|(n, _)| *n).collect();
    assert_eq!(kept, [1, 6]);
    assert_eq!(modules, ["properties"]);
}
