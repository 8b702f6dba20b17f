//! `scripts/gpu_profile.py` (the summary of `trainer pretrain|ppo --gpu-profile`) on a
//! profile written by the trainer's own writer (`gpu_profile::summary_lines`,
//! `part_lines`): the window per step, the kernels most time first, cuBLAS's products
//! grouped, each marked part apart; a file that is not a profile is one clear error.

use std::path::Path;
use std::process::{Command, Output};

use trainer::diag::gpu_profile::{KernelRun, part_lines, summary_lines};

fn summarise(text: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpu.jsonl");
    std::fs::write(&file, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gpu_profile.py");
    Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())).arg(script).arg(&file).args(extra).output().expect("python3")
}

fn run(name: &str, start_us: u64, end_us: u64) -> KernelRun {
    KernelRun { name: name.into(), start: start_us * 1000, end: end_us * 1000 }
}

#[test]
fn the_window_and_kernels_are_summarised_per_step() {
    // Two steps of 10 ms: the GPU busy for 7 ms of the 20.
    let runs = [
        run("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT", 0, 3000),
        run("causal_softmax_kernel_e_bf16_n_8", 3000, 4000),
        run("nvjet_sm90_tst_64x128_64x8_1x2_h_bz_NNN", 10_000, 11_000),
        run("cutlass::gemm::kernel<float>", 11_000, 12_000),
        run("causal_softmax_kernel_e_bf16_n_8", 12_000, 13_000),
    ];
    let text: String = summary_lines(&runs, 20_000_000, 2).iter().map(|l| format!("{l}\n")).collect();
    let out = summarise(&text, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("2 steps: wall 10.00 ms/step, GPU busy 3.50 ms/step (35.0%), 2 kernels/step"), "{stdout}");
    assert!(lines[1].contains("1.500 ms/step") && lines[1].contains("nvjet_sm90_tst_256x128"), "{stdout}");
    assert!(lines[2].contains("1.000 ms/step") && lines[2].contains("causal_softmax_kernel") && lines[2].contains("1.0/step"), "{stdout}");
    let families = String::from_utf8(summarise(&text, &["--families"]).stdout).unwrap();
    let first = families.lines().nth(1).unwrap_or_default();
    assert!(first.contains("2.500 ms/step") && first.contains("cuBLAS products") && first.contains("71.4%"), "{families}");
}

#[test]
fn each_marked_part_is_summarised_apart() {
    // A PPO step in little: generation, then the critic's update.
    let runs = [run("decode_attention<bf16>", 0, 2000), run("nvjet_sm90_gemm", 2000, 4000), run("adamw_step<f32>", 10_000, 16_000)];
    let marks = vec![("generation".to_string(), 0), ("critic update".to_string(), 8_000_000)];
    let lines: Vec<serde_json::Value> = summary_lines(&runs, 20_000_000, 1).into_iter().chain(part_lines(&runs, &marks, 20_000_000, 1)).collect();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let plain = String::from_utf8(summarise(&text, &[]).stdout).unwrap();
    assert_eq!(plain.lines().count(), 4, "the whole window and its three kernels, no part repeated: {plain}");
    let out = summarise(&text, &["--parts", "--families"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let generation = stdout.find("generation: 1 steps: wall 8.00 ms/step, GPU busy 4.00 ms/step (50.0%), 2 kernels/step").expect(&stdout);
    let update = stdout.find("critic update: 1 steps: wall 12.00 ms/step, GPU busy 6.00 ms/step (50.0%), 1 kernels/step").expect(&stdout);
    assert!(generation < update, "{stdout}");
    let in_generation = &stdout[generation..update];
    assert!(in_generation.contains("cuBLAS products") && in_generation.contains("decode_attention") && !in_generation.contains("adamw"), "{stdout}");
    assert!(stdout[update..].contains("6.000 ms/step") && stdout[update..].contains("adamw_step"), "{stdout}");
    let pretraining = summary_lines(&runs, 20_000_000, 1).iter().map(|l| format!("{l}\n")).collect::<String>();
    assert!(String::from_utf8(summarise(&pretraining, &["--parts"]).stdout).unwrap().contains("no parts"));
}

#[test]
fn a_file_that_is_not_a_profile_is_one_clear_error() {
    for text in ["", "{\"piece\": \"kernel\"}\n", "not json\n"] {
        let out = summarise(text, &[]);
        assert!(!out.status.success(), "{text:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a GPU profile") && err.contains("--gpu-profile"), "{text:?}: {err}");
    }
}
