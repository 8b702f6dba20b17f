//! `trainer ppo` end to end on the CPU: a tiny Llama-3-shaped model (random init, Llama-3
//! tokenizer) is primed on solver traces, then runs PPO steps on generated Countdown tasks;
//! the metrics and checkpoints appear; a run stopped right after priming and after a step,
//! then resumed, logs exactly the steps of a run that never stopped; bad configs get one
//! clear error each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

fn run(cmd: &mut Command, ok: bool) -> Output {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.success(), ok, "{cmd:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn tokenizer() -> PathBuf {
    let p = trainer::tokenizer::default_path();
    assert!(p.is_file(), "{} is missing: run `make llm-assets` (make test does)", p.display());
    p
}

fn config(dir: &Path, name: &str, extra_ppo: &str) -> PathBuf {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/tiny-llama3.json");
    let text = format!(
        "[model]\nconfig = \"{}\"\ntokenizer = \"{}\"\n\n[tasks]\neval_tasks = 4\n\n[tasks.generate]\nmin_numbers = 3\nmax_numbers = 3\nmax_number = 12\n\n\
         [prime]\nsteps = 3\nbatch_size = 4\nlr = 3e-3\n\n\
         [ppo]\nsteps = 3\nprompts_per_step = 2\nsamples = 2\nmax_response_tokens = 8\nactor_mini_batch_prompts = 1\ncritic_mini_batch = 2\nactor_lr = 1e-4\ncritic_lr = 1e-4\neval_every = 2\nsave_every = 1\n{extra_ppo}\n\
         [output]\ndir = \"{}\"\n",
        model.display(),
        tokenizer().display(),
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn lines(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|v| v["kind"] == kind).collect()
}

/// The train metrics without wall-clock fields.
fn steps(path: &Path) -> Vec<serde_json::Value> {
    lines(path, "train")
        .into_iter()
        .map(|mut v| {
            for k in [
                "rollout_s",
                "generation_s",
                "actor_logp_s",
                "reference_logp_s",
                "values_s",
                "update_s",
                "critic_update_s",
                "actor_update_s",
                "step_s",
                "rollout_tokens_per_s",
            ] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

#[test]
fn a_primed_model_runs_ppo_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = config(tmp.path(), "straight", "");
    let out = run(trainer().arg("ppo").arg("--config").arg(&straight), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ppo: 3 of 3 steps done") && err.contains("held-out tasks before: accuracy"), "{err}");
    let dir = tmp.path().join("straight");
    let metrics = dir.join("metrics.jsonl");
    let primes = lines(&metrics, "prime");
    assert_eq!(primes.len(), 3, "one line per priming step");
    assert!(primes[2]["loss"].as_f64().unwrap() < primes[0]["loss"].as_f64().unwrap(), "priming lowers the loss: {primes:?}");
    let train = steps(&metrics);
    assert_eq!(train.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);
    for v in &train {
        assert_eq!(v["responses"], 4, "2 prompts x 2 samples");
        for k in ["reward_mean", "accuracy", "format_rate", "response_tokens_mean", "kl", "entropy", "value_loss", "clip_fraction"] {
            assert!(v[k].as_f64().is_some_and(f64::is_finite), "{k} in {v}");
        }
    }
    // The step's parts are timed within it: generation and the three scorings within the
    // rollout, the rollout and the update within the step.
    for v in lines(&metrics, "train") {
        let t = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
        let scoring = t("actor_logp_s") + t("reference_logp_s") + t("values_s");
        assert!(t("generation_s") > 0.0 && scoring > 0.0, "{v}");
        assert!(t("generation_s") + scoring <= t("rollout_s") && t("rollout_s") + t("update_s") <= t("step_s"), "{v}");
        assert!(t("critic_update_s") > 0.0 && t("actor_update_s") > 0.0 && t("critic_update_s") + t("actor_update_s") <= t("update_s"), "{v}");
        assert_eq!(v["rows_sent_back"], 0, "the CPU's cache holds every row at full length: {v}");
    }
    assert!(
        err.contains("(generation ") && err.contains(", scoring ") && err.contains("; update ") && err.contains(": critic "),
        "the progress line splits the step: {err}"
    );
    assert!(err.contains("responses rolled out in ") && err.contains("critic updated in "), "lines within a step say where it is: {err}");
    assert_eq!(lines(&metrics, "eval").iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 2, 3], "before PPO, every 2 steps, at the end");
    for v in lines(&metrics, "eval") {
        // Rows generated alone equal the same rows of the batch on the CPU.
        assert_eq!((v["score"]["rows_checked"].as_u64(), v["score"]["rows_differing"].as_u64()), (Some(4), Some(0)), "{v}");
    }
    assert!(dir.join("checkpoints/step-00000003/actor.mpk").is_file() && dir.join("checkpoints/step-00000003/critic_optimizer.mpk").is_file());
    assert!(dir.join("reference.mpk").is_file());
    let samples = std::fs::read_to_string(dir.join("eval_samples.jsonl")).unwrap();
    assert!(samples.lines().count() >= 4 && samples.contains("\"verdict\""), "{samples}");

    // Stopped right after priming, then after one step, then resumed: the same steps as
    // the straight run, and priming ran once.
    let stopped = config(tmp.path(), "stopped", "");
    run(trainer().arg("ppo").arg("--stop-after").arg("0").arg("--config").arg(&stopped), true);
    assert!(tmp.path().join("stopped/checkpoints/step-00000000/actor.mpk").is_file(), "the primed model is kept");
    let out = run(trainer().arg("ppo").arg("--stop-after").arg("1").arg("--config").arg(&stopped), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming after step 0") && !err.contains("prime:"), "{err}");
    assert_eq!(lines(&tmp.path().join("stopped/metrics.jsonl"), "prime").len(), 3, "priming ran once");
    assert_eq!(steps(&tmp.path().join("stopped/metrics.jsonl")).len(), 1);
    let out = run(trainer().arg("ppo").arg("--config").arg(&stopped), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming after step 1"));
    assert_eq!(steps(&tmp.path().join("stopped/metrics.jsonl")), train, "a resumed run repeats the straight run's steps exactly");

    // A changed setting is not resumed silently.
    std::fs::write(&stopped, std::fs::read_to_string(&stopped).unwrap().replace("critic_lr = 1e-4", "critic_lr = 2e-4")).unwrap();
    let out = run(trainer().arg("ppo").arg("--config").arg(&stopped), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("made with another config"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The memory options: a reference held in another dtype (f64 standing in for bf16, which
/// the CPU backend lacks), every layer recomputed in the update, and AdamW's moments in host
/// memory. A run whose first step keeps its moments on the host (and cuts micro-batches by
/// positions), stopped after it and resumed with them on the device (the reference read back from its f32 file and held
/// again), logs the steps of a run that kept them on the device throughout.
#[test]
fn the_memory_options_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = config(tmp.path(), "held", "reference_dtype = \"f64\"\nrecompute = \"layers\"\n");
    let text = std::fs::read_to_string(&straight).unwrap().replace("steps = 3\nprompts", "steps = 2\nprompts");
    std::fs::write(&straight, text).unwrap();
    let out = run(trainer().arg("ppo").arg("--config").arg(&straight), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ppo: 2 of 2 steps done"), "{err}");
    let stopped = tmp.path().join("held-stopped.toml");
    let text = std::fs::read_to_string(&straight).unwrap().replace("/held\"", "/held-stopped\"");
    // Micro-batches by positions (the same single pass of 4 rows here) may change on resume too.
    std::fs::write(&stopped, text.replace("recompute = ", "optimizer_state = \"host\"\nmicro_batch_by_positions = true\nrecompute = ")).unwrap();
    let out = run(trainer().arg("ppo").arg("--stop-after").arg("1").arg("--config").arg(&stopped), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("moments in host memory"), "the plan counts them");
    std::fs::write(&stopped, text).unwrap();
    let out = run(trainer().arg("ppo").arg("--config").arg(&stopped), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming after step 1"));
    let (a, b) = (steps(&tmp.path().join("held/metrics.jsonl")), steps(&tmp.path().join("held-stopped/metrics.jsonl")));
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "a resumed run repeats the straight run's steps exactly");
}

#[test]
fn bad_configs_get_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("backend = \"tpu\"", "ppo.backend `tpu`"),
        ("top_p = 2.0", "top_p within 0..1"),
        ("sample = 2", "unknown field `sample`"),
        ("reference_dtype = \"bf16\"", "ppo.reference_dtype = bf16 needs the cuda backend"),
        ("recompute = \"most\"", "ppo.recompute = \"most\": use \"none\", \"layers\""),
        ("optimizer_state = \"disk\"", "unknown variant `disk`, expected `device` or `host`"),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let cfg = config(tmp.path(), &format!("bad{i}"), extra);
        let out = run(trainer().arg("ppo").arg("--config").arg(&cfg), false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{extra}: {err}");
    }
    // A tokenizer larger than the model's vocabulary.
    let cfg = config(tmp.path(), "small", "");
    let small_model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .replace(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/tiny-llama3.json").display().to_string(), &small_model.display().to_string());
    std::fs::write(&cfg, text).unwrap();
    let out = run(trainer().arg("ppo").arg("--config").arg(&cfg), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("use the model's own tokenizer"), "{}", String::from_utf8_lossy(&out.stderr));
    // Profiles: the host's is pretraining's only; the GPU's needs a CUDA build, said before
    // any priming or output (these tests run the CPU build).
    let cfg = config(tmp.path(), "profiled", "");
    let out = run(trainer().arg("ppo").arg("--config").arg(&cfg).arg("--host-profile").arg(tmp.path().join("host.folded")), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gpu-profile profiles a PPO step"), "{}", String::from_utf8_lossy(&out.stderr));
    if !cfg!(feature = "cuda") {
        let out = run(trainer().arg("ppo").arg("--config").arg(&cfg).arg("--gpu-profile").arg(tmp.path().join("gpu.jsonl")), false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("needs a CUDA build") && err.contains("--features cuda"), "{err}");
        assert!(!tmp.path().join("profiled").exists() && !tmp.path().join("gpu.jsonl").exists(), "nothing written");
    }
}
