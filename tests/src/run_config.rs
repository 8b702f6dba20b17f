//! Writing run configs for tests: a `[run]` in a temp folder plus the given sources.

use std::path::{Path, PathBuf};

/// A hub source entry.
pub fn hub_source(name: &str, repo: &str, include: &str, weight: f64) -> String {
    format!("[[sources]]\nname = \"{name}\"\nkind = \"hub\"\nrepo = \"{repo}\"\ninclude = [\"{include}\"]\nweight = {weight}\n")
}

/// A local folder source entry.
pub fn local_source(name: &str, path: &Path, weight: f64) -> String {
    format!("[[sources]]\nname = \"{name}\"\nkind = \"local\"\npath = \"{}\"\nweight = {weight}\n", path.display())
}

/// Writes `<dir>/<name>.toml` with runs under `<dir>/runs`; `extra` is appended verbatim.
pub fn write_config(dir: &Path, name: &str, size: u64, sources: &[String], extra: &str) -> PathBuf {
    let seed = if extra.contains("seed =") { "" } else { "seed = 7\n" };
    let text = format!(
        "[run]\nname = \"{name}\"\ndir = \"{}\"\n\n[hub]\nbackoff_ms = 20\nmax_attempts = 4\n\n[sample]\nsize = {size}\n{seed}{extra}\n\n{}",
        dir.join("runs").display(),
        sources.join("\n")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The docs table folder of a run written by [`write_config`].
pub fn docs_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("runs").join(name).join("docs")
}

/// The docs manifest as JSON.
pub fn docs_manifest(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(docs_dir(dir, name).join("_manifest.json")).unwrap()).unwrap()
}

/// The parts' checksums, in order: equal lists mean byte-identical tables.
pub fn part_checksums(dir: &Path, name: &str) -> Vec<String> {
    let m = docs_manifest(dir, name);
    m["parts"].as_array().unwrap().iter().map(|p| p["sha256"].as_str().unwrap().to_string()).collect()
}
