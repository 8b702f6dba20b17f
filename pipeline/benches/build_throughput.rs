//! `make bench`: tokenization + packing throughput of the build stage (Llama-3 tokenizer,
//! prompt and completion of every example, packed into a Megatron `.bin` + `.idx`), side by
//! side with the HF `tokenizers` Python package doing the same work on the same texts
//! (`encode_batch`, numpy concatenation, `.bin` + `.idx` written) in the same run. Both
//! outputs must be byte-identical, or the bench fails.
//!
//! Knobs: `HABITS_BENCH_EXAMPLES` (default 20000, ~8M tokens: one set of the study's size),
//! `HABITS_BENCH_CHARS` (mean completion length, default 1500).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use habits_tests::fixtures::TextGen;
use habits_tests::procs::cached_asset;
use pipeline::stages::build::examples::{Example, Lineage, tokenize};
use pipeline::stages::build::megatron::{MegatronWriter, TokenType};
use pipeline::stages::build::shards::Packing;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn examples(n: usize, mean_chars: usize) -> Vec<Example> {
    let mut text = TextGen::new(3);
    (0..n)
        .map(|i| {
            let q = text.document(120);
            let len = text.length(mean_chars);
            let (t, a) = (text.document(len), text.document(40));
            Example {
                doc_id: format!("{i:032x}"),
                set: 0,
                prompt: format!("A conversation between a User and an Assistant.\nUser: {q}\nAssistant: Let me solve this step by step.\n"),
                completion: format!("<think>{t}</think>\n<answer>{a}</answer>"),
                lineage: Lineage { source: "bench".into(), revision: "r".into(), file: "f".into(), row: i as u64 },
                model: "m".into(),
                rewrite_prompt_hash: "h".into(),
                prompt_ids: Vec::new(),
                completion_ids: Vec::new(),
            }
        })
        .collect()
}

/// Ours: tokenize + pack; returns (seconds, tokens).
fn ours(tokenizer: &tokenizers::Tokenizer, mut ex: Vec<Example>, prefix: &Path) -> (f64, u64) {
    let packing = Packing {
        bos: Some(128_000),
        eos: Some(128_001),
        max_completion_tokens: 4096,
        dtype: TokenType::I32,
        template_hash: "t",
        shard_rows: usize::MAX,
        set_names: &["rich", "control"],
    };
    let t = Instant::now();
    tokenize(tokenizer, &mut ex).unwrap();
    let mut w = MegatronWriter::create(prefix, TokenType::I32).unwrap();
    let mut tokens = 0u64;
    for e in &ex {
        let seq = packing.sequence(e);
        tokens += seq.len() as u64;
        w.push(&seq).unwrap();
    }
    w.finish().unwrap();
    (t.elapsed().as_secs_f64(), tokens)
}

const PYTHON: &str = r#"
import json, sys, time
import numpy as np
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
rows = [json.loads(l) for l in open(sys.argv[2])]
prefix = sys.argv[3]
t = time.perf_counter()
prompts = tok.encode_batch([r["prompt"] for r in rows], add_special_tokens=False)
completions = tok.encode_batch([r["completion"] for r in rows], add_special_tokens=False)
seqs = [np.array([128000] + p.ids + c.ids[:4096] + [128001], dtype=np.int32) for p, c in zip(prompts, completions)]
sizes = np.array([len(s) for s in seqs], dtype=np.int32)
pointers = np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64) * 4]).astype(np.int64)
np.concatenate(seqs).tofile(prefix + ".bin")
with open(prefix + ".idx", "wb") as f:
    f.write(b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + bytes([4]) + len(seqs).to_bytes(8, "little") + (len(seqs) + 1).to_bytes(8, "little"))
    f.write(sizes.tobytes()); f.write(pointers.tobytes()); f.write(np.arange(len(seqs) + 1, dtype=np.int64).tobytes())
print(time.perf_counter() - t, int(sizes.sum()))
"#;

fn main() {
    let (n, chars) = (env_usize("HABITS_BENCH_EXAMPLES", 20_000), env_usize("HABITS_BENCH_CHARS", 1500));
    let tok_path = cached_asset("tokenizers/llama3/tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path).unwrap();
    let ex = examples(n, chars);
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("examples.jsonl");
    let lines: Vec<String> = ex.iter().map(|e| serde_json::json!({ "prompt": e.prompt, "completion": e.completion }).to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let chars_total: usize = ex.iter().map(|e| e.prompt.len() + e.completion.len()).sum();
    println!(
        "build throughput: {n} examples, {:.1} MB of text, {} cores",
        chars_total as f64 / 1e6,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    let (ours_s, tokens) = ours(&tokenizer, ex, &dir.path().join("ours"));
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg("-c")
        .arg(PYTHON)
        .arg(&tok_path)
        .arg(&jsonl)
        .arg(dir.path().join("python"))
        .output()
        .expect("python3 with tokenizers and numpy (pip install -r tests/requirements.txt)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let py_s: f64 = parts.next().unwrap().parse().unwrap();
    let py_tokens: u64 = parts.next().unwrap().parse().unwrap();
    assert_eq!(py_tokens, tokens, "both sides must pack the same tokens");
    for ext in ["bin", "idx"] {
        let (a, b) = (std::fs::read(dir.path().join(format!("ours.{ext}"))).unwrap(), std::fs::read(dir.path().join(format!("python.{ext}"))).unwrap());
        assert!(a == b, "the .{ext} files differ");
    }
    println!("  ours (tokenizers crate + MegatronWriter): {:>8.2} s  {:>10.0} tokens/s", ours_s, tokens as f64 / ours_s);
    println!("  python (HF tokenizers + numpy):           {:>8.2} s  {:>10.0} tokens/s", py_s, tokens as f64 / py_s);
    println!("  ratio ours / python: {:.2}x  ({tokens} tokens, identical .bin and .idx)", py_s / ours_s);
}
