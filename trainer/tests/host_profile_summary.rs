//! `scripts/host_profile.py` (the summary of `trainer pretrain --host-profile`) on folded
//! stacks written here: shares by thread, by crate (the standard library's frames charged
//! to their caller) and under a frame pattern; a malformed line is one clear error.

use std::path::Path;
use std::process::{Command, Output};

fn summarise(folded: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.folded");
    std::fs::write(&file, folded).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/host_profile.py");
    Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())).arg(script).arg(&file).args(extra).output().expect("python3")
}

#[test]
fn samples_are_shared_by_thread_crate_and_frame() {
    let folded = "\
main;trainer::main;burn_autodiff::ops::tensor::float_add;hashbrown::map::HashMap::insert 30
DSD-0-0;cubecl_common::device::handle::channel::custom_channel::Server::start;cubecl_runtime::client::ComputeClient::launch 50
main;trainer::main;core::ptr::drop_in_place<x> 20
";
    let out = summarise(folded, &["--under", "burn_autodiff::ops", "--under", "cubecl_runtime::client"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let line_with = |needle: &str| text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle}:\n{text}")).to_string();
    assert!(text.starts_with("100 samples"), "{text}");
    assert!(line_with("  main").contains("50.0%"), "main's thread: {text}");
    assert!(line_with("DSD-0-0").contains("50.0%"));
    // The hash map's frame is charged to autodiff, the drop to the trainer.
    assert!(line_with("  burn_autodiff").contains("30.0%"), "{text}");
    assert!(line_with("  trainer").contains("20.0%"), "{text}");
    assert!(line_with("  cubecl_runtime").contains("50.0%"), "{text}");
    assert!(line_with("cubecl_runtime::client").trim_start().starts_with("50"), "{text}");
}

#[test]
fn a_malformed_line_is_one_clear_error() {
    let out = summarise("main;trainer::main 12\nthis line has no count\n", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:") && err.contains("folded stack"), "{err}");
    let out = summarise("", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no samples"));
}
