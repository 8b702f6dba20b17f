//! The hub client against the loopback hub, and the loopback hub against the hub's own
//! Python client (`huggingface_hub`): both sides speak the same protocol, and share a cache.

use habits_tests::fixtures::owm_repo;
use habits_tests::hub_server::LoopbackHub;
use habits_tests::procs::{pipeline, python, run_expect, sha256};

const REPO: &str = "open-web-math/open-web-math";

#[test]
fn huggingface_hub_downloads_and_lists_from_the_loopback_hub() {
    let (repo, _) = owm_repo(3, 20, None);
    let file = repo.files[2].clone();
    let all: Vec<String> = repo.files.iter().map(|f| f.path.clone()).collect();
    let hub = LoopbackHub::start(vec![repo]);
    hub.set_page_size(2);
    let home = tempfile::tempdir().unwrap();
    let script = r#"
import sys
from huggingface_hub import hf_hub_download, HfApi
p = hf_hub_download(repo_id=sys.argv[1], filename=sys.argv[2], repo_type="dataset")
print(p)
print("\n".join(sorted(HfApi().list_repo_files(sys.argv[1], repo_type="dataset"))))
"#;
    let envs = [("HF_ENDPOINT", hub.endpoint()), ("HF_HOME", home.path().display().to_string()), ("HF_HUB_DISABLE_TELEMETRY", "1".into())];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = python(script, &[REPO, &file.path], &envs);
    let mut lines = out.lines();
    let path = lines.next().unwrap();
    assert_eq!(sha256(std::path::Path::new(path)), file.sha256());
    let listed: Vec<&str> = lines.collect();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(listed, expected, "pagination must list every file");
    assert!(hub.log().iter().filter(|l| l.target.contains("/tree/")).count() >= 2, "listing used several pages");
}

#[test]
fn fetch_fills_the_cache_that_huggingface_hub_reads() {
    let (repo, _) = owm_repo(3, 20, None);
    let commit = repo.commit.clone();
    let files = repo.files.clone();
    let hub = LoopbackHub::start(vec![repo]);
    hub.set_page_size(2);
    let home = tempfile::tempdir().unwrap();
    let out = run_expect(pipeline().args(["fetch", REPO, "--include", "data/*.parquet"]).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()), true);
    let folder = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let cache = home.path().join("hub").join("datasets--open-web-math--open-web-math");
    assert_eq!(folder, cache.join("snapshots").join(&commit).display().to_string());
    assert_eq!(std::fs::read_to_string(cache.join("refs").join("main")).unwrap(), commit);
    for f in files.iter().filter(|f| f.lfs) {
        let link = cache.join("snapshots").join(&commit).join(&f.path);
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(sha256(&link), f.sha256());
        assert!(cache.join("blobs").join(f.sha256()).is_file());
    }
    assert!(!cache.join("snapshots").join(&commit).join("README.md").exists(), "include filters the listing");

    // The hub's own client finds our files offline, in our cache layout.
    let f = &files[1];
    let envs = [("HF_HOME", home.path().display().to_string()), ("HF_HUB_OFFLINE", "1".into())];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = python(
        "import sys\nfrom huggingface_hub import hf_hub_download\nprint(hf_hub_download(repo_id=sys.argv[1], filename=sys.argv[2], repo_type='dataset'))",
        &[REPO, &f.path],
        &envs,
    );
    assert_eq!(sha256(std::path::Path::new(p.trim())), f.sha256());

    // A second fetch downloads nothing.
    hub.clear_log();
    run_expect(pipeline().args(["fetch", REPO, "--include", "data/*.parquet"]).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()), true);
    assert!(hub.log().iter().all(|l| l.origin == "api"), "finished files must not be downloaded again");
}

#[test]
fn fetch_into_a_local_dir_like_the_hub_cli() {
    let (repo, _) = owm_repo(2, 10, None);
    let files = repo.files.clone();
    let hub = LoopbackHub::start(vec![repo]);
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let fetch =
        || run_expect(pipeline().args(["fetch", REPO, "--local-dir"]).arg(dir.path()).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()), true);
    fetch();
    for f in &files {
        assert_eq!(sha256(&dir.path().join(&f.path)), f.sha256(), "{}", f.path);
    }
    assert!(!home.path().join("hub").exists(), "--local-dir bypasses the cache");
    hub.clear_log();
    fetch();
    assert!(hub.log().iter().all(|l| l.origin == "api"), "finished files must not be downloaded again");
}

#[test]
fn the_token_goes_to_the_hub_only_and_is_never_printed() {
    let (repo, _) = owm_repo(1, 10, None);
    let hub = LoopbackHub::start(vec![repo]);
    let secret = "hf_loopbackSECRET42";
    hub.require_token(secret);
    let home = tempfile::tempdir().unwrap();
    let out = run_expect(pipeline().args(["-vv", "fetch", REPO]).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()).env("HF_TOKEN", secret), true);
    let log = hub.log();
    assert!(log.iter().filter(|l| l.origin == "api").all(|l| l.authorization.as_deref() == Some(&format!("Bearer {secret}"))));
    assert!(log.iter().any(|l| l.origin == "cdn"));
    assert!(log.iter().filter(|l| l.origin == "cdn").all(|l| l.authorization.is_none()), "the token must not follow the redirect to the CDN");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!printed.contains(secret), "the token leaked into the output");

    // A wrong token: one clear error, and still no token in it.
    let out =
        run_expect(pipeline().args(["fetch", REPO]).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()).env("HF_TOKEN", "hf_wrongTOKEN7"), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    assert!(!err.contains("hf_wrongTOKEN7"), "{err}");
}
