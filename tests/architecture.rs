//! The engine's modules form layers, and none imports from a layer above its own: data flows
//! one way, spec → credentials → source → map → store, with the run on top. The README's
//! architecture section draws the same table.

use std::path::Path;

use hypernet_tests::repo_root;

/// The engine's top-level modules, lowest layer first. A module may use its own layer and the
/// ones below it.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "the language and the values every stage passes on",
        &[
            "spec",
            "models",
            "schema",
            "template",
            "extract",
            "convert",
            "validate",
            "decode",
            "events",
            "state",
            "record",
            "ratelimit",
        ],
    ),
    ("sending requests", &["http"]),
    ("credentials", &["credentials"]),
    ("sources", &["source"]),
    ("mapping", &["map"]),
    ("storing", &["store", "blobs"]),
    ("connected accounts", &["account"]),
    ("running a connector", &["run"]),
    ("the sandbox", &["replay", "sandbox"]),
];

/// Items at the crate's root that belong to a module: `#[macro_export]` puts a macro there, and
/// what its expansion names from the crate must be there too.
const ROOT_ITEMS: &[(&str, &str)] = &[("on_every_backend", "store"), ("__sqlx", "store")];

fn layer(module: &str) -> Option<usize> {
    let module = ROOT_ITEMS
        .iter()
        .find(|(item, _)| *item == module)
        .map_or(module, |(_, owner)| owner);
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The `crate::x` modules a source file uses, outside comments and its test module.
fn uses(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut used = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `$crate::` in a macro names this crate too.
            if !name.is_empty() {
                used.push(name);
            }
            rest = after;
        }
    }
    used
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_engine_module_imports_from_a_later_stage() {
    let src = repo_root().join("engine/src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut problems = Vec::new();
    for path in &all {
        let relative = path.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" {
            continue;
        }
        let Some(own) = layer(&top) else {
            problems.push(format!(
                "{}: module `{top}` is in no layer (add it to LAYERS and the README)",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for used in uses(&text) {
            match layer(&used) {
                Some(theirs) if theirs > own => problems.push(format!(
                    "{}: `{top}` ({}) uses `crate::{used}` ({}), a later stage",
                    relative.display(),
                    LAYERS[own].0,
                    LAYERS[theirs].0
                )),
                None if used != top => problems.push(format!(
                    "{}: uses `crate::{used}`, which is in no layer",
                    relative.display()
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The table above lists exactly the modules the engine declares.
#[test]
fn the_layers_list_every_engine_module() {
    let lib = std::fs::read_to_string(repo_root().join("engine/src/lib.rs")).unwrap();
    let mut declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| {
            line.strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))
        })
        .map(|rest| rest.trim_end_matches(';'))
        .collect();
    declared.sort_unstable();
    let mut listed: Vec<&str> = LAYERS
        .iter()
        .flat_map(|(_, modules)| modules.iter().copied())
        .collect();
    listed.sort_unstable();
    assert_eq!(declared, listed);
}

/// The check finds what it is for: a use of a later stage is reported.
#[test]
fn a_use_of_a_later_stage_is_found() {
    let text = "use crate::store::Sink;\n// crate::run in a comment\nfn f() { crate::map::x(); }\n#[cfg(test)]\nmod tests { use crate::run::X; }";
    assert_eq!(uses(text), ["store", "map"]);
    assert!(layer("store") > layer("source"));
}
