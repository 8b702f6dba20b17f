//! Bad input to corpus-tools gets one clear message that names the thing and the fix, and
//! exit code 1; nothing is written. (Also makes `cargo test` build the binary that the
//! end-to-end tests in `tests/` run.)

use std::process::Command;

fn corpus_tools() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corpus-tools"))
}

fn fails_with(cmd: &mut Command, needle: &str) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn a_missing_or_empty_run_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    fails_with(corpus_tools().args(["sql", "--run", "/no/such/run", "SELECT 1"]), "no run at /no/such/run");
    fails_with(corpus_tools().args(["tables", "--run"]).arg(tmp.path()), "holds no run tables");
    fails_with(corpus_tools().args(["verify", "--run"]).arg(tmp.path()), "has no manifests to verify");
    fails_with(corpus_tools().args(["export", "--format", "parquet", "--out"]).arg(tmp.path().join("o")).arg("--run").arg(tmp.path()), "has no built sets");
    assert!(!tmp.path().join("o").exists(), "nothing written");
}

#[test]
fn a_damaged_manifest_is_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("docs")).unwrap();
    std::fs::write(tmp.path().join("docs/_manifest.json"), "{ not json").unwrap();
    fails_with(corpus_tools().args(["verify", "--run"]).arg(tmp.path()), "docs/_manifest.json is not valid JSON: rerun the stage that wrote it");
}

#[test]
fn a_file_that_is_not_parquet_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("labels")).unwrap();
    std::fs::write(tmp.path().join("labels/part-00000.parquet"), "not parquet at all").unwrap();
    fails_with(corpus_tools().args(["tables", "--run"]).arg(tmp.path()), "cannot read the labels table (labels/*.parquet)");
}
