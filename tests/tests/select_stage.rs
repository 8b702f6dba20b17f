//! The select stage end to end: the default rules (problem and solution required; rich =
//! backtracking >= 1; control = all four counts zero), documents with missing labels in
//! neither set, custom rules, and bad rules with one clear error.

use std::path::Path;

use habits_tests::llm_server::{FakeLlm, LlmFault};
use habits_tests::procs::{pipeline, python, run_expect};
use habits_tests::run_config::llm_config;

/// (text, expected set) with the fake model's rules: `instead` = backtracking, `check` =
/// verification, `?` = problem, `Answer` = solution.
const DOCS: [(&str, &str); 5] = [
    ("Q1? We try this instead. Answer: 1.", "rich"),
    ("Q2? Plain steps. Answer: 2.", "control"),
    ("Q3? We check it. Answer: 3.", "neither"),
    ("No problem stated here, instead a remark. Answer: 4.", "not_required"),
    ("CTX1? Too long. Answer: 5.", "unknown"),
];

fn setup(tmp: &Path, llm: &FakeLlm, select: &str) -> std::path::PathBuf {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let lines: Vec<String> = DOCS.iter().map(|(t, _)| serde_json::json!({ "text": t }).to_string()).collect();
    std::fs::write(src.join("d.jsonl"), lines.join("\n")).unwrap();
    llm.inject("CTX1", vec![LlmFault::ContextOverflow; 10]);
    // One document in five fails for good: a share this test accepts.
    let cfg = llm_config(tmp, "sel", DOCS.len(), &llm.endpoint(), "max_failed_share = 0.5", None);
    let text = std::fs::read_to_string(&cfg).unwrap().replacen("[[sources]]", &format!("{select}\n[[sources]]"), 1);
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn sets(tmp: &Path) -> Vec<(String, String)> {
    let script = r#"
import sys, json, pyarrow.parquet as pq
docs = {r["doc_id"]: r["text"] for r in pq.read_table(sys.argv[2], columns=["doc_id", "text"]).to_pylist()}
print(json.dumps(sorted([docs[r["doc_id"]], r["set"]] for r in pq.read_table(sys.argv[1]).to_pylist())))
"#;
    let run = tmp.join("runs/sel");
    serde_json::from_str(&python(script, &[run.join("select").to_str().unwrap(), run.join("docs").to_str().unwrap()], &[])).unwrap()
}

#[test]
fn default_rules_make_the_two_sets_and_count_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let cfg = setup(tmp.path(), &llm, "");
    let out = run_expect(pipeline().arg("run").arg("--until").arg("rewrite").arg("--config").arg(&cfg), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rich 1"));
    let got = sets(tmp.path());
    assert_eq!(got, vec![(DOCS[0].0.to_string(), "rich".to_string()), (DOCS[1].0.to_string(), "control".to_string())]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path().join("runs/sel/select/_manifest.json")).unwrap()).unwrap();
    let c = &m["counts"];
    assert_eq!((c["documents"].as_u64(), c["rich"].as_u64(), c["control"].as_u64()), (Some(5), Some(1), Some(1)));
    assert_eq!((c["neither"].as_u64(), c["not_required"].as_u64(), c["unknown"].as_u64()), (Some(1), Some(1), Some(1)));
    assert_eq!(m["rules"]["rich"], "backtracking >= 1", "the rules are recorded");
}

#[test]
fn custom_rules_and_bad_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let cfg = setup(tmp.path(), &llm, "[select]\nrich = \"verification >= 1 or backtracking >= 1\"\ncontrol = \"verification + backtracking == 0\"\n");
    run_expect(pipeline().arg("-q").arg("run").arg("--until").arg("rewrite").arg("--config").arg(&cfg), true);
    let rich: Vec<String> = sets(tmp.path()).into_iter().filter(|(_, s)| s == "rich").map(|(t, _)| t).collect();
    assert_eq!(rich, vec![DOCS[0].0.to_string(), DOCS[2].0.to_string()]);

    let text = std::fs::read_to_string(&cfg).unwrap().replace("verification >= 1 or", "verifcation >= 1 or");
    std::fs::write(&cfg, text).unwrap();
    let out = run_expect(pipeline().arg("select").arg("--config").arg(&cfg), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("select.rich") && err.contains("unknown name `verifcation`"), "{err}");
}

#[test]
fn sets_take_only_the_listed_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let write = |dir: &str, docs: &[&str]| {
        let src = tmp.path().join(dir);
        std::fs::create_dir_all(&src).unwrap();
        let lines: Vec<String> = docs.iter().map(|t| serde_json::json!({ "text": t }).to_string()).collect();
        std::fs::write(src.join("d.jsonl"), lines.join("\n")).unwrap();
        src
    };
    write("src", &[DOCS[0].0, DOCS[1].0]);
    let other = write("other", &["Q6? We try this instead. Answer: 6.", "Q7? Plain steps. Answer: 7."]);
    let cfg = llm_config(tmp.path(), "sel", 4, &llm.endpoint(), "", None);
    let base = std::fs::read_to_string(&cfg).unwrap() + &habits_tests::run_config::local_source("other", &other, 1.0);
    let with_sources = |listed: &str| std::fs::write(&cfg, format!("{base}\n[select]\nsources = [{listed}]\n")).unwrap();
    with_sources("\"docs\"");
    run_expect(pipeline().arg("-q").arg("run").arg("--until").arg("rewrite").arg("--config").arg(&cfg), true);
    assert_eq!(sets(tmp.path()), vec![(DOCS[0].0.to_string(), "rich".to_string()), (DOCS[1].0.to_string(), "control".to_string())]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path().join("runs/sel/select/_manifest.json")).unwrap()).unwrap();
    assert_eq!((m["counts"]["documents"].as_u64(), m["counts"]["other_source"].as_u64()), (Some(4), Some(2)));

    // A name that is no source is one error naming the known ones.
    with_sources("\"finemath\"");
    let out = run_expect(pipeline().arg("select").arg("--config").arg(&cfg), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("select.sources names `finemath`") && err.contains("known: docs, other"), "{err}");
}
