//! The crate's modules depend on each other one way only, so that a newcomer can read it from
//! the bottom up: the domain (`state`), the replica that runs it, the transports around the
//! replica, the composition root that mounts them, and the daemon that configures it.
//!
//! Checked on the source text: every `crate::module` a file names (code, not comments) must
//! sit in a lower layer than the file's own module. A use that a layer may not make fails
//! here, naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer; a module may use only lower layers.
const LAYERS: &[(&str, u32)] = &[
    // Building blocks that know nothing of the replica.
    ("tls", 0),
    ("state", 0),
    ("limits", 1),
    ("listen", 2),
    // The replica: storage, Raft, the write path, reads.
    ("replica", 3),
    // The transports, independent of each other.
    ("grpc", 4),
    ("slap", 4),
    ("observe", 4),
    // The web panel shows the status page (observe) and reads forms as SLAP does.
    ("panel", 5),
    ("server", 6),
    ("daemon", 7),
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level modules a line of code names as `crate::name` or `crate::{name, ...}`.
fn named_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let group = match rest.strip_prefix('{') {
            Some(inner) => inner.split('}').next().unwrap_or_default().to_string(),
            None => rest.to_string(),
        };
        for part in group.split(',') {
            let name: String = part
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a path");
        let module = first.trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(module) else {
            broken.push(format!(
                "{}: module {module} has no layer",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in named_modules(line) {
                if used == module {
                    continue;
                }
                let Some(&theirs) = layers.get(used.as_str()) else {
                    continue; // a crate-root item, not a module
                };
                if theirs < own {
                    continue;
                }
                broken.push(format!(
                    "{}:{}: {module} (layer {own}) uses {used} (layer {theirs})",
                    relative.display(),
                    number + 1
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn names_are_read_from_paths_and_groups() {
    assert_eq!(named_modules("use crate::replica::Core;"), ["replica"]);
    assert_eq!(
        named_modules("use crate::{state::Op, replica};"),
        ["state", "replica"]
    );
    assert_eq!(
        named_modules("let x = 1; // crate::server"),
        Vec::<String>::new()
    );
}
