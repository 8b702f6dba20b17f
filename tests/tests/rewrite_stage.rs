//! The rewrite stage end to end against the fake OpenAI server: selected documents come
//! back as question / thoughts / answer with the set's instructions; bad answers (no tags,
//! tags out of order, empty thoughts, 10x-long answers) end as recorded failures, never as
//! rows with fields; a rerun pays for nothing.

use habits_tests::llm_server::{FakeLlm, LlmFault, expected_rewrite};
use habits_tests::procs::{pipeline, python, run_expect};
use habits_tests::run_config::llm_config;

#[test]
fn selected_documents_are_rewritten_and_bad_answers_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    // `?` = problem, `Answer` = solution, `instead` = backtracking (rich); no cue = control.
    let docs = [
        ("RICH1? We try instead. Answer: 1.", "rich", "ok"),
        ("CTRL1? Plain steps. Answer: 2.", "control", "ok"),
        ("FIXED? Plain. Answer: 3.", "control", "ok"),
        ("BADTAG? Plain. Answer: 4.", "control", "missing_tag"),
        ("ORDER? Plain. Answer: 5.", "control", "out_of_order"),
        ("EMPTYTH? Plain. Answer: 6.", "control", "empty_field"),
        ("LONG? Plain. Answer: 7.", "control", "too_long"),
        ("NOTSELECTED. Answer: 8.", "-", "-"),
    ];
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let lines: Vec<String> = docs.iter().map(|(t, _, _)| serde_json::json!({ "text": t }).to_string()).collect();
    std::fs::write(src.join("d.jsonl"), lines.join("\n")).unwrap();
    let llm = FakeLlm::start();
    let twice = |text: &str| vec![LlmFault::Reply(text.to_string()); 2];
    llm.inject_for("rewrite", "FIXED", vec![LlmFault::Reply("no tags".into())]);
    llm.inject_for("rewrite", "BADTAG", twice("I rewrote it, but without tags."));
    llm.inject_for("rewrite", "ORDER", twice("<thoughts>t</thoughts>\n<question>q</question>\n<answer>a</answer>"));
    llm.inject_for("rewrite", "EMPTYTH", twice("<question>q</question>\n<thoughts>  </thoughts>\n<answer>a</answer>"));
    let long = format!("<question>q</question>\n<thoughts>{}</thoughts>\n<answer>a</answer>", "x".repeat(20_000));
    llm.inject_for("rewrite", "LONG", twice(&long));
    let cfg = llm_config(tmp.path(), "rw", docs.len(), &llm.endpoint(), "", None);
    let out = run_expect(pipeline().arg("run").arg("--config").arg(&cfg), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rewrites: 7 documents"), "{err}");

    let script = r#"
import sys, json, pyarrow.parquet as pq
docs = {r["doc_id"]: r["text"] for r in pq.read_table(sys.argv[2], columns=["doc_id", "text"]).to_pylist()}
print(json.dumps({docs[r["doc_id"]]: r for r in pq.read_table(sys.argv[1]).to_pylist()}))
"#;
    let run = tmp.path().join("runs/rw");
    let rows: serde_json::Value =
        serde_json::from_str(&python(script, &[run.join("rewrites").to_str().unwrap(), run.join("docs").to_str().unwrap()], &[])).unwrap();
    for (text, set, status) in docs {
        let Some(row) = rows.get(text) else {
            assert_eq!(set, "-", "{text} is missing from rewrites");
            continue;
        };
        assert_eq!(row["set"], set, "{text}");
        assert_eq!(row["status"], status, "{text}");
        if status == "ok" {
            let (q, t, a) = expected_rewrite(&format!("rewrite_{set}"), text);
            assert_eq!(
                (row["question"].as_str(), row["thoughts"].as_str(), row["answer"].as_str()),
                (Some(q.as_str()), Some(t.as_str()), Some(a.as_str())),
                "{text}"
            );
        } else {
            assert!(row["question"].is_null() && row["thoughts"].is_null() && row["answer"].is_null(), "a failure is never a training example: {text}");
            assert!(row["raw"].is_string(), "the raw answer is kept: {text}");
        }
    }
    // The rich set got the rich instructions, the control set the control ones.
    let seen = llm.seen();
    assert!(seen.iter().any(|s| s.task == "rewrite_rich" && s.document.starts_with("RICH1")));
    assert!(seen.iter().any(|s| s.task == "rewrite_control" && s.document.starts_with("CTRL1")));
    // One re-ask for the answer that came without tags, then it parsed.
    assert_eq!(seen.iter().filter(|s| s.document.starts_with("FIXED") && s.task.starts_with("rewrite")).count(), 2);

    // A rerun pays for nothing.
    let before = llm.seen().len();
    run_expect(pipeline().arg("-q").arg("rewrite").arg("--config").arg(&cfg), true);
    assert_eq!(llm.seen().len(), before);
}
