//! Repository hygiene, checked on every test run: every Rust file opens with `//!` docs, and
//! no tracked text names a machine-specific path.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_rust_file_starts_with_module_docs() {
    let mut files = Vec::new();
    for dir in ["crates", "src", "tests", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found the sources");
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "files without a leading //! doc: {undocumented:?}");
}

#[test]
fn no_machine_paths_in_sources_or_docs() {
    let mut files = Vec::new();
    for dir in ["crates", "src", "tests", "benches", "scripts", "deploy", "docs", "proto"] {
        let dir = root().join(dir);
        if dir.exists() {
            collect_text(&dir, &mut files);
        }
    }
    for top in ["README.md", "ARCHITECTURE.md", "Cargo.toml"] {
        files.push(root().join(top));
    }
    let forbidden = ["/wo", "rk/", "/ro", "ot/"].chunks(2).map(|p| p.concat()).collect::<Vec<_>>();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for needle in &forbidden {
            assert!(!text.contains(needle.as_str()), "{} contains a machine path ({needle})", f.display());
        }
    }
}

fn collect_text(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_text(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Shipped binaries carry no debug info, and a profile keeps the line tables for profiling
/// (issue 26: the release `tessera` binary was ~880 MB with them).
#[test]
fn release_builds_carry_no_debug_info_and_profiling_builds_keep_line_tables() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    let profile = |name: &str| manifest["profile"].get(name).and_then(|p| p.as_table()).cloned();
    let release = profile("release").expect("a [profile.release]");
    let debug = release.get("debug").expect("[profile.release] says its debug setting");
    assert!(
        matches!(debug, toml::Value::Boolean(false)) || debug.as_str() == Some("none") || debug.as_integer() == Some(0),
        "[profile.release] debug = {debug}: shipped binaries carry no debug info"
    );
    let profiling = profile("profiling").expect("a [profile.profiling] for perf");
    assert_eq!(profiling.get("inherits").and_then(|v| v.as_str()), Some("release"));
    assert_eq!(profiling.get("debug").and_then(|v| v.as_str()), Some("line-tables-only"));
}
