//! `kill -9` in the middle of a run, then a rerun: the output is identical to an
//! uninterrupted run, and no finished file is downloaded again.

use std::path::Path;
use std::time::{Duration, Instant};

use habits_tests::fixtures::owm_repo;
use habits_tests::hub_server::{Fault, LoopbackHub, Target};
use habits_tests::procs::{pipeline, run_expect};
use habits_tests::run_config::{hub_source, part_checksums, write_config};

fn candidate_parts(run: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(run.join("work").join("sample")) else { return 0 };
    dirs.flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|e| e.flatten())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("cand-") && n.ends_with(".parquet")
        })
        .count()
}

#[test]
fn kill_9_during_download_and_sampling_then_rerun() {
    let (repo, _) = owm_repo(4, 60, None);
    let files: Vec<String> = repo.files.iter().filter(|f| f.lfs).map(|f| f.path.clone()).collect();
    let blobs: Vec<(String, String)> = repo.files.iter().filter(|f| f.lfs).map(|f| (f.path.clone(), f.sha256())).collect();
    let hub = LoopbackHub::start(vec![repo]);
    for f in &files {
        hub.inject(Target::Download(f.clone()), vec![Fault::Delay(700)]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let src = [hub_source("owm", "open-web-math/open-web-math", "data/*.parquet", 1.0)];
    let extra = "threads = 1\npart_rows = 50";
    let cfg = write_config(tmp.path(), "killed", 100, &src, extra);
    let cfg_text = std::fs::read_to_string(&cfg).unwrap().replace("[hub]\n", "[hub]\nconcurrency = 1\n");
    std::fs::write(&cfg, cfg_text).unwrap();

    let mut child = pipeline().arg("-q").arg("run").arg("--config").arg(&cfg).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()).spawn().unwrap();
    let run_dir = tmp.path().join("runs").join("killed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while candidate_parts(&run_dir) < 1 {
        assert!(Instant::now() < deadline, "no file was scanned within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let cache = home.path().join("hub").join("datasets--open-web-math--open-web-math").join("blobs");
    let complete: Vec<String> = blobs.iter().filter(|(_, sha)| cache.join(sha).is_file()).map(|(p, _)| p.clone()).collect();
    assert!(!complete.is_empty() && complete.len() < files.len(), "killed mid-run: {complete:?}");
    assert!(!run_dir.join("docs").exists(), "no docs table before the sample is complete");
    hub.clear_log();

    run_expect(pipeline().arg("-q").arg("run").arg("--config").arg(&cfg).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()), true);
    for f in &complete {
        assert!(hub.downloads_of(f).is_empty(), "{f} was finished before the kill and was downloaded again");
    }

    // An uninterrupted run of the same config writes the same bytes.
    let fresh = write_config(tmp.path(), "fresh", 100, &src, extra);
    let home2 = tempfile::tempdir().unwrap();
    run_expect(pipeline().arg("-q").arg("run").arg("--config").arg(&fresh).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home2.path()), true);
    assert_eq!(part_checksums(tmp.path(), "killed"), part_checksums(tmp.path(), "fresh"));
}
