//! Fault injection on the loopback hub: every fault ends in a verified download or in one
//! clear error, and never in a corrupt file under its final name.

use std::path::Path;

use habits_tests::fixtures::owm_repo;
use habits_tests::hub_server::{Fault, LoopbackHub, ServedFile, Target};
use habits_tests::procs::{pipeline, run_expect, sha256};

const REPO: &str = "open-web-math/open-web-math";

struct Setup {
    hub: LoopbackHub,
    home: tempfile::TempDir,
    file: ServedFile,
    commit: String,
}

fn setup() -> Setup {
    let (repo, _) = owm_repo(1, 200, None);
    let file = repo.files.iter().find(|f| f.lfs).unwrap().clone();
    let commit = repo.commit.clone();
    Setup { hub: LoopbackHub::start(vec![repo]), home: tempfile::tempdir().unwrap(), file, commit }
}

impl Setup {
    fn fetch(&self, extra: &[&str], success: bool) -> String {
        let out = run_expect(
            pipeline()
                .args(["fetch", REPO, "--include", "data/*", "--backoff-ms", "50", "--max-attempts", "4"])
                .args(extra)
                .env("HF_ENDPOINT", self.hub.endpoint())
                .env("HF_HOME", self.home.path()),
            success,
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn cache(&self) -> std::path::PathBuf {
        self.home.path().join("hub").join("datasets--open-web-math--open-web-math")
    }

    fn assert_verified(&self) {
        let link = self.cache().join("snapshots").join(&self.commit).join(&self.file.path);
        assert_eq!(sha256(&link), self.file.sha256());
    }

    fn assert_nothing_final(&self) {
        assert!(!self.cache().join("blobs").join(self.file.sha256()).exists(), "a bad file took its final name");
        assert!(!self.cache().join("snapshots").join(&self.commit).join(&self.file.path).exists());
    }
}

#[test]
fn a_body_cut_mid_file_resumes_with_a_range_request() {
    let s = setup();
    let cut = s.file.bytes.len() / 3;
    s.hub.inject(Target::Download(s.file.path.clone()), vec![Fault::CutBody(cut)]);
    s.fetch(&[], true);
    s.assert_verified();
    let gets = s.hub.downloads_of(&s.file.path);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some(format!("bytes={cut}-").as_str()), "the retry must resume, not restart");
}

#[test]
fn wrong_bytes_are_caught_by_the_checksum_and_fetched_again() {
    let s = setup();
    s.hub.inject(Target::Download(s.file.path.clone()), vec![Fault::WrongBytes]);
    let err = s.fetch(&[], true);
    s.assert_verified();
    assert_eq!(s.hub.downloads_of(&s.file.path).len(), 2);
    assert!(err.contains("checksum mismatch"), "the mismatch is logged: {err}");
}

#[test]
fn always_wrong_bytes_end_in_one_clear_error_and_no_file() {
    let s = setup();
    s.hub.inject(Target::Download(s.file.path.clone()), vec![Fault::WrongBytes; 10]);
    let err = s.fetch(&[], false);
    assert!(err.contains("checksum mismatch") && err.contains(&s.file.path), "{err}");
    assert!(err.contains("rerun to resume"), "{err}");
    s.assert_nothing_final();
    let partial = s.cache().join("blobs").join(format!("{}.incomplete", s.file.sha256()));
    assert!(!partial.exists(), "bad bytes are deleted, not kept for a resume");
}

#[test]
fn rate_limits_are_honoured_with_retry_after() {
    let s = setup();
    s.hub.inject(Target::Download(s.file.path.clone()), vec![Fault::TooManyRequests(1)]);
    let t = std::time::Instant::now();
    s.fetch(&[], true);
    assert!(t.elapsed() >= std::time::Duration::from_millis(950), "Retry-After: 1 must be waited for");
    s.assert_verified();
    assert_eq!(s.hub.downloads_of(&s.file.path).len(), 2);
}

#[test]
fn server_errors_are_retried_everywhere() {
    let s = setup();
    s.hub.inject(Target::Revision, vec![Fault::ServerError]);
    s.hub.inject(Target::Tree, vec![Fault::ServerError, Fault::ServerError]);
    s.hub.inject(Target::Download(s.file.path.clone()), vec![Fault::ServerError]);
    s.fetch(&[], true);
    s.assert_verified();
}

#[test]
fn persistent_server_errors_give_up_with_the_status() {
    let s = setup();
    s.hub.inject(Target::Tree, vec![Fault::ServerError; 10]);
    let err = s.fetch(&[], false);
    assert!(err.contains("HTTP 500") && err.contains("/tree/"), "{err}");
}

#[test]
fn a_missing_revision_is_a_clear_404() {
    let s = setup();
    let err = s.fetch(&["--revision", "v9-does-not-exist"], false);
    assert!(err.contains("404") && err.contains("v9-does-not-exist"), "{err}");
    assert_eq!(s.hub.log().len(), 1, "a 404 is not retried");
}

#[test]
fn unauthorized_is_a_clear_401_that_is_not_retried() {
    let s = setup();
    s.hub.inject(Target::Revision, vec![Fault::Unauthorized]);
    let err = s.fetch(&[], false);
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    assert_eq!(s.hub.log().len(), 1);
}

#[test]
fn a_leftover_partial_file_is_resumed() {
    let s = setup();
    let blobs = s.cache().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = s.file.bytes.len() / 2;
    std::fs::write(blobs.join(format!("{}.incomplete", s.file.sha256())), &s.file.bytes[..half]).unwrap();
    s.fetch(&[], true);
    s.assert_verified();
    let gets = s.hub.downloads_of(&s.file.path);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range.as_deref(), Some(format!("bytes={half}-").as_str()));
    assert!(!Path::new(&blobs.join(format!("{}.incomplete", s.file.sha256()))).exists());
}
