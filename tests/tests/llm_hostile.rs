//! An OpenAI-compatible server that cannot or will not answer: a wrong API key, an endpoint
//! without `/v1`, a share of requests that fail for good, an answer of a gigabyte, an
//! endpoint whose URL carries a password. A stage stops early and says why, a fixed rerun
//! pays exactly the failed requests once, a table with too many failures is marked
//! incomplete, memory stays flat, and no credential is recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use habits_tests::fixtures::small_corpus;
use habits_tests::llm_server::{FakeLlm, LlmFault};
use habits_tests::procs::{pipeline, run_expect, wait_with_peak_memory};
use habits_tests::run_config::{journal_lines, llm_config};

/// A run of `n` small documents (plus `extra`) sampled and ready for classify.
fn sampled(tmp: &Path, n: usize, extra: &[&str], endpoint: &str, extra_llm: &str) -> (PathBuf, Vec<String>) {
    let docs = small_corpus(&tmp.join("src"), n, extra);
    let cfg = llm_config(tmp, "hostile", docs.len(), endpoint, extra_llm, None);
    run_expect(pipeline().arg("-q").arg("sample").arg("--config").arg(&cfg), true);
    (cfg, docs)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_wrong_key_stops_the_stage_and_the_fixed_rerun_pays_exactly_the_failed_requests_once() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    llm.require_key("the-right-key");
    let (cfg, docs) = sampled(tmp.path(), 30, &[], &llm.endpoint(), "");
    let requests = docs.len() * 5;

    let out = run_expect(pipeline().arg("classify").arg("--config").arg(&cfg).env("OPENAI_API_KEY", "a-wrong-key"), false);
    let err = stderr_of(&out);
    assert!(err.contains(&llm.endpoint()) && err.contains("auth") && err.contains("401") && err.contains("$OPENAI_API_KEY"), "{err}");
    assert!(!err.contains("a-wrong-key"), "the key is never printed: {err}");
    let refused = llm.seen().len();
    assert!(
        refused >= 8 && refused < requests,
        "the breaker stopped the stage early: {refused} of {requests} sent; journal {}: {err}",
        journal_lines(tmp.path(), "hostile", "classify").len()
    );
    assert!(!tmp.path().join("runs/hostile/labels").exists(), "no labels table with every label missing");
    let journal = journal_lines(tmp.path(), "hostile", "classify");
    assert_eq!(journal.len(), refused, "every refused request is journaled");
    assert!(journal.iter().all(|r| r["failure"] == "auth" && r["retry_on_rerun"] == true));

    run_expect(pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg).env("OPENAI_API_KEY", "the-right-key"), true);
    let answered = llm.answered();
    assert_eq!(answered.len(), requests, "every request answered");
    assert!(answered.values().all(|&n| n == 1), "none paid twice");
    assert_eq!(llm.seen().len(), refused + requests, "the failed requests were sent again exactly once");
}

#[test]
fn an_endpoint_without_v1_stops_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let without_v1 = llm.endpoint().trim_end_matches("/v1").to_string();
    let (cfg, _) = sampled(tmp.path(), 20, &[], &without_v1, "");
    let err = stderr_of(&run_expect(pipeline().arg("classify").arg("--config").arg(&cfg), false));
    assert!(err.contains("not_found") && err.contains("ending in /v1") && err.contains(&without_v1), "{err}");
    assert!(llm.seen().is_empty(), "the fake serves only /v1");
    // Fixed on the command line: the rerun asks everything.
    run_expect(pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg).arg("--endpoint").arg(llm.endpoint()).arg("--model").arg("fake"), true);
    assert_eq!(llm.answered().len(), 20 * 5);
}

#[test]
fn too_many_failures_mark_the_table_incomplete_and_retry_failed_asks_them_again() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let long = ["PCTX one is long.", "PCTX two is long.", "PCTX three is long.", "PCTX four is long."];
    llm.inject("PCTX", vec![LlmFault::ContextOverflow; long.len() * 5]);
    let (cfg, docs) = sampled(tmp.path(), 16, &long, &llm.endpoint(), "");
    let requests = docs.len() * 5;

    let err = stderr_of(&run_expect(pipeline().arg("classify").arg("--config").arg(&cfg), false));
    assert!(err.contains("20 of 100 requests") && err.contains("context_overflow 20") && err.contains("max_failed_share"), "{err}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path().join("runs/hostile/labels/_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["state"], "incomplete");
    let err = stderr_of(&run_expect(pipeline().arg("select").arg("--config").arg(&cfg), false));
    assert!(err.contains("incomplete") && err.contains("pipeline classify"), "{err}");

    // A plain rerun does not ask a failure that cannot heal again...
    let sent = llm.seen().len();
    run_expect(pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg), false);
    assert_eq!(llm.seen().len(), sent);
    // ...`--retry-failed CLASS` does, exactly those.
    run_expect(pipeline().arg("-q").arg("classify").arg("--retry-failed").arg("context_overflow").arg("--config").arg(&cfg), true);
    assert_eq!(llm.seen().len(), sent + long.len() * 5);
    assert_eq!(llm.answered().len(), requests);
    run_expect(pipeline().arg("-q").arg("select").arg("--config").arg(&cfg), true);
    let err = stderr_of(&run_expect(pipeline().arg("classify").arg("--retry-failed").arg("no_such_class").arg("--config").arg(&cfg), false));
    assert!(err.contains("context_overflow") && err.contains("auth"), "the classes are listed: {err}");
}

#[test]
fn a_gigabyte_answer_is_a_bad_response_in_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    llm.inject_for("backtracking$", "HUGE", vec![LlmFault::Huge(1 << 30); 4]);
    let (cfg, _) = sampled(tmp.path(), 10, &["HUGE answer ahead."], &llm.endpoint(), "");
    let mut child = pipeline().arg("-q").arg("classify").arg("--config").arg(&cfg).spawn().unwrap();
    let (status, peak) = wait_with_peak_memory(&mut child);
    assert!(status.success());
    // Reading one such answer whole would take more than a gigabyte.
    assert!(peak > 0 && peak < 300 << 20, "peak resident set {} MiB", peak >> 20);
    let journal = journal_lines(tmp.path(), "hostile", "classify");
    let huge: Vec<_> = journal.iter().filter(|r| r["failure"] == "bad_response").collect();
    assert_eq!(huge.len(), 1, "one request failed: {huge:?}");
    assert!(huge[0]["reason"].as_str().unwrap().contains("longer than"), "{huge:?}");
    assert_eq!(huge[0]["attempts"], 4);
}

#[test]
fn a_password_in_an_endpoint_is_never_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let with_user = llm.endpoint().replace("http://", "http://someone:hunter2@");
    let (cfg, _) = sampled(tmp.path(), 4, &[], &with_user, "");
    let out = run_expect(pipeline().arg("classify").arg("--config").arg(&cfg), true);
    assert!(!stderr_of(&out).contains("hunter2"));
    let journal = journal_lines(tmp.path(), "hostile", "classify");
    assert!(!journal.is_empty());
    let endpoints: HashMap<String, usize> = journal.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r["endpoint"].as_str().unwrap().to_string()).or_default() += 1;
        m
    });
    assert_eq!(endpoints.keys().collect::<Vec<_>>(), vec![&llm.endpoint()], "recorded without the userinfo");
    for dir in ["journal", "labels"] {
        for e in std::fs::read_dir(tmp.path().join("runs/hostile").join(dir)).unwrap().flatten() {
            assert!(!String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).contains("hunter2"), "{}", e.path().display());
        }
    }
}

#[test]
fn a_rewrite_that_cannot_fit_its_server_stops_before_a_request_and_its_own_server_takes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    llm.report_context(4096);
    let (cfg, _) = sampled(tmp.path(), 20, &[], &llm.endpoint(), "");
    let out = run_expect(pipeline().arg("run").arg("--until").arg("rewrite").arg("--config").arg(&cfg), false);
    let err = stderr_of(&out);
    assert!(err.contains("rewrite asks for up to 5120 new tokens") && err.contains("--max-model-len") && err.contains("[llm.rewrite]"), "{err}");
    assert!(llm.seen().iter().all(|s| !s.task.starts_with("rewrite")), "no rewrite request was sent");
    assert!(llm.seen().iter().any(|s| s.task == "backtracking"), "classify ran (a 4096 context fits its prompts)");

    // The study's way: rewriting on its own server with an 8192-token context.
    let rewriter = FakeLlm::start();
    rewriter.report_context(8192);
    let text =
        std::fs::read_to_string(&cfg).unwrap().replacen("[rewrite]", &format!("[llm.rewrite]\nendpoints = [\"{}\"]\n\n[rewrite]", rewriter.endpoint()), 1);
    std::fs::write(&cfg, text).unwrap();
    run_expect(pipeline().arg("-q").arg("run").arg("--until").arg("rewrite").arg("--config").arg(&cfg), true);
    assert!(!rewriter.seen().is_empty() && rewriter.seen().iter().all(|s| s.task.starts_with("rewrite")));
    let plan = run_expect(pipeline().arg("plan").arg("--config").arg(&cfg), true);
    let said = String::from_utf8_lossy(&plan.stdout);
    assert!(said.contains("rewrite:  needs a server context of") && said.contains("servers: [llm.rewrite] endpoints"), "{said}");
}
