//! One run folder against everyday accidents: a second process started on a live stage (a
//! wrapper killed while `pipeline` lives on), a journal line torn inside a multi-byte
//! character, a disk that fills up mid-stage. Requests are counted at the server: none is
//! paid twice but the ones in flight at an interruption.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use habits_tests::fixtures::small_corpus;
use habits_tests::llm_server::FakeLlm;
use habits_tests::procs::{binary, pipeline, run_expect};
use habits_tests::run_config::{journal_lines, journal_path, llm_config};

/// A run of `n` small documents sampled and ready for classify against `llm`.
fn sampled(tmp: &Path, n: usize, llm: &FakeLlm, extra_llm: &str) -> PathBuf {
    let docs = small_corpus(&tmp.join("src"), n, &[]);
    let cfg = llm_config(tmp, "folder", docs.len(), &llm.endpoint(), extra_llm, None);
    run_expect(pipeline().arg("-q").arg("sample").arg("--config").arg(&cfg), true);
    cfg
}

/// Waits until the classify journal holds `n` records.
fn wait_for_records(tmp: &Path, n: usize, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while journal_lines(tmp, "folder", "classify").len() < n {
        assert!(Instant::now() < deadline, "no progress");
        assert!(child.try_wait().unwrap().is_none(), "finished too soon");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_second_process_on_a_live_stage_is_refused_before_it_sends_or_waits_its_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    llm.set_delay_ms(60);
    let cfg = sampled(tmp.path(), 24, &llm, "max_concurrency = 2");
    let mut first = pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg).spawn().unwrap();
    wait_for_records(tmp.path(), 4, &mut first);

    // Another endpoint for the second process: anything it sent would show there.
    let other = FakeLlm::start();
    let args = ["--endpoint", &other.endpoint(), "--model", "fake"];
    let out = run_expect(pipeline().arg("classify").arg("--config").arg(&cfg).args(args), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", first.id())) && err.contains("host") && err.contains("--wait"), "{err}");
    assert!(other.seen().is_empty(), "the refused process sent nothing");

    // With --wait it starts when the first is done, and pays for nothing twice.
    let mut waiting = pipeline().arg("-q").arg("classify").arg("--wait").arg("--config").arg(&cfg).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(first.try_wait().unwrap().is_none(), "the first process was still working when the second waited");
    assert!(first.wait().unwrap().success());
    assert!(waiting.wait().unwrap().success());
    let answered = llm.answered();
    assert_eq!(answered.len(), 24 * 5);
    assert!(answered.values().all(|&n| n == 1), "nothing paid twice");
}

#[test]
fn a_line_torn_inside_a_multi_byte_character_is_dropped_and_asked_again() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let cfg = sampled(tmp.path(), 10, &llm, "");
    run_expect(pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg), true);
    let path = journal_path(tmp.path(), "folder", "classify");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The last three answers lost: two lines gone, the third torn inside a '≤'.
    let mut last: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    last["reason"] = serde_json::json!("a ≤ b");
    let torn = serde_json::to_string(&last).unwrap();
    let cut = torn.find('≤').unwrap() + 1;
    let mut bytes = (lines[..lines.len() - 3].join("\n") + "\n").into_bytes();
    bytes.extend_from_slice(&torn.as_bytes()[..cut]);
    std::fs::write(&path, &bytes).unwrap();
    let sent = llm.seen().len();

    run_expect(pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg), true);
    assert_eq!(llm.seen().len(), sent + 3, "exactly the three lost answers were asked again");
    let text = std::fs::read_to_string(&path).expect("the journal is whole UTF-8 again");
    assert_eq!(text.lines().count(), 50);
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn a_full_disk_leaves_the_journal_whole_and_the_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let cfg = sampled(tmp.path(), 40, &llm, "max_concurrency = 4");
    // No file of the process may grow past 24 KiB (about 50 records): the journal fills
    // "the disk" halfway. SIGXFSZ is ignored, so the write fails as on a full disk.
    let limit = 24 << 10;
    let full_disk = "import os, resource, signal, sys\n\
                     signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n\
                     resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))\n\
                     os.execv(sys.argv[2], sys.argv[2:])";
    let out = run_expect(
        Command::new("python3").arg("-c").arg(full_disk).arg(limit.to_string()).arg(binary("pipeline")).arg("classify").arg("--config").arg(&cfg),
        false,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot append") && err.contains("classify.jsonl"), "{err}");
    let bytes = std::fs::read(journal_path(tmp.path(), "folder", "classify")).unwrap();
    assert!(!bytes.is_empty() && bytes.len() <= limit && bytes.ends_with(b"\n"), "the failed append was cut away ({} bytes)", bytes.len());
    let kept = journal_lines(tmp.path(), "folder", "classify");
    assert_eq!(kept.len(), bytes.iter().filter(|&&b| b == b'\n').count(), "every line is a whole record");
    assert!(kept.len() < 200);

    run_expect(pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg), true);
    let answered = llm.answered();
    assert_eq!(answered.len(), 200);
    let twice = answered.values().filter(|&&n| n > 1).count();
    assert!(twice <= 5, "only the unjournaled answer and those in flight are paid again: {twice}");
    assert_eq!(journal_lines(tmp.path(), "folder", "classify").len(), 200);
}
