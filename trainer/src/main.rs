//! The `trainer` command line: `pretrain` (continued pretraining / SFT on a built set),
//! `ppo` (PPO on Countdown), `compare-backends` (the same weights on the CPU and on CUDA)
//! and `bench-generate` (rollout generation speed).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use trainer::generate_bench::{GenerateBench, bench_generate};
use trainer::ppo::config::PpoConfig;
use trainer::ppo::run::{PpoSummary, ppo};
use trainer::train::config::PretrainConfig;
use trainer::train::run::{RunOptions, pretrain};

/// mimalloc instead of glibc malloc: the logits over a 128k vocabulary are large buffers
/// that glibc maps and unmaps on every step (a third of the tiny PPO run was system time).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "trainer", version, about = "habits trainer: continued pretraining on the built sets, PPO on Countdown")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on a built set (resumes from the newest checkpoint in output.dir).
    Pretrain(RunArgs),
    /// PPO on Countdown (resumes from the newest checkpoint in output.dir).
    Ppo(RunArgs),
    /// Logits of a model folder on the CPU and on CUDA; prints the largest relative gap.
    CompareBackends {
        /// A Hugging Face model folder (config.json + safetensors).
        #[arg(long)]
        model: PathBuf,
    },
    /// Rollout generation speed: a random-init model samples a batch of responses (prints JSON).
    BenchGenerate {
        /// A Hugging Face `config.json` (the model's shape).
        #[arg(long)]
        model: PathBuf,
        /// "cpu" or "cuda".
        #[arg(long, default_value = "cuda")]
        backend: String,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, default_value_t = 96)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
}

/// What both training commands take.
#[derive(clap::Args)]
struct RunArgs {
    /// The run config, e.g. configs/pretrain-tiny.toml or configs/ppo-tiny.toml.
    #[arg(short, long)]
    config: PathBuf,
    /// Ignore existing checkpoints and start over.
    #[arg(long)]
    fresh: bool,
    /// Stop after this many steps of this invocation.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Stop cleanly after this many minutes: the step in progress finishes, then an
    /// evaluation and a checkpoint; the next invocation resumes.
    #[arg(long)]
    time_limit_minutes: Option<f64>,
}

impl RunArgs {
    fn options(&self) -> RunOptions {
        RunOptions { fresh: self.fresh, stop_after: self.stop_after, time_limit: self.time_limit_minutes.map(|m| std::time::Duration::from_secs_f64(m * 60.0)) }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pretrain(args) => {
            let cfg = PretrainConfig::load(&args.config)?;
            let opts = args.options();
            let summary = match cfg.train.backend.as_str() {
                "cpu" => pretrain::<trainer::CpuAutodiff>(&cfg, &Default::default(), &opts)?,
                _ => cuda_pretrain(&cfg, &opts)?,
            };
            eprintln!(
                "pretrain: {} of {} steps done, {} tokens seen, last loss {}, eval loss {}; checkpoint {}; metrics {}",
                summary.steps,
                summary.total_steps,
                summary.tokens_seen,
                summary.last_loss.map(|l| format!("{l:.4}")).unwrap_or("-".into()),
                summary.eval_loss.map(|l| format!("{l:.4}")).unwrap_or("-".into()),
                summary.checkpoint.map(|p| p.display().to_string()).unwrap_or("-".into()),
                cfg.output.dir.join("metrics.jsonl").display()
            );
            Ok(())
        }
        Command::Ppo(args) => {
            let cfg = PpoConfig::load(&args.config)?;
            let opts = args.options();
            let summary = match cfg.ppo.backend.as_str() {
                "cpu" => ppo::<trainer::CpuAutodiff>(&cfg, &Default::default(), &opts)?,
                _ => cuda_ppo(&cfg, &opts)?,
            };
            let eval = |e: &Option<trainer::ppo::run::EvalScore>| {
                e.as_ref().map(|e| format!("accuracy {:.3}, reward {:.3}", e.accuracy, e.reward_mean)).unwrap_or("-".into())
            };
            eprintln!(
                "ppo: {} of {} steps done; held-out tasks before: {}, last: {}; checkpoint {}; metrics {}",
                summary.steps,
                summary.total_steps,
                eval(&summary.first_eval),
                eval(&summary.last_eval),
                summary.checkpoint.map(|p| p.display().to_string()).unwrap_or("-".into()),
                cfg.output.dir.join("metrics.jsonl").display()
            );
            Ok(())
        }
        Command::CompareBackends { model } => compare_backends(&model),
        Command::BenchGenerate { model, backend, batch, prompt_tokens, new_tokens, repeats } => {
            let config = trainer::model::config::ModelConfig::from_file(&model)?;
            let b = GenerateBench { batch, prompt_tokens, new_tokens, repeats };
            let result = match backend.as_str() {
                "cpu" => bench_generate::<trainer::Cpu>(&config, &b, &Default::default())?,
                "cuda" => cuda_bench_generate(&config, &b)?,
                other => bail!("--backend {other}: use cpu or cuda"),
            };
            println!("{result}");
            Ok(())
        }
    }
}

/// The one error of every CUDA path in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
fn without_cuda(otherwise: &str) -> anyhow::Error {
    anyhow::anyhow!("this trainer was built without CUDA: build it with `cargo build --release -p trainer --features cuda`, or {otherwise}")
}

#[cfg(feature = "cuda")]
fn cuda_bench_generate(config: &trainer::model::config::ModelConfig, b: &GenerateBench) -> Result<serde_json::Value> {
    bench_generate::<burn::backend::Cuda<f32, i32>>(config, b, &Default::default())
}

#[cfg(not(feature = "cuda"))]
fn cuda_bench_generate(_: &trainer::model::config::ModelConfig, _: &GenerateBench) -> Result<serde_json::Value> {
    Err(without_cuda("pass --backend cpu"))
}

#[cfg(feature = "cuda")]
fn cuda_ppo(cfg: &PpoConfig, opts: &RunOptions) -> Result<PpoSummary> {
    ppo::<burn::backend::Autodiff<burn::backend::Cuda<f32, i32>>>(cfg, &Default::default(), opts)
}

#[cfg(not(feature = "cuda"))]
fn cuda_ppo(_: &PpoConfig, _: &RunOptions) -> Result<PpoSummary> {
    Err(without_cuda("set ppo.backend = \"cpu\""))
}

#[cfg(feature = "cuda")]
fn cuda_pretrain(cfg: &PretrainConfig, opts: &RunOptions) -> Result<trainer::train::run::Summary> {
    eprintln!("cuda: the first steps compile and tune kernels (minutes on a 1B model); the steady speed comes after");
    pretrain::<burn::backend::Autodiff<burn::backend::Cuda<f32, i32>>>(cfg, &Default::default(), opts)
}

#[cfg(not(feature = "cuda"))]
fn cuda_pretrain(_: &PretrainConfig, _: &RunOptions) -> Result<trainer::train::run::Summary> {
    Err(without_cuda("set train.backend = \"cpu\""))
}

#[cfg(feature = "cuda")]
fn compare_backends(dir: &std::path::Path) -> Result<()> {
    use burn::prelude::*;
    type Gpu = burn::backend::Cuda<f32, i32>;
    // Op by op first, at a rollout batch's shapes (the 90M profile's heads), so that a
    // disagreement below can be traced to one op.
    let shapes = trainer::backend_check::OpShapes { batch: 256, heads: 8, kv_heads: 4, head_dim: 64, prompt: 96, capacity: 192, vocab: 4096 };
    for g in trainer::backend_check::check_ops::<trainer::Cpu, Gpu>(shapes, &Default::default(), &Default::default()) {
        println!("op {:<48} CPU vs CUDA relative gap {:.3e}{}", g.op, g.gap, if g.gap > 1e-3 { "  DIFFERS" } else { "" });
    }
    let cpu = trainer::weights::load_model::<trainer::Cpu>(dir, &Default::default())?;
    let gpu = trainer::weights::load_model::<Gpu>(dir, &Default::default())?;
    let vocab = cpu.config.vocab_size as i64;
    let ids: Vec<i64> = (0..2 * 24).map(|i| (i * 7919 + 3) % vocab).collect();
    let a = cpu.forward(Tensor::from_data(TensorData::new(ids.clone(), [2, 24]), &Default::default())).into_data().to_vec::<f32>()?;
    let b = gpu.forward(Tensor::from_data(TensorData::new(ids, [2, 24]), &Default::default())).into_data().to_vec::<f32>()?;
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let gap = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
    println!("{}: CPU (NdArray) vs CUDA logits, max relative gap {gap:.3e} over {} values", dir.display(), a.len());
    if gap > 1e-3 {
        bail!("the backends disagree by {gap}");
    }
    // Batched, left-padded generation with the cache: the same greedy tokens on both, from
    // a few rows to a rollout batch.
    let sampling = trainer::generate::Sampling { max_new_tokens: 12, temperature: 0.0, top_p: 1.0, seed: 0, eos: None };
    for rows in [6u32, 64, 256] {
        let prompts: Vec<Vec<u32>> = (0..rows).map(|r| (0..3 + (r % 7) * 5).map(|i| ((r * 31 + i * 17 + 1) as i64 % vocab) as u32).collect()).collect();
        let on_cpu = trainer::generate::generate(&cpu, &prompts, &sampling, false)?.tokens;
        let on_gpu = trainer::generate::generate(&gpu, &prompts, &sampling, false)?.tokens;
        let same = on_cpu.iter().zip(&on_gpu).filter(|(a, b)| a == b).count();
        println!("{}: greedy generation of {rows} left-padded prompts, CPU vs CUDA: {same} rows equal", dir.display());
        if same != prompts.len() {
            let first = on_cpu.iter().zip(&on_gpu).position(|(a, b)| a != b).unwrap_or(0);
            bail!("generation differs between the backends from row {first}: CPU {:?}, CUDA {:?}", on_cpu[first], on_gpu[first]);
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn compare_backends(_: &std::path::Path) -> Result<()> {
    Err(without_cuda("run compare-backends with a build that has it (it compares the CPU with CUDA)"))
}
