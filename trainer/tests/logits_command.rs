//! `trainer logits` on the CPU: the ids of the transformers fixtures' reference batch in,
//! a `.npy` file out that numpy reads, equal to transformers' logits within 1e-4
//! (relative), from the model folder and from its shape with the sharded checkpoint
//! (`--config --record`); and the errors of ragged
//! rows and ids outside the vocabulary.

use std::path::Path;
use std::process::Command;

mod common;
use common::{fixture, python};

/// `trainer logits` on the CPU, the weights named by `source` (`--model DIR`, or
/// `--config CONFIG --record WEIGHTS`).
fn logits(source: &[&Path], ids: &Path, out: &Path) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trainer"));
    command.args(["logits", "--backend", "cpu"]);
    match source {
        [dir] => command.arg("--model").arg(dir),
        [config, record] => command.arg("--config").arg(config).arg("--record").arg(record),
        _ => unreachable!("a folder, or a config and weights"),
    };
    command.arg("--ids").arg(ids).arg("--out").arg(out).output().unwrap()
}

/// Writes the reference batch's ids as JSON rows.
const IDS: &str = r#"
import json, sys
from safetensors.numpy import load_file
ids = load_file(sys.argv[1])["input_ids"]
json.dump(ids.tolist(), open(sys.argv[2], "w"))
"#;

/// Prints the largest relative gap between the `.npy` logits and the reference's.
const GAP: &str = r#"
import sys
import numpy as np
from safetensors.numpy import load_file
ours = np.load(sys.argv[1])
theirs = load_file(sys.argv[2])["logits"]
assert ours.dtype == np.float32 and ours.shape == theirs.shape, (ours.dtype, ours.shape, theirs.shape)
print(float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
"#;

#[test]
fn logits_written_for_numpy_equal_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let reference = fixture("llama").join("reference.safetensors");
    let ids = dir.path().join("ids.json");
    python(IDS, &[reference.to_str().unwrap(), ids.to_str().unwrap()]);
    let (folder, config, shards) = (fixture("llama"), fixture("llama").join("config.json"), fixture("llama").join("sharded"));
    for source in [vec![folder.as_path()], vec![config.as_path(), shards.as_path()]] {
        let out = dir.path().join("logits.npy");
        let run = logits(&source, &ids, &out);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let gap: f64 = python(GAP, &[out.to_str().unwrap(), reference.to_str().unwrap()]).trim().parse().unwrap();
        assert!(gap < 1e-4, "{source:?}: logits differ from transformers' by {gap} (relative)");
    }
}

#[test]
fn ragged_rows_and_unknown_ids_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    for (ids, expected) in
        [("[[1, 2, 3], [4, 5]]", "of one length"), ("[[1, 2, 99999]]", "token id 99999 is outside the model's vocabulary"), ("{}", "expected a JSON array")]
    {
        let path = dir.path().join("ids.json");
        std::fs::write(&path, ids).unwrap();
        let run = logits(&[fixture("llama").as_path()], &path, &out);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(expected), "{ids}: {err}");
        assert!(!out.exists(), "{ids}: nothing is written");
    }
}
