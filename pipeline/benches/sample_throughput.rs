//! `make bench`: read + sample throughput of the sample stage's scan, side by side with
//! pyarrow reading the same columns of the same files (the decode limit), in one run.
//!
//! Shards are generated once in the OpenWebMath schema at a realistic size (~55k documents,
//! ~240 MB each, snappy) under `$HABITS_BENCH_DIR` (default `target/bench-data`).
//! Knobs: `HABITS_BENCH_SHARDS` (default 2), `HABITS_BENCH_ROWS` (default 55000),
//! `HABITS_BENCH_QUOTA` (default: 1/55 of the rows, so that ~9% of the rows become
//! candidates, as over a whole paper run: 100k per source of 6.3M rows gives
//! k(1 + ln(M/k))/M = 8%).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use habits_tests::fixtures::{ShardSpec, owm_shard, write_file};
use pipeline::sources::{Format, InputFile, Location};
use pipeline::stages::sample::scan::{ScanParams, scan_file};
use pipeline::stages::sample::selector::Selector;

/// The same allocator as the `pipeline` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn shards(dir: &Path, n: usize, rows: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("owm-like-{rows}-{i:02}.parquet"));
            if !path.is_file() {
                eprintln!("generating {} ...", path.display());
                let spec = ShardSpec { rows, rows_per_group: 10_000, mean_chars: 9_000, seed: 1000 + i as u64, shared_first_text: None };
                let (bytes, _) = owm_shard(&spec).unwrap();
                write_file(&path, &bytes).unwrap();
            }
            path
        })
        .collect()
}

fn input(path: &Path, ordinal: usize) -> InputFile {
    InputFile {
        source: 0,
        ordinal,
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        revision: "local".into(),
        size: std::fs::metadata(path).unwrap().len(),
        format: Format::Parquet,
        location: Location::Local(path.to_path_buf()),
        fingerprint: String::new(),
    }
}

/// Scans the files on `threads` threads (one file per thread at a time); returns seconds and docs.
fn ours(files: &[PathBuf], threads: usize, quota: u64) -> (f64, u64) {
    let work = tempfile::tempdir().unwrap();
    let selector = Arc::new(Selector::new(vec![quota]));
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let docs = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(path) = files.get(i) else { break };
                    let params = ScanParams { seed: 1, min_chars: 0, batch_rows: 4096, text_column: "text", url_column: "url", source_name: "bench" };
                    let stats = scan_file(&input(path, i), path, &params, &selector, work.path()).unwrap();
                    docs.fetch_add(stats.rows, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (t.elapsed().as_secs_f64(), docs.into_inner())
}

/// pyarrow reading `url` and `text` of every file; returns seconds.
fn pyarrow(files: &[PathBuf], threads: bool) -> f64 {
    let script = r#"
import sys, time, pyarrow.parquet as pq
threads = sys.argv[1] == "1"
t = time.perf_counter()
for f in sys.argv[2:]:
    pq.read_table(f, columns=["url", "text"], use_threads=threads)
print(time.perf_counter() - t)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(if threads { "1" } else { "0" })
        .args(files)
        .output()
        .expect("python3 with pyarrow (pip install -r tests/requirements.txt)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sample_throughput: bench");
        return;
    }
    let dir = std::env::var("HABITS_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    let rows = env_usize("HABITS_BENCH_ROWS", 55_000);
    let n_files = env_usize("HABITS_BENCH_SHARDS", 2);
    let files = shards(&dir, n_files, rows);
    let quota = env_usize("HABITS_BENCH_QUOTA", (rows * n_files / 55).max(1)) as u64;
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    let mb = bytes as f64 / 1e6;
    // Warm the page cache so both sides read from memory.
    pyarrow(&files, true);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("{} files, {:.0} MB, {} cores, sample quota {}", files.len(), mb, cores, quota);
    println!("{:<34} {:>9} {:>10} {:>12} {:>8}", "reader", "seconds", "MB/s", "docs/s", "vs limit");
    for (label, threads) in [("1 thread", 1usize), ("all cores", cores)] {
        let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::INFINITY, f64::min);
        let py = best(&|| pyarrow(&files, threads > 1));
        let docs = std::cell::Cell::new(0u64);
        let our = best(&|| {
            let (s, d) = ours(&files, threads.min(files.len()), quota);
            docs.set(d);
            s
        });
        let docs = docs.get();
        println!("{:<34} {:>9.3} {:>10.1} {:>12} {:>8}", format!("pyarrow read url+text, {label}"), py, mb / py, "", "1.00x");
        println!("{:<34} {:>9.3} {:>10.1} {:>12.0} {:>7.2}x", format!("habits scan+sample, {label}"), our, mb / our, docs as f64 / our, py / our);
    }
}
