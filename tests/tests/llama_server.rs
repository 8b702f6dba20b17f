//! End to end against a real OpenAI-compatible server: the pipeline starts llama.cpp's
//! `llama-server` with SmolLM2-135M (built and fetched by `make llm-assets`), classifies a
//! handful of short documents, and stops the server when it is done.

use std::path::PathBuf;

use habits_tests::procs::{cached_asset, habits_cache as cache, pipeline, python, run_expect};
use habits_tests::run_config::{local_source, write_config};

/// The tests count llama-server processes: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn llama_servers() -> usize {
    let out = std::process::Command::new("pgrep").args(["-c", "-f", "SmolLM2-135M-Instruct"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn classify_with_a_real_llama_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = cache();
    for p in ["bin/llama-server", "models/SmolLM2-135M-Instruct.Q4_1.gguf", "tokenizers/qwen3/tokenizer.json"] {
        cached_asset(p);
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let docs = [
        "What is 12 * 15? First, 10 * 15 = 150. Then 2 * 15 = 30. So 180. Let me check: 180 / 15 = 12. Answer: 180.",
        "Solve x + 3 = 7. Subtract 3: x = 4. Check: 4 + 3 = 7.",
        "Find the area of a square with side 5. Area = 25. Wait, I used the perimeter formula first; instead use side squared: 25.",
    ];
    let lines: Vec<String> = docs.iter().map(|t| serde_json::json!({ "text": t }).to_string()).collect();
    std::fs::write(src.join("d.jsonl"), lines.join("\n")).unwrap();
    let cfg = write_config(tmp.path(), "real", 3, &[local_source("d", &src, 1.0)], "");
    let extra = format!(
        "[llm]\nmodel = \"SmolLM2-135M-Instruct\"\ntimeout_s = 120\nstructured_output = \"llama_cpp\"\n\n[llm.serve]\ncontext = 4096\nparallel = 2\nthreads = 2\n\n[rewrite]\nprompts_dir = \"{}\"\nmax_tokens = 160\n\n[classify]\nprompts_dir = \"{}\"\ntasks = [\"backtracking\", \"problem_solution\", \"joint\"]\nmax_tokens = 96\nmax_doc_tokens = 64\ntokenizer = \"{}\"\nreasks = 0\n\n",
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/prompts/rewrite").display(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/prompts/classify").display(),
        c.join("tokenizers/qwen3/tokenizer.json").display()
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.insert_str(text.find("[[sources]]").unwrap(), &extra);
    std::fs::write(&cfg, text).unwrap();

    let before = llama_servers();
    run_expect(pipeline().arg("run").arg("--until").arg("rewrite").arg("--config").arg(&cfg).env("HABITS_CACHE", &c), true);
    assert_eq!(llama_servers(), before, "the server stops with the run");

    let journal = std::fs::read_to_string(tmp.path().join("runs/real/journal/classify.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 9, "3 documents x 3 tasks");
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["prompt_tokens"].as_u64().unwrap() > 100, "usage is recorded: {r}");
        assert!(r["endpoint"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    }
    // The grammar (and the JSON schema of the joint task) makes every answer parseable, even from a 135M model.
    let script = "import sys, pyarrow.parquet as pq\nt = pq.read_table(sys.argv[1])\nprint(t.num_rows, sorted(set(t.column('backtracking_status').to_pylist() + t.column('problem_solution_status').to_pylist() + t.column('joint_status').to_pylist())))";
    let out = python(script, &[tmp.path().join("runs/real/labels").to_str().unwrap()], &[]);
    assert_eq!(out.trim(), "3 ['ok']");
}

#[test]
fn ctrl_c_stops_the_run_and_its_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = cache();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let lines: Vec<String> =
        (0..50).map(|i| serde_json::json!({ "text": format!("Problem {i}: what is {i} squared? Answer: {}.", i * i) }).to_string()).collect();
    std::fs::write(src.join("d.jsonl"), lines.join("\n")).unwrap();
    let cfg = write_config(tmp.path(), "interrupt", 50, &[local_source("d", &src, 1.0)], "");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.insert_str(
        text.find("[[sources]]").unwrap(),
        &format!(
            "[llm]\nmodel = \"SmolLM2-135M-Instruct\"\n\n[llm.serve]\ncontext = 2048\nthreads = 1\n\n[classify]\nprompts_dir = \"{}\"\nmax_tokens = 128\nmax_doc_tokens = 256\n\n",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/prompts/classify").display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let before = llama_servers();
    let mut child = pipeline().arg("-q").arg("run").arg("--until").arg("rewrite").arg("--config").arg(&cfg).env("HABITS_CACHE", &c).spawn().unwrap();
    let journal = tmp.path().join("runs/interrupt/journal/classify.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while llama_servers() == before || !journal.exists() {
        assert!(std::time::Instant::now() < deadline, "the server did not start");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert_eq!(code.code(), Some(130), "Ctrl-C exits with 130");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(llama_servers(), before, "Ctrl-C stops the local server too");
}

/// The wrong-answer priming condition sampled from a real server's `/v1/completions`: the
/// local llama-server continues the raw Countdown prompt, every request is journaled with
/// its usage, and the kept traces are the replies the study's reward does not score 1.0.
#[test]
fn sample_wrong_answers_from_a_real_llama_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = cache();
    for p in ["bin/llama-server", "models/SmolLM2-135M-Instruct.Q4_1.gguf", "tokenizers/llama3/tokenizer.json"] {
        cached_asset(p);
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("prime.toml");
    let text = format!(
        "[run]\nname = \"sampled\"\ndir = \"{}\"\n\n[llm]\nmodel = \"SmolLM2-135M-Instruct\"\ntimeout_s = 120\n\n[llm.serve]\ncontext = 2048\nparallel = 2\nthreads = 2\n\n\
         [llm.priming_sample]\n\n[priming]\ntasks = 2\nconditions = [\"all_strategies_wrong\"]\n\n[priming.sampled]\ndraws_per_trace = 3\nmax_tokens = 48\n\n\
         [build]\ntokenizer = \"{}\"\nbos_token = \"\"\ntest_fraction = 0.0\n",
        tmp.path().join("runs").display(),
        c.join("tokenizers/llama3/tokenizer.json").display()
    );
    std::fs::write(&cfg, text).unwrap();
    let before = llama_servers();
    run_expect(pipeline().arg("prime").arg("--config").arg(&cfg).env("HABITS_CACHE", &c), true);
    assert_eq!(llama_servers(), before, "the servers stop with the stage");

    let journal = std::fs::read_to_string(tmp.path().join("runs/sampled/journal/priming_sample.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 6, "2 traces x 3 draws");
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(!r["content"].as_str().unwrap().is_empty() && r["completion_tokens"].as_u64().unwrap() > 0, "{r}");
        assert!(r["prompt_tokens"].as_u64().unwrap() > 50, "the raw Countdown prompt: {r}");
    }
    let root = tmp.path().join("runs/sampled/priming");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("_manifest.json")).unwrap()).unwrap();
    let statuses = &manifest["statuses"]["all_strategies_wrong"];
    let count = |s: &str| statuses[s].as_u64().unwrap_or(0);
    assert_eq!(count("kept") + count("correct") + count("not_needed"), 6, "{statuses}");
    let script = "import sys, glob, pyarrow.parquet as pq\nprint(sum(pq.read_table(f).num_rows for f in glob.glob(sys.argv[1] + '/all_strategies_wrong/data/*.parquet')))";
    let rows: u64 = python(script, &[root.to_str().unwrap()], &[]).trim().parse().unwrap();
    assert!(rows >= 1 && rows == count("kept"), "{rows} rows, statuses {statuses}");
}
