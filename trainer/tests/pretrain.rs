//! `trainer pretrain` end to end on the CPU, on a set in the pipeline's format (written
//! with the pipeline's own Megatron writer) and the tiny Llama fixture: the loss goes
//! down; recomputed layers give the same curve and the finished run exports itself; a run
//! killed with `kill -9` and rerun continues the loss curve exactly; the
//! global gradient norm matches transformers'; bad inputs get one clear error each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::{fixture, make_set};

use burn::optim::GradientsParams;
use trainer::loss::causal_lm_loss;
use trainer::run::clip::clip_global_norm;

fn config(dir: &Path, set: &Path, model: &Path, extra: &str) -> PathBuf {
    let path = dir.join("pretrain.toml");
    let text = format!(
        "[model]\nconfig = \"{m}\"\nweights = \"{m}\"\n\n[data]\nset = \"{}\"\nobjective = \"sft\"\nseq_len = 32\npacking = true\n\n[train]\nlr = 3e-3\nbatch_size = 2\ngrad_accum = 2\nepochs = 3\nsave_every = 2\n{extra}\n[output]\ndir = \"{}\"\n",
        set.display(),
        dir.join("out").display(),
        m = model.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn trainer(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(args).arg("--config").arg(config);
    cmd
}

fn run(cmd: &mut Command, success: bool) -> Output {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.success(), success, "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `(step, value)` points of a metric.
type Points = Vec<(u64, f64)>;

/// `(step, loss)` of the train lines and `(step, eval_loss)` of the eval lines.
fn curve(out: &Path) -> (Points, Points) {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let pick = |kind: &str, key: &str| lines.iter().filter(|v| v["kind"] == kind).map(|v| (v["step"].as_u64().unwrap(), v[key].as_f64().unwrap())).collect();
    (pick("train", "loss"), pick("eval", "eval_loss"))
}

#[test]
fn training_lowers_the_loss_and_a_killed_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    make_set(&set, 60, 128);

    // The reference: one uninterrupted run.
    let whole = tmp.path().join("whole");
    std::fs::create_dir_all(&whole).unwrap();
    let cfg = config(&whole, &set, &fixture("llama"), "");
    run(&mut trainer(&["pretrain"], &cfg), true);
    let (reference, evals) = curve(&whole.join("out"));
    assert!(reference.len() >= 8, "{reference:?}");
    let first = reference[0].1;
    let last_eval = evals.last().unwrap().1;
    assert!(last_eval < first - 0.5, "the loss goes down: first {first}, last eval {last_eval}");

    // Mixed precision (f64 matmuls stand in for the GPU's bf16: the CPU backend has no
    // bf16): the same curve up to rounding, so the casts carry the gradients.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    let out = run(&mut trainer(&["pretrain"], &config(&mixed, &set, &fixture("llama"), "compute_dtype = \"f64\"\n")), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("matmuls in f64"));
    let (mixed_curve, _) = curve(&mixed.join("out"));
    assert_eq!(mixed_curve.len(), reference.len());
    for ((step, a), (_, b)) in reference.iter().zip(&mixed_curve) {
        assert!((a - b).abs() < 1e-3 * a.abs(), "step {step}: loss {a} at f32, {b} with f64 matmuls");
    }

    // Every decoder layer recomputing its activations in the backward pass: the same
    // curve; and the finished run exported as a Hugging Face folder (`output.export`).
    let recomputed = tmp.path().join("recomputed");
    std::fs::create_dir_all(&recomputed).unwrap();
    let cfg = config(&recomputed, &set, &fixture("llama"), "recompute = \"layers\"\n");
    let text = std::fs::read_to_string(&cfg).unwrap() + "export = \"f32\"\n";
    std::fs::write(&cfg, text).unwrap();
    let out = run(&mut trainer(&["pretrain"], &cfg), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory plan: parameters"));
    let (recomputed_curve, _) = curve(&recomputed.join("out"));
    assert_eq!(recomputed_curve.len(), reference.len());
    for ((step, a), (_, b)) in reference.iter().zip(&recomputed_curve) {
        assert!((a - b).abs() < 1e-4 * a.abs(), "step {step}: loss {a}, {b} with recomputed layers");
    }
    let hf = recomputed.join("out/hf");
    let model = trainer::weights::load_model::<trainer::Cpu>(&hf, &Default::default()).unwrap_or_else(|e| panic!("{}: {e:#}", hf.display()));
    assert_eq!(model.config.num_layers, 2);

    // The same run, killed mid-way, then started again: the curve continues exactly.
    let killed = tmp.path().join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let cfg = config(&killed, &set, &fixture("llama"), "");
    let mut child = trainer(&["pretrain"], &cfg).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let lines = || std::fs::read_to_string(killed.join("out/metrics.jsonl")).unwrap_or_default().lines().count();
    while lines() < 5 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The kill may have torn the last line; the rerun drops it (and any step after the
    // newest checkpoint).
    let at_kill = std::fs::read_to_string(killed.join("out/metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["kind"] == "train"))
        .count();
    let out = run(&mut trainer(&["pretrain"], &cfg), true);
    let (resumed, _) = curve(&killed.join("out"));
    assert_eq!(resumed, reference, "the resumed run's losses equal the uninterrupted run's, step by step");
    if at_kill < reference.len() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("resuming after step"), "killed after {at_kill} steps: {err}");
    }

    // A stop at step 3 (checkpoint at 2), then a rerun: the same again.
    let stopped = tmp.path().join("stopped");
    std::fs::create_dir_all(&stopped).unwrap();
    let cfg = config(&stopped, &set, &fixture("llama"), "");
    run(&mut trainer(&["pretrain", "--stop-after", "3"], &cfg), true);
    let out = run(&mut trainer(&["pretrain"], &cfg), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming after step 2"));
    assert_eq!(curve(&stopped.join("out")).0, reference);

    // A changed config does not resume silently.
    let cfg = config(&stopped, &set, &fixture("llama"), "max_steps = 3\n");
    let out = run(&mut trainer(&["pretrain"], &cfg), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("another config"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_global_gradient_norm_matches_transformers() {
    type B = trainer::CpuAutodiff;
    use burn::prelude::*;
    for name in ["llama", "qwen2"] {
        let device = Default::default();
        let model = trainer::weights::load_model::<B>(&fixture(name), &device).unwrap();
        let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ids: Vec<i64> = st.tensor("input_ids").unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 12]), &device);
        let loss = causal_lm_loss(model.forward(ids.clone()), ids);
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip_global_norm(&model, &mut grads, 1.0, model.kernels());
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
        let want = reference["grad_norm"].as_f64().unwrap();
        assert!((norm - want).abs() < 1e-4 * want, "{name}: grad norm {norm} vs transformers {want}");
    }
}

#[test]
fn bad_inputs_get_one_clear_error_each() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    // A set tokenized with a larger vocabulary than the model's.
    make_set(&set, 10, 128_256);
    let cfg = config(tmp.path(), &set, &fixture("llama"), "");
    let err = String::from_utf8_lossy(&run(&mut trainer(&["pretrain"], &cfg), false).stderr).into_owned();
    assert!(err.contains("vocabulary of 128256 ids") && err.contains("has 128"), "{err}");

    // An empty train split.
    let empty = tmp.path().join("empty");
    make_set(&empty, 0, 128);
    let cfg = config(tmp.path(), &empty, &fixture("llama"), "");
    let err = String::from_utf8_lossy(&run(&mut trainer(&["pretrain"], &cfg), false).stderr).into_owned();
    assert!(err.contains("train split") && err.contains("empty"), "{err}");

    // No set at all.
    let cfg = config(tmp.path(), &tmp.path().join("nowhere"), &fixture("llama"), "");
    let err = String::from_utf8_lossy(&run(&mut trainer(&["pretrain"], &cfg), false).stderr).into_owned();
    assert!(err.contains("not a built set") && err.contains("make corpus"), "{err}");

    // An architecture this trainer does not run.
    let model = tmp.path().join("mistral");
    std::fs::create_dir_all(&model).unwrap();
    let mut hf: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("llama").join("config.json")).unwrap()).unwrap();
    hf["model_type"] = "mistral".into();
    std::fs::write(model.join("config.json"), hf.to_string()).unwrap();
    make_set(&set, 10, 128);
    let cfg = config(tmp.path(), &set, &model, "");
    let err = String::from_utf8_lossy(&run(&mut trainer(&["pretrain"], &cfg), false).stderr).into_owned();
    assert!(err.contains("unsupported architecture: model_type `mistral`"), "{err}");

    // A misspelled key.
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("lr = ", "learning_rate = ")).unwrap();
    let err = String::from_utf8_lossy(&run(&mut trainer(&["pretrain"], &cfg), false).stderr).into_owned();
    assert!(err.contains("learning_rate"), "{err}");
}
