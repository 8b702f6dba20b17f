//! The build stage end to end against the fake OpenAI server: both sets meet the token
//! budget within 0.1%, with matched length distributions; pyarrow, HF `datasets`, numpy
//! over Megatron's index layout and HF `tokenizers` agree on every row and token; no
//! example is in both sets or in both splits; failed rewrites never become examples; the
//! same config gives byte-identical shards; a `kill -9` during rewrite loses nothing and
//! never pays a finished request twice.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use habits_tests::fixtures::TextGen;
use habits_tests::llm_server::{FakeLlm, LlmFault};
use habits_tests::procs::{llama3_tokenizer, pipeline, python, run_expect, sha256};
use habits_tests::run_config::{build_config, journal_lines};

const BUDGET: u64 = 15_000;

/// `n` documents, alternately habit-rich (long: "instead") and control (short, no cue
/// word), each with a problem and an answer; `bad` of them get rewrites that never parse.
fn corpus(dir: &Path, n: usize, bad: &[usize]) -> Vec<String> {
    let mut text = TextGen::new(11);
    let docs: Vec<String> = (0..n)
        .map(|i| {
            let marker = if bad.contains(&i) { "BADREWRITE " } else { "" };
            if i % 2 == 0 {
                let len = 300 + (i * 7919) % 2700;
                format!("{marker}R{i}? We try one way, then instead another. {} Answer: {i}.", text.plain(len))
            } else {
                let len = 100 + (i * 7919) % 1400;
                format!("{marker}C{i}? Plain steps. {} Answer: {i}.", text.plain(len))
            }
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    let lines: Vec<String> = docs.iter().map(|t| serde_json::json!({ "text": t }).to_string()).collect();
    std::fs::write(dir.join("d.jsonl"), lines.join("\n") + "\n").unwrap();
    docs
}

/// Every file under `dir` -> its sha256.
fn checksums(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().display().to_string(), sha256(&e.path()));
            }
        }
    }
    out
}

fn read_sets(sets: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_sets.py");
    let cache = tempfile::tempdir().unwrap();
    let out = python(
        &std::fs::read_to_string(script).unwrap(),
        &[sets.to_str().unwrap(), llama3_tokenizer().to_str().unwrap()],
        &[
            ("HF_DATASETS_OFFLINE", "1"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_DATASETS_CACHE", cache.path().to_str().unwrap()),
            ("HF_HOME", cache.path().to_str().unwrap()),
        ],
    );
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

#[test]
fn sets_meet_the_budget_and_every_reader_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = [4, 5];
    let docs = corpus(&tmp.path().join("src"), 240, &bad);
    let llm = FakeLlm::start();
    llm.inject_for("rewrite", "BADREWRITE", vec![LlmFault::Reply("no tags at all".into()); 4]);
    let cfg = build_config(tmp.path(), "b", docs.len(), &llm, "", &format!("budget_tokens = {BUDGET}\nshard_rows = 20\n"));
    let out = run_expect(pipeline().arg("run").arg("--config").arg(&cfg), true);
    let err = String::from_utf8_lossy(&out.stderr);
    let sets = tmp.path().join("runs/b/sets");
    assert!(err.contains("run `b` complete") && err.contains(&sets.join("rich").display().to_string()), "{err}");

    if let Ok(keep) = std::env::var("HABITS_KEEP_SETS") {
        // For checks elsewhere (scripts/megatron_check.py on the GPU machine).
        std::process::Command::new("cp").arg("-r").arg(&sets).arg(&keep).status().unwrap();
    }
    let read = read_sets(&sets);
    let mut all_ids: Vec<HashSet<String>> = Vec::new();
    let mut all_completions: Vec<HashSet<String>> = Vec::new();
    for set in ["rich", "control"] {
        let s = &read[set];
        let (train, test) = (&s["train"], &s["test"]);
        let tokens = train["completion_tokens"].as_u64().unwrap() + test["completion_tokens"].as_u64().unwrap();
        assert!(tokens <= BUDGET && tokens as f64 >= BUDGET as f64 * 0.999, "{set}: {tokens} tokens for a budget of {BUDGET}");
        let (n_train, n_test) = (train["rows"].as_u64().unwrap(), test["rows"].as_u64().unwrap());
        assert_eq!(n_test, ((n_train + n_test) as f64 * 0.05).round() as u64, "{set}: a 5% test split");
        assert!(n_train > 20, "{set}: several shards of 20 rows");
        let (tr, te): (HashSet<String>, HashSet<String>) = (strings(&train["doc_ids"]).into_iter().collect(), strings(&test["doc_ids"]).into_iter().collect());
        assert!(tr.is_disjoint(&te), "{set}: a test example is in train");
        for lineage in train["lineage"].as_array().unwrap() {
            assert_eq!(lineage[0], "docs");
            assert!(lineage[2].as_str().unwrap().ends_with("d.jsonl"), "{lineage}");
        }
        for c in strings(&train["completions"]) {
            assert!(c.starts_with("<think>") && c.contains("</think>\n<answer>") && c.ends_with("</answer>"), "{c}");
            assert!(!c.contains("BADREWRITE"), "a failed rewrite became an example");
        }
        all_ids.push(tr.union(&te).cloned().collect());
        all_completions.push(strings(&train["completions"]).into_iter().chain(strings(&test["completions"])).collect());
    }
    assert!(all_ids[0].is_disjoint(&all_ids[1]), "an example is in both sets");
    assert!(all_completions[0].is_disjoint(&all_completions[1]), "a completion is in both sets");

    // Rich documents are longer; matching made the chosen lengths alike.
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sets.join("_manifest.json")).unwrap()).unwrap();
    let (before, after) = (m["length_ks_candidates"].as_f64().unwrap(), m["length_ks_chosen"].as_f64().unwrap());
    assert!(before > 0.3 && after < before / 2.0, "KS distance {before} among candidates, {after} in the sets");
    assert_eq!(m["choice"]["budget_met"], true);
    assert_eq!(m["gathered"]["failed"], serde_json::json!([1, 1]));

    // The same config again: byte-identical shards, manifests and cards.
    let first = checksums(&sets);
    assert!(first.keys().any(|k| k.starts_with("rich/data/train-00001-of-")), "several shards: {first:?}");
    run_expect(pipeline().arg("-q").arg("build").arg("--config").arg(&cfg), true);
    assert_eq!(checksums(&sets), first);

    budget_counted_as_the_study_counted(&cfg, &sets);
}

/// `build.count_tokens = "study"`: each chosen example counts as HF `tokenizers` counts
/// BOS + "\n" + its completion (the study's way), clipped at 4096, and the sets meet the
/// budget under that count.
fn budget_counted_as_the_study_counted(cfg: &Path, sets: &Path) {
    let text = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(cfg, text.replacen("[build]\n", "[build]\ncount_tokens = \"study\"\n", 1)).unwrap();
    run_expect(pipeline().arg("-q").arg("build").arg("--config").arg(cfg), true);
    let script = r#"
import sys, glob, json, pyarrow.parquet as pq
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2])
out = {}
for s in ["rich", "control"]:
    rows = [r for f in sorted(glob.glob(f"{sys.argv[1]}/{s}/data/*.parquet")) for r in pq.read_table(f, columns=["completion"]).to_pylist()]
    # The study's tokenizer (Llama-3.1's) puts BOS first; this tokenizer.json has no post-processor.
    bos = [tok.token_to_id("<|begin_of_text|>")]
    encodings = tok.encode_batch(["\n" + r["completion"] for r in rows], add_special_tokens=False)
    out[s] = sum(min(len(bos + e.ids), 4096) for e in encodings)
print(json.dumps(out))
"#;
    let counted: serde_json::Value = serde_json::from_str(&python(script, &[sets.to_str().unwrap(), llama3_tokenizer().to_str().unwrap()], &[])).unwrap();
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sets.join("_manifest.json")).unwrap()).unwrap();
    for (i, set) in ["rich", "control"].iter().enumerate() {
        let (ours, study) = (m["choice"]["tokens"][i].as_u64().unwrap(), counted[set].as_u64().unwrap());
        assert!(ours.abs_diff(study) as f64 <= 0.01 * study as f64, "{set}: counted {ours}, the study's count {study}");
        assert!(study <= BUDGET && study as f64 >= BUDGET as f64 * 0.999, "{set}: {study} tokens by the study's count for a budget of {BUDGET}");
    }
}

#[test]
fn kill_9_during_rewrite_then_rerun_pays_no_finished_request_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(&tmp.path().join("src"), 40, &[]);
    let llm = FakeLlm::start();
    let cfg = build_config(tmp.path(), "killed", docs.len(), &llm, "max_concurrency = 2\nmin_concurrency = 1\nconcurrency = 2", "budget_tokens = 2000");
    run_expect(pipeline().arg("-q").arg("run").arg("--until").arg("select").arg("--config").arg(&cfg), true);
    llm.set_delay_ms(100);
    let mut child = pipeline().arg("-q").arg("rewrite").arg("--config").arg(&cfg).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while journal_lines(tmp.path(), "killed", "rewrite").len() < 10 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(child.try_wait().unwrap().is_none(), "finished before the kill");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let journaled: HashSet<String> = journal_lines(tmp.path(), "killed", "rewrite").iter().map(|r| r["doc_id"].as_str().unwrap().to_string()).collect();
    assert!(journaled.len() < docs.len(), "killed mid-stage");
    llm.set_delay_ms(0);
    let out = run_expect(pipeline().arg("run").arg("--config").arg(&cfg), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rewrites: 40 documents"), "{err}");

    let after = journal_lines(tmp.path(), "killed", "rewrite");
    assert_eq!(after.len(), docs.len(), "one record per document after the rerun");
    let rewrites: BTreeMap<(String, String), usize> = llm.answered().into_iter().filter(|((task, _), _)| task.starts_with("rewrite")).collect();
    assert_eq!(rewrites.len(), docs.len(), "every document was rewritten");
    let twice: Vec<&String> = rewrites.iter().filter(|(_, n)| **n > 1).map(|((_, d), _)| d).collect();
    assert!(twice.len() <= 2, "only the requests in flight at the kill (a window of 2) may be sent again: {twice:?}");
    let rows = python(
        "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, sum(s == 'ok' for s in t.column('status').to_pylist()))",
        &[tmp.path().join("runs/killed/rewrites").to_str().unwrap()],
        &[],
    );
    assert_eq!(rows.trim(), "40 40", "a complete rewrites table");
    assert!(tmp.path().join("runs/killed/sets/rich/manifest.json").is_file() && tmp.path().join("runs/killed/sets/control/README.md").is_file());
}

/// The paper profile's rewrite prompts (`configs/prompts/rewrite-study`, the study's choice:
/// the rich prompt asks for the four habits, the control prompt is neutral) render and make
/// both sets; every rewrite request is journaled under those prompts' hashes.
#[test]
fn the_study_rewrite_prompts_make_both_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(&tmp.path().join("src"), 30, &[]);
    let llm = FakeLlm::start();
    let cfg = build_config(tmp.path(), "study", docs.len(), &llm, "", "budget_tokens = 1500");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("configs/prompts/rewrite\""), "{text}");
    std::fs::write(&cfg, text.replace("configs/prompts/rewrite\"", "configs/prompts/rewrite-study\"")).unwrap();
    run_expect(pipeline().arg("-q").arg("run").arg("--config").arg(&cfg), true);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prompts/rewrite-study");
    let hashes: HashSet<String> = ["rich", "control"].iter().map(|p| sha256(&dir.join(format!("{p}.md")))).collect();
    let journal = journal_lines(tmp.path(), "study", "rewrite");
    assert!(!journal.is_empty() && journal.iter().all(|r| hashes.contains(r["prompt_hash"].as_str().unwrap())), "{journal:?}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("runs/study/sets/_manifest.json")).unwrap()).unwrap();
    assert!(m["rows"]["rich"]["train"].as_u64().unwrap() > 0 && m["rows"]["control"]["train"].as_u64().unwrap() > 0, "{m}");
}
