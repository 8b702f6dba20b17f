//! The sample stage end to end: determinism under concurrency, order and sharding; hub
//! sources with lineage that leads back to the source row; repeated texts; readers no one
//! here wrote (pyarrow).

use std::collections::HashMap;
use std::path::Path;

use habits_tests::fixtures::{ShardSpec, finemath_repo, owm_repo, owm_shard, write_file};
use habits_tests::hub_server::LoopbackHub;
use habits_tests::procs::{pipeline, python, run_expect};
use habits_tests::run_config::{docs_dir, docs_manifest, hub_source, local_source, part_checksums, write_config};

/// A local folder of 5 OWM-schema parquet shards and one JSONL file.
fn local_corpus(dir: &Path) -> HashMap<String, Vec<String>> {
    let mut texts = HashMap::new();
    for i in 0..5 {
        let spec = ShardSpec { rows: 120, rows_per_group: 50, mean_chars: 300, seed: 10 + i, shared_first_text: None };
        let (bytes, t) = owm_shard(&spec).unwrap();
        let name = format!("shard-{i}.parquet");
        write_file(&dir.join(&name), &bytes).unwrap();
        texts.insert(name, t);
    }
    let mut jsonl = String::new();
    let mut t = Vec::new();
    for i in 0..40 {
        let text = format!("JSONL document {i}: we check that 3 * {i} = {}.", 3 * i);
        jsonl.push_str(&serde_json::json!({ "url": format!("https://j.example/{i}"), "text": text, "date": "2024", "metadata": "{}" }).to_string());
        jsonl.push('\n');
        t.push(text);
    }
    std::fs::create_dir_all(dir.join("more")).unwrap();
    std::fs::write(dir.join("more/extra.jsonl"), jsonl).unwrap();
    texts.insert("more/extra.jsonl".into(), t);
    texts
}

fn sample(config: &Path, extra: &[&str]) {
    run_expect(pipeline().arg("-q").arg("sample").arg("--config").arg(config).args(extra), true);
}

#[test]
fn the_sample_is_the_same_under_any_concurrency_order_and_sharding() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    local_corpus(&corpus);
    let src = [local_source("owm", &corpus, 1.0)];
    let one = write_config(tmp.path(), "one", 150, &src, "threads = 1\nbatch_rows = 7\npart_rows = 40");
    let many = write_config(tmp.path(), "many", 150, &src, "threads = 4\nbatch_rows = 1000\npart_rows = 40");
    let sharded = write_config(tmp.path(), "sharded", 150, &src, "threads = 2\nbatch_rows = 33\npart_rows = 40");
    sample(&one, &[]);
    sample(&many, &[]);
    for shard in ["2/3", "0/3", "1/3"] {
        sample(&sharded, &["--shard", shard]);
    }
    let reference = part_checksums(tmp.path(), "one");
    assert_eq!(reference.len(), 4, "150 rows in parts of 40");
    assert_eq!(part_checksums(tmp.path(), "many"), reference);
    assert_eq!(part_checksums(tmp.path(), "sharded"), reference);

    // Another seed, another sample.
    let other = write_config(tmp.path(), "other", 150, &src, "threads = 1\npart_rows = 40\nseed = 8");
    sample(&other, &[]);
    assert_ne!(part_checksums(tmp.path(), "other"), reference);
}

#[test]
fn docs_trace_back_to_their_source_rows_and_pyarrow_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let texts = local_corpus(&corpus);
    let cfg = write_config(tmp.path(), "lineage", 200, &[local_source("owm", &corpus, 1.0)], "part_rows = 64");
    run_expect(pipeline().arg("run").arg("--config").arg(&cfg), true);
    let script = r#"
import sys, json, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
assert t.schema.names == ["doc_id", "source", "revision", "file", "row", "url", "text", "n_chars"], t.schema.names
rows = t.to_pylist()
print(json.dumps([[r["doc_id"], r["source"], r["revision"], r["file"], r["row"], r["text"], r["n_chars"]] for r in rows]))
"#;
    let out = python(script, &[docs_dir(tmp.path(), "lineage").to_str().unwrap()], &[]);
    let rows: Vec<(String, String, String, String, u64, String, u64)> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 200);
    let mut ids = std::collections::HashSet::new();
    for (id, source, revision, file, row, text, n_chars) in &rows {
        assert_eq!(source, "owm");
        assert_eq!(revision, "local");
        assert_eq!(&texts[file][*row as usize], text, "lineage {file}:{row} must lead to the same text");
        assert_eq!(*n_chars, text.chars().count() as u64);
        assert_eq!(id.len(), 32);
        assert!(ids.insert(id.clone()), "doc_id must be unique");
    }
    let m = docs_manifest(tmp.path(), "lineage");
    assert_eq!(m["rows"], 200);
    assert_eq!(m["sources"][0]["rows_scanned"], 5 * 120 + 40);
    assert_eq!(m["inputs"].as_array().unwrap().len(), 6);
}

#[test]
fn hub_sources_are_sampled_by_weight_with_pinned_lineage() {
    let shared = "A text that appears in every shard of both datasets.";
    let (owm, owm_texts) = owm_repo(3, 40, Some(shared));
    let (fine, fine_texts) = finemath_repo(2, 30, Some(shared));
    let (owm_commit, fine_commit) = (owm.commit.clone(), fine.commit.clone());
    let owm_files: Vec<String> = owm.files.iter().filter(|f| f.lfs).map(|f| f.path.clone()).collect();
    let fine_files: Vec<String> = fine.files.iter().filter(|f| f.path.starts_with("finemath-4plus/")).map(|f| f.path.clone()).collect();
    let hub = LoopbackHub::start(vec![owm, fine]);
    hub.set_page_size(3);
    let tmp = tempfile::tempdir().unwrap();
    let sources = [
        hub_source("owm", "open-web-math/open-web-math", "data/train-*.parquet", 2.0),
        hub_source("finemath", "HuggingFaceTB/finemath", "finemath-4plus/train-*.parquet", 1.0),
    ];
    // Quotas 120 and 60 are the whole of each source, so the shared text is sampled five
    // times and kept once.
    let cfg = write_config(tmp.path(), "hub", 180, &sources, "");
    let home = tempfile::tempdir().unwrap();
    run_expect(pipeline().arg("run").arg("--config").arg(&cfg).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()), true);
    let m = docs_manifest(tmp.path(), "hub");
    assert_eq!(m["sources"][0]["quota"], 120);
    assert_eq!(m["sources"][1]["quota"], 60);
    assert_eq!(m["sources"][0]["commit"], owm_commit.as_str());
    assert_eq!(m["sources"][1]["commit"], fine_commit.as_str());
    assert_eq!(m["sources"][0]["duplicates_removed"], 2);
    assert_eq!(m["sources"][1]["duplicates_removed"], 2);
    assert_eq!(m["rows"], 180 - 4);

    let script = r#"
import sys, json, pyarrow.parquet as pq
print(json.dumps(pq.read_table(sys.argv[1], columns=["source", "revision", "file", "row", "text"]).to_pylist()))
"#;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&python(script, &[docs_dir(tmp.path(), "hub").to_str().unwrap()], &[])).unwrap();
    assert_eq!(rows.len(), 176);
    for r in &rows {
        let (file, row, text) = (r["file"].as_str().unwrap(), r["row"].as_u64().unwrap() as usize, r["text"].as_str().unwrap());
        let expected = match r["source"].as_str().unwrap() {
            "owm" => {
                assert_eq!(r["revision"], owm_commit.as_str());
                &owm_texts[owm_files.iter().position(|f| f == file).unwrap()][row]
            }
            "finemath" => {
                assert_eq!(r["revision"], fine_commit.as_str());
                &fine_texts[fine_files.iter().position(|f| f == file).unwrap()][row]
            }
            other => panic!("unknown source {other}"),
        };
        assert_eq!(expected, text);
    }
    assert_eq!(rows.iter().filter(|r| r["text"] == shared).count(), 1);

    // A rerun is a no-op: nothing is listed again beyond the pin check, nothing downloaded.
    hub.clear_log();
    run_expect(pipeline().arg("run").arg("--config").arg(&cfg).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()), true);
    assert!(hub.log().iter().all(|l| l.origin == "api"), "a finished run downloads nothing");
}

#[test]
fn plan_counts_rows_from_footers_without_downloading() {
    let (owm, _) = owm_repo(3, 40, None);
    let hub = LoopbackHub::start(vec![owm]);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "plan", 100, &[hub_source("owm", "open-web-math/open-web-math", "data/*.parquet", 1.0)], "");
    let home = tempfile::tempdir().unwrap();
    let out = run_expect(pipeline().arg("plan").arg("--json").arg("--config").arg(&cfg).env("HF_ENDPOINT", hub.endpoint()).env("HF_HOME", home.path()), true);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["sources"][0]["files"], 3);
    assert_eq!(plan["sources"][0]["rows"], 120);
    assert_eq!(plan["sampled"], 100);
    assert_eq!(plan["classify_requests"], 500);
    assert!(plan["classify_prompt_tokens"].as_u64().unwrap() > 500 * 700);
    let cdn: Vec<_> = hub.log().into_iter().filter(|l| l.origin == "cdn").collect();
    assert!(!cdn.is_empty());
    assert!(cdn.iter().all(|l| l.range.is_some()), "plan reads footers only");
    assert!(!home.path().join("hub").exists(), "plan downloads nothing");
}
