//! A hub (or mirror) that lies: listing paths that climb out of their folder or are
//! absolute, a listing whose next page is on another origin, a listing without end.
//! `pipeline fetch` must refuse bad names with one error naming the entry and write nothing
//! outside the folder it was given (checked by walking the file system around it), send the
//! token to no origin but the endpoint's, and stop a listing that never ends.

use std::path::Path;
use std::sync::Arc;

use habits_tests::fixtures::owm_repo;
use habits_tests::hub_server::{LoopbackHub, ServedFile, ServedRepo};
use habits_tests::procs::{pipeline, run_expect};

/// Every file under `root` with its bytes, sorted.
fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else {
                let bytes = if kind.is_symlink() { b"symlink".to_vec() } else { std::fs::read(&path).unwrap() };
                out.push((path.strip_prefix(root).unwrap().display().to_string(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn listing_paths_outside_the_folder_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.parquet");
    std::fs::write(&victim, b"the user's own file").unwrap();
    let absolute = tmp.path().join("abs.parquet");
    std::fs::write(&absolute, b"another file of the user's").unwrap();
    let target = tmp.path().join("a").join("b").join("out");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let evil = |path: String| ServedFile { path, bytes: Arc::new(b"the server's bytes".to_vec()), lfs: true };
    let climbing = format!("data/../../../{}", victim.file_name().unwrap().to_str().unwrap());
    for (name, path) in [("climbing", climbing), ("absolute", absolute.display().to_string())] {
        let before = files_under(tmp.path());
        let hub = LoopbackHub::start(vec![ServedRepo::new("evil/set", vec![evil(path.clone())])]);
        for dest in [vec!["--local-dir".to_string(), target.display().to_string()], vec![]] {
            let out = run_expect(
                pipeline().args(["fetch", "evil/set", "--include", "*"]).args(&dest).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", &home),
                false,
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("{path:?}")) && err.contains("nothing was written"), "{name} {dest:?}: {err}");
        }
        assert_eq!(files_under(tmp.path()), before, "{name}: the file system around the target is unchanged");
    }
}

/// `pipeline fetch` of the OpenWebMath fixture's data from `hub` into `<tmp>/out` (with
/// `local_dir`) or the hub cache under `<tmp>/home`.
fn fetch_owm(hub: &LoopbackHub, tmp: &Path, local_dir: bool) -> std::process::Command {
    let mut cmd = pipeline();
    cmd.args(["fetch", "open-web-math/open-web-math", "--include", "data/*"]).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", tmp.join("home"));
    if local_dir {
        cmd.arg("--local-dir").arg(tmp.join("out"));
    }
    cmd
}

#[test]
fn the_token_goes_to_no_origin_but_the_endpoints() {
    let (repo, _) = owm_repo(3, 20, None);
    let hub = LoopbackHub::start(vec![repo.clone()]);
    hub.require_token("hf_only_for_the_hub");
    hub.set_page_size(1);
    let elsewhere = LoopbackHub::start(vec![repo]);
    elsewhere.set_page_size(1);
    hub.set_next_pages_at(&elsewhere.endpoint());
    let tmp = tempfile::tempdir().unwrap();
    let out = run_expect(fetch_owm(&hub, tmp.path(), true).env("HF_TOKEN", "hf_only_for_the_hub"), true);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains("hf_only_for_the_hub"), "the token is never printed: {said}");
    let api_with_token = hub.log().iter().filter(|l| l.origin == "api" && l.authorization.is_some()).count();
    assert!(api_with_token >= 2, "the endpoint itself gets the token (revision, first page, resolves)");
    let leaked: Vec<_> = elsewhere.log().into_iter().chain(hub.log().into_iter().filter(|l| l.origin == "cdn")).filter(|l| l.authorization.is_some()).collect();
    assert!(leaked.is_empty(), "no other origin sees the token: {leaked:?}");
    assert!(elsewhere.log().iter().any(|l| l.target.contains("/tree/")), "the next pages were listed elsewhere");
}

#[test]
fn a_listing_without_end_is_stopped() {
    let (repo, _) = owm_repo(2, 10, None);
    let hub = LoopbackHub::start(vec![repo]);
    hub.set_endless_listing();
    let tmp = tempfile::tempdir().unwrap();
    let out = run_expect(&mut fetch_owm(&hub, tmp.path(), true), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listed"), "{err}");
    assert!(hub.log().len() < 10, "stopped at the second page: {} requests", hub.log().len());
}

#[test]
fn a_commit_that_is_a_path_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = owm_repo(1, 10, None);
    let hub = LoopbackHub::start(vec![repo]);
    let climbing = "../../../../../../../../../../../../../../../../tmp/x";
    hub.set_revision_sha(climbing);
    let before = files_under(tmp.path());
    for local_dir in [true, false] {
        let mut cmd = fetch_owm(&hub, tmp.path(), local_dir);
        let err = String::from_utf8_lossy(&run_expect(&mut cmd, false).stderr).into_owned();
        assert!(err.contains(&format!("{climbing:?}")) && err.contains("not a commit id"), "{err}");
    }
    assert_eq!(files_under(tmp.path()), before, "nothing written in the cache or the target");
    assert!(hub.log().iter().all(|l| !l.target.contains("/tree/") && !l.target.contains("/resolve/")), "nothing listed or downloaded");
}
