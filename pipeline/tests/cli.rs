//! The `pipeline` binary's command line: help, and errors for bad arguments.

use std::process::Command;

fn pipeline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

#[test]
fn help_lists_every_stage() {
    let out = pipeline().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "plan", "fetch", "sample"] {
        assert!(text.contains(cmd), "--help lacks `{cmd}`:\n{text}");
    }
}

#[test]
fn a_bad_shard_is_explained() {
    let out = pipeline().args(["sample", "--config", "x.toml", "--shard", "3/2"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 <= i < n"), "{err}");
}

#[test]
fn a_missing_config_is_named() {
    let out = pipeline().args(["sample", "--config", "/nonexistent/habits.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/habits.toml"), "{err}");
}
