//! `trainer export` on the CPU, against what transformers writes (the committed fixtures of
//! `scripts/make_tiny_llama.py`): the `safetensors` Python package and a reader of the
//! format's bytes (not ours) find every tensor under transformers' name, dtype and shape,
//! f32 exports equal to the fixture's values and bf16 ones byte for byte equal to
//! transformers' own bf16 file; a sharded export has transformers' index layout; the
//! config reads back as the same model; and habits' Hugging Face loader gives the export
//! exactly the logits of the original. Also from a trainer run folder, and the errors of a
//! used destination and an unknown dtype.

use std::path::Path;
use std::process::Command;

use burn::prelude::*;
use trainer::Cpu;
use trainer::weights::load_model;

mod common;
use common::{fixture, make_set, python};

fn export(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trainer")).arg("export").args(args).output().unwrap()
}

/// Every tensor of the export against the reference file(s): names, dtypes and shapes by
/// the `safetensors` package; values by raw bytes (the format's header and offsets, read
/// here), so bf16 is compared without numpy.
const COMPARE: &str = r#"
import json, struct, sys, glob, os
from safetensors import safe_open
out, ref = sys.argv[1], sys.argv[2]
def tensors(paths):
    info, raw = {}, {}
    for p in paths:
        with safe_open(p, "np") as f:
            assert f.metadata() == {"format": "pt"}, (p, f.metadata())
            for k in f.keys():
                s = f.get_slice(k)
                info[k] = (s.get_dtype(), list(s.get_shape()))
        data = open(p, "rb").read()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        for k, v in header.items():
            if k != "__metadata__":
                a, b = v["data_offsets"]
                raw[k] = data[8 + n + a:8 + n + b]
    return info, raw
ours, ours_raw = tensors(sorted(glob.glob(out + "/*.safetensors")))
theirs, theirs_raw = tensors([ref])
assert ours == theirs, {k: (ours.get(k), theirs.get(k)) for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
differ = [k for k in ours if ours_raw[k] != theirs_raw[k]]
index = out + "/model.safetensors.index.json"
shards = 0
if os.path.exists(index):
    idx = json.load(open(index))
    assert set(idx) == {"metadata", "weight_map"} and set(idx["weight_map"]) == set(ours)
    assert idx["metadata"]["total_size"] == sum(len(v) for v in ours_raw.values())
    shards = len(set(idx["weight_map"].values()))
print(json.dumps({"tensors": len(ours), "differ": differ, "shards": shards}))
"#;

fn logits(dir: &Path) -> Vec<f32> {
    let device = Default::default();
    let model = load_model::<Cpu>(dir, &device).unwrap();
    let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new((0..24i64).map(|i| (i * 7) % 100).collect::<Vec<_>>(), [2, 12]), &device);
    model.forward(ids).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn exports_read_back_as_transformers_wrote_them() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, dtype, reference, max_shard_gb) in
        [("llama", "f32", "model.safetensors", "5"), ("llama", "bf16", "model.bf16.safetensors", "0.00002"), ("qwen2", "f32", "model.safetensors", "5")]
    {
        let src = fixture(name);
        let out = tmp.path().join(format!("{name}-{dtype}"));
        let run = export(&[
            "--checkpoint",
            src.to_str().unwrap(),
            "--model-config",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--dtype",
            dtype,
            "--max-shard-gb",
            max_shard_gb,
        ]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let report: serde_json::Value = serde_json::from_str(&python(COMPARE, &[out.to_str().unwrap(), src.join(reference).to_str().unwrap()])).unwrap();
        assert_eq!(report["differ"], serde_json::json!([]), "{name} {dtype}: tensors whose bytes differ from transformers' file");
        assert!(report["tensors"].as_u64().unwrap() > 10, "{report}");
        if dtype == "bf16" {
            assert!(report["shards"].as_u64().unwrap() > 2, "a small shard size makes shards with an index: {report}");
        } else {
            assert!(out.join("model.safetensors").is_file() && !out.join("model.safetensors.index.json").exists());
        }
        // The config reads back as the same model, and says the dtype.
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        let want = if dtype == "bf16" { "bfloat16" } else { "float32" };
        assert_eq!((&config["torch_dtype"], &config["dtype"]), (&want.into(), &want.into()));
        assert_eq!(
            trainer::model::config::ModelConfig::from_file(&out).unwrap(),
            trainer::model::config::ModelConfig::from_file(&src).unwrap(),
            "{name}: config.json"
        );
        let generation: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("generation_config.json")).unwrap()).unwrap();
        assert_eq!(
            generation["eos_token_id"],
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(src.join("config.json")).unwrap()).unwrap()["eos_token_id"]
        );
        if dtype == "f32" {
            assert!(logits(&out) == logits(&src), "{name}: the export's logits differ from the original's");
        }
    }
}

#[test]
fn a_trainer_run_exports_its_newest_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // A one-step pretraining run from the fixture, on a set of a few rows.
    let run = tmp.path().join("run");
    let cfg = tmp.path().join("pretrain.toml");
    let set = tmp.path().join("set");
    make_set(&set, 20, 128);
    std::fs::write(
        &cfg,
        format!(
            "[model]\nconfig = \"{}\"\nweights = \"{}\"\n\n[data]\nset = \"{}\"\nseq_len = 32\npacking = true\n\n[train]\nlr = 1e-3\nbatch_size = 2\ngrad_accum = 1\nmax_steps = 1\nsave_every = 1\n\n[output]\ndir = \"{}\"\n",
            fixture("llama").display(),
            fixture("llama").display(),
            set.display(),
            run.display()
        ),
    )
    .unwrap();
    let trained = Command::new(env!("CARGO_BIN_EXE_trainer")).arg("pretrain").arg("--config").arg(&cfg).output().unwrap();
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let out = tmp.path().join("exported");
    let run_export = export(&["--checkpoint", run.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", "f32"]);
    assert!(run_export.status.success(), "{}", String::from_utf8_lossy(&run_export.stderr));
    // The trained model, not the starting one: its logits are the checkpoint's.
    let device = Default::default();
    let config = trainer::model::config::ModelConfig::from_file(&fixture("llama")).unwrap();
    let trained_model = trainer::weights::load_weights::<Cpu>(&config, &run, &device).unwrap();
    let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new((0..24i64).map(|i| (i * 7) % 100).collect::<Vec<_>>(), [2, 12]), &device);
    let theirs = trained_model.forward(ids).into_data().to_vec::<f32>().unwrap();
    assert!(logits(&out) == theirs && logits(&out) != logits(&fixture("llama")), "the export is the run's newest checkpoint");

    // A used destination and an unknown dtype: one error each, nothing written.
    let again = export(&["--checkpoint", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("is not empty"), "{}", String::from_utf8_lossy(&again.stderr));
    let fresh = tmp.path().join("fresh");
    let bad = export(&["--checkpoint", run.to_str().unwrap(), "--out", fresh.to_str().unwrap(), "--dtype", "int8"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("use bf16, f16 or f32") && !fresh.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".export-")).collect();
    assert!(leftovers.is_empty(), "no staging folder is left behind");
}
