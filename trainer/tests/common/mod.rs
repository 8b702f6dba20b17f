//! What the trainer's integration tests share: the committed fixtures, and a built set of
//! learnable rows in the pipeline's format (written with the pipeline's own Megatron
//! writer).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pipeline::stages::build::megatron::{MegatronWriter, TokenType};

/// Runs a Python script with arguments; its standard output (a failure fails the test).
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3").arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A fixture folder under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A set folder with `n` train and `n / 10` test sequences of ids in 3..128: a prompt of
/// 4-7 tokens, then a completion that follows a learnable pattern.
pub fn make_set(dir: &Path, n: usize, vocab_size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut files = Vec::new();
    for (split, count) in [("train", n), ("test", n / 10)] {
        if count == 0 {
            continue;
        }
        let stem = format!("{split}-00000-of-00001");
        std::fs::create_dir_all(dir.join("jsonl")).unwrap();
        let mut w = MegatronWriter::create(&dir.join("megatron").join(&stem), TokenType::U16).unwrap();
        let mut lines = String::new();
        for _ in 0..count {
            let prompt: Vec<u32> = (0..rng.usize(4..8)).map(|_| rng.u32(3..128)).collect();
            let start = rng.u32(3..100);
            let completion: Vec<u32> = (0..rng.usize(8..30)).map(|k| start + (k as u32 % 20)).collect();
            let ids: Vec<u32> = std::iter::once(1).chain(prompt.iter().copied()).chain(completion).chain([2]).collect();
            w.push(&ids).unwrap();
            lines.push_str(&format!("{{\"prompt\": \"p\", \"prompt_tokens\": {}}}\n", prompt.len()));
        }
        w.finish().unwrap();
        std::fs::write(dir.join("jsonl").join(format!("{stem}.jsonl")), lines).unwrap();
        for (path, format) in
            [(format!("megatron/{stem}.idx"), "megatron-idx"), (format!("megatron/{stem}.bin"), "megatron-bin"), (format!("jsonl/{stem}.jsonl"), "jsonl")]
        {
            files.push(serde_json::json!({ "path": path, "split": split, "format": format }));
        }
    }
    let manifest = serde_json::json!({
        "format_version": 1, "set": "rich",
        "tokenizer": { "vocab_size": vocab_size, "sha256": "test", "bos": 1, "eos": 2, "dtype": "uint16" },
        "files": files,
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}
