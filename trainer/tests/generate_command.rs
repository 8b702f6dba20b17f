//! `trainer generate` on the CPU: the transformers fixtures' greedy prompts (of different
//! lengths) in, one JSON line a prompt out, whose tokens are transformers' greedy
//! `generate`'s and whose top-two gaps are each step's; and the error of an id outside the
//! vocabulary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn generate(model: &Path, prompts: &Path, new_tokens: usize) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["generate", "--backend", "cpu", "--new-tokens", &new_tokens.to_string(), "--model"])
        .arg(model)
        .arg("--prompts")
        .arg(prompts)
        .output()
        .unwrap()
}

#[test]
fn greedy_lines_carry_transformers_tokens() {
    let work = tempfile::tempdir().unwrap();
    for name in ["llama", "qwen2"] {
        let dir = fixture(name);
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let prompts = work.path().join(format!("{name}-prompts.json"));
        std::fs::write(&prompts, reference["greedy"]["prompts"].to_string()).unwrap();
        let want = reference["greedy"]["new_tokens"].as_array().unwrap();
        let out = generate(&dir, &prompts, 8);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), want.len(), "{name}: one line a prompt");
        for (row, (line, want)) in lines.iter().zip(want).enumerate() {
            assert_eq!(line["row"], row);
            assert_eq!(&line["tokens"], want, "{name}: row {row} differs from transformers' greedy tokens");
            let gaps = line["top2_gaps"].as_array().unwrap();
            assert_eq!(gaps.len(), 8);
            assert!(gaps.iter().all(|g| g.as_f64().unwrap() >= 0.0), "{name}: {gaps:?}");
        }
    }
}

#[test]
fn an_id_outside_the_vocabulary_is_one_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let prompts = work.path().join("prompts.json");
    std::fs::write(&prompts, "[[1, 2], [3, 99999999]]").unwrap();
    let out = generate(&fixture("llama"), &prompts, 2);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("99999999") && err.contains("outside the model's vocabulary") && err.contains("prompts.json"), "{err}");
    assert!(out.stdout.is_empty(), "nothing is printed for a bad prompt file");
}
