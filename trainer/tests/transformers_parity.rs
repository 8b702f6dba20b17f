//! Our model against `transformers` on the fixtures `scripts/make_tiny_llama.py` made (a
//! tiny Llama with GQA and Llama-3 RoPE scaling, a tiny Qwen2 with q/k/v biases and tied
//! embeddings): logits within 1e-4 relative in f32, the LM and SFT losses, the same from
//! sharded and bf16 checkpoints, and the loss after one AdamW step.

use std::path::{Path, PathBuf};

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use trainer::loss::{causal_lm_loss, lm_loss};
use trainer::model::config::ModelConfig;
use trainer::weights::{Checkpoint, load_model, load_weights};
use trainer::{Cpu, CpuAutodiff};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Reference {
    ids: Vec<i64>,
    labels: Vec<i64>,
    logits: Vec<f32>,
    shape: [usize; 2],
    json: serde_json::Value,
}

fn reference(name: &str) -> Reference {
    let ckpt = Checkpoint::open(&fixture(name).join("reference.safetensors")).unwrap();
    let ints = |n: &str| -> Vec<i64> {
        // Integer tensors are read through their raw bytes.
        let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor(n).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let (logits, lshape) = ckpt.read("logits").unwrap();
    let json = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    Reference { ids: ints("input_ids"), labels: ints("labels"), logits, shape: [lshape[0], lshape[1]], json }
}

fn ints<B: Backend>(v: &[i64], shape: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

/// max |a - b| / max |b|.
fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
    ours.iter().zip(theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn check_forward(name: &str) {
    let r = reference(name);
    let device = Default::default();
    let model = load_model::<Cpu>(&fixture(name), &device).unwrap();
    let logits = model.forward(ints::<Cpu>(&r.ids, r.shape, &device));
    let ours = logits.clone().into_data().to_vec::<f32>().unwrap();
    let err = relative_error(&ours, &r.logits);
    eprintln!("{name}: logits relative error {err}");
    assert!(err < 1e-4, "{name}: logits differ from transformers by {err} (relative)");
    let lm = causal_lm_loss(logits.clone(), ints::<Cpu>(&r.ids, r.shape, &device)).into_scalar();
    let sft = causal_lm_loss(logits, ints::<Cpu>(&r.labels, r.shape, &device)).into_scalar();
    let (want_lm, want_sft) = (r.json["lm_loss"].as_f64().unwrap() as f32, r.json["sft_loss"].as_f64().unwrap() as f32);
    assert!((lm - want_lm).abs() < 1e-4 * want_lm, "{name}: lm loss {lm} vs {want_lm}");
    assert!((sft - want_sft).abs() < 1e-4 * want_sft, "{name}: sft loss {sft} vs {want_sft}");
    // The training loss from the model (the LM head only where a label is predicted).
    for (labels, want) in [(&r.ids, want_lm), (&r.labels, want_sft)] {
        let loss = lm_loss(&model, ints::<Cpu>(&r.ids, r.shape, &device), ints::<Cpu>(labels, r.shape, &device)).into_scalar();
        assert!((loss - want).abs() < 1e-4 * want, "{name}: the model's loss {loss} vs {want}");
    }

    // The same weights, sharded and in bf16.
    let config = ModelConfig::from_file(&fixture(name)).unwrap();
    let sharded = load_weights::<Cpu>(&config, &fixture(name).join("sharded"), &device).unwrap();
    let s = sharded.forward(ints::<Cpu>(&r.ids, r.shape, &device)).into_data().to_vec::<f32>().unwrap();
    assert_eq!(s, ours, "{name}: the sharded checkpoint gives other logits");
    let bf16 = load_weights::<Cpu>(&config, &fixture(name).join("model.bf16.safetensors"), &device).unwrap();
    let b = bf16.forward(ints::<Cpu>(&r.ids, r.shape, &device)).into_data().to_vec::<f32>().unwrap();
    let err = relative_error(&b, &r.logits);
    assert!(err < 5e-2 && err > 1e-6, "{name}: bf16 weights are close but not equal: {err}");
}

#[test]
fn llama_matches_transformers() {
    check_forward("llama");
}

#[test]
fn qwen2_matches_transformers() {
    check_forward("qwen2");
}

fn check_one_adamw_step(name: &str) {
    let r = reference(name);
    let device = Default::default();
    let model = load_model::<CpuAutodiff>(&fixture(name), &device).unwrap();
    let a = &r.json["adamw"];
    let mut optim = AdamWConfig::new()
        .with_beta_1(a["betas"][0].as_f64().unwrap() as f32)
        .with_beta_2(a["betas"][1].as_f64().unwrap() as f32)
        .with_epsilon(a["eps"].as_f64().unwrap() as f32)
        .with_weight_decay(a["weight_decay"].as_f64().unwrap() as f32)
        .init();
    let ids = ints::<CpuAutodiff>(&r.ids, r.shape, &device);
    let loss = lm_loss(&model, ids.clone(), ids.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = optim.step(a["lr"].as_f64().unwrap(), model, grads);
    let after = causal_lm_loss(model.forward(ids.clone()), ids).into_scalar();
    let want = r.json["lm_loss_after_step"].as_f64().unwrap() as f32;
    eprintln!("{name}: loss after one step {after}, transformers {want}");
    assert!((after - want).abs() < 1e-4 * want, "{name}: loss after one AdamW step {after} vs transformers {want}");
}

#[test]
fn llama_one_training_step_matches() {
    check_one_adamw_step("llama");
}

#[test]
fn qwen2_one_training_step_matches() {
    check_one_adamw_step("qwen2");
}

#[test]
fn a_mis_shaped_or_missing_tensor_is_named() {
    let device = Default::default();
    let mut config = ModelConfig::from_file(&fixture("llama")).unwrap();
    config.intermediate_size = 96;
    let err = format!("{:#}", load_weights::<Cpu>(&config, &fixture("llama"), &device).unwrap_err());
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("[160, 64]") && err.contains("[96, 64]"), "{err}");
    let mut config = ModelConfig::from_file(&fixture("qwen2")).unwrap();
    config.num_layers = 3;
    let err = format!("{:#}", load_weights::<Cpu>(&config, &fixture("qwen2"), &device).unwrap_err());
    assert!(err.contains("model.layers.2.") && err.contains("missing"), "{err}");
}
