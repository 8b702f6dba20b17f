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

/// A config whose source is the JSONL folder `<tmp>/src` (all `docs` documents sampled),
/// with `[llm]` pointing at `endpoint` (model `fake`, fast retries) plus `extra_llm`, and
/// the shipped prompts (or `prompts`).
pub fn llm_config(tmp: &Path, name: &str, docs: usize, endpoint: &str, extra_llm: &str, prompts: Option<&Path>) -> PathBuf {
    let prompts_dir = prompts.map(Path::to_path_buf).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prompts/classify"));
    let extra = format!(
        "\n[llm]\nendpoints = [\"{}\"]\nmodel = \"fake\"\nbackoff_ms = 10\nbackoff_max_s = 1\nmax_attempts = 4\ntimeout_s = 2\n{extra_llm}\n[rewrite]\nprompts_dir = \"{}\"\n\n[build]\nprompts_dir = \"{}\"\n\n[classify]\nprompts_dir = \"{}\"\n",
        endpoint,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prompts/rewrite").display(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prompts/build").display(),
        prompts_dir.display()
    );
    let cfg = write_config(tmp, name, docs as u64, &[local_source("docs", &tmp.join("src"), 1.0)], "");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    // [llm] and [classify] go before the [[sources]] array.
    let at = text.find("[[sources]]").unwrap();
    text.insert_str(at, &extra);
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// The complete records of a stage's request journal (`runs/<run>/journal/<stage>.jsonl`);
/// a line torn by a kill (on any byte) is skipped.
pub fn journal_lines(tmp: &Path, run: &str, stage: &str) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(journal_path(tmp, run, stage)).unwrap_or_default();
    bytes.split(|&b| b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect()
}

/// `runs/<run>/journal/<stage>.jsonl` of a config written by [`write_config`].
pub fn journal_path(tmp: &Path, run: &str, stage: &str) -> PathBuf {
    tmp.join("runs").join(run).join("journal").join(format!("{stage}.jsonl"))
}

/// [`llm_config`] against a fake LLM, with a `[build]` section that uses the Llama-3
/// tokenizer plus `build` (e.g. `budget_tokens = 2000`).
pub fn build_config(tmp: &Path, name: &str, docs: usize, llm: &crate::llm_server::FakeLlm, extra_llm: &str, build: &str) -> PathBuf {
    let cfg = llm_config(tmp, name, docs, &llm.endpoint(), extra_llm, None);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let build = format!("[build]\ntokenizer = \"{}\"\n{build}\n", crate::procs::llama3_tokenizer().display());
    std::fs::write(&cfg, text.replacen("[build]\n", &build, 1)).unwrap();
    cfg
}
