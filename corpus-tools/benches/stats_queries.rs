//! `make bench`: the report's standard queries (`corpus-tools stats --print-sql`) over a
//! generated run of 200,000 documents, by corpus-tools (DataFusion, in process) and by
//! DuckDB (its Python package, `tests/python/duckdb_queries.py --time`) over the same
//! files. Each query runs once to warm the page cache, then best of 3, fetching all rows.
//! DuckDB parses the JSON journals at every query; corpus-tools parses them once, when a
//! run is first opened (timed separately), into a parquet copy under `work/`.
//!
//! The run is made once by the real pipeline (sample, classify with the per-behavior
//! prompts, select, rewrite, build) against the fake OpenAI server, and kept under
//! `${HABITS_CACHE}/bench/corpus-tools-<docs>-v1/`. Knob: `HABITS_BENCH_DOCS` (default
//! 200000).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use corpus_tools::catalog::Catalog;
use corpus_tools::stats::queries::standard;
use habits_tests::fixtures::{TextGen, behavior_words};
use habits_tests::llm_server::FakeLlm;
use habits_tests::procs::habits_cache;
use habits_tests::run_config::{build_config, local_source};

const REPEATS: usize = 3;

/// Documents like the test fixture's, shorter: the fake model counts "instead", "check",
/// "first" and "need"; one in ten has a question and an answer (so it can be selected).
fn write_source(dir: &Path, tag: &str, docs: usize, seed: u64) {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{tag}.jsonl"))).unwrap());
    let mut text = TextGen::new(seed);
    for i in 0..docs {
        let (question, answer) = if i % 10 == 3 { ("?", " Answer: 7.") } else { (".", "") };
        let body = format!("{tag}{i}{question} {} {}{answer}", behavior_words(i), text.plain(300 + (i * 7919) % 1400));
        writeln!(w, "{}", serde_json::json!({ "text": body })).unwrap();
    }
    w.flush().unwrap();
}

fn generate(root: &Path, docs: usize) -> PathBuf {
    let run = root.join("runs/bench");
    if run.join("sets/_manifest.json").is_file() {
        return run;
    }
    eprintln!("generating a {docs}-document run in {} (once; minutes)", root.display());
    write_source(&root.join("src"), "a", docs / 2, 1);
    write_source(&root.join("more"), "b", docs - docs / 2, 2);
    let llm = FakeLlm::start();
    llm.forget_requests();
    let cfg = build_config(root, "bench", docs, &llm, "concurrency = 64\nmin_concurrency = 16", "budget_tokens = 1000000\n");
    // A loaded machine answers slower than the tests' 2 s timeout.
    let mut text = std::fs::read_to_string(&cfg).unwrap().replace("timeout_s = 2\n", "timeout_s = 60\n");
    text.push('\n');
    text.push_str(&local_source("more", &root.join("more"), 1.0));
    text.push_str("\n[select]\nrich = \"backtracking >= 2\"\ncontrol = \"backtracking <= 1\"\n");
    std::fs::write(&cfg, text).unwrap();
    let started = Instant::now();
    let cli = pipeline::cli::Cli::parse_from(["pipeline", "-q", "run", "--config", cfg.to_str().unwrap()]);
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(pipeline::cli::run(cli)).expect("the pipeline run");
    eprintln!("generated in {:.0} s", started.elapsed().as_secs_f64());
    run
}

fn main() {
    let docs: usize = std::env::var("HABITS_BENCH_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let root = habits_cache().join("bench").join(format!("corpus-tools-{docs}-v1"));
    let run = generate(&root, docs);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // The first open parses the journals into their parquet copy; later opens reuse it.
    std::fs::remove_dir_all(run.join("work/corpus-tools")).ok();
    let opened = Instant::now();
    drop(runtime.block_on(Catalog::open(&run)).unwrap());
    let first_open_s = opened.elapsed().as_secs_f64();
    let opened = Instant::now();
    let catalog = runtime.block_on(Catalog::open(&run)).unwrap();
    let open_s = opened.elapsed().as_secs_f64();
    let queries = standard(&catalog);

    let mut ours = Vec::new();
    for q in &queries {
        let best = runtime.block_on(async {
            let mut best = f64::INFINITY;
            for i in 0..=REPEATS {
                let start = Instant::now();
                let batches = catalog.sql(&q.sql).await.unwrap().collect().await.unwrap();
                std::hint::black_box(batches);
                if i > 0 {
                    best = best.min(start.elapsed().as_secs_f64());
                }
            }
            best
        });
        ours.push(best);
    }

    let list = tempfile::NamedTempFile::new().unwrap();
    let json: Vec<serde_json::Value> = queries.iter().map(|q| serde_json::json!({"name": q.name, "sql": q.sql})).collect();
    std::fs::write(list.path(), serde_json::to_vec(&json).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/duckdb_queries.py");
    let out = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(&script)
        .arg(&run)
        .arg(list.path())
        .arg(format!("--time={REPEATS}"))
        .output()
        .expect("python3 with duckdb (pip install -r tests/requirements.txt)");
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let rows = runtime
        .block_on(
            catalog.rows("SELECT (SELECT count(*) FROM docs) AS docs, (SELECT count(*) FROM requests) AS requests, (SELECT count(*) FROM sets) AS set_rows"),
        )
        .unwrap();
    println!("run: {} ({})", run.display(), serde_json::Value::Object(rows[0].clone()));
    println!("catalog open, first time (parses the journals into their parquet copy): {first_open_s:.3} s");
    println!("catalog open, later (register every table, read footers and manifests): {open_s:.3} s\n");
    println!("| query | corpus-tools (DataFusion) s | DuckDB s | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    let (mut total_ours, mut total_duck) = (0.0, 0.0);
    for (q, ours) in queries.iter().zip(&ours) {
        let theirs = duck[q.name].as_f64().unwrap();
        total_ours += ours;
        total_duck += theirs;
        println!("| {} | {ours:.4} | {theirs:.4} | {:.2}x |", q.name, ours / theirs);
    }
    println!("| **all** | {total_ours:.3} | {total_duck:.3} | {:.2}x |", total_ours / total_duck);
}
