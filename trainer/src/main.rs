//! The `trainer` command line: `pretrain` (continued pretraining / SFT on a built set),
//! `ppo` (PPO on Countdown), `compare-backends` (the same weights on the CPU and on CUDA),
//! `logits` (a model's logits as a `.npy` file for another implementation to compare with),
//! `check-batch` (rows of a batch against themselves alone), `bench-generate` (rollout
//! generation speed), `bench-ops` (where a pretraining step's time goes) and `export` (a
//! checkpoint as a Hugging Face model folder). Each command
//! parses its arguments and hands its work to the backend the config or `--backend` names.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use trainer::TrainBackend;
use trainer::diag::batch_check::{BatchCheck, check_batch};
use trainer::diag::compare_backends::compare_backends;
use trainer::diag::generate_bench::{GenerateBench, bench_generate};
use trainer::diag::generate_ids::{GenerateJob, generate_ids};
use trainer::diag::logits::{LogitsJob, write_logits};
use trainer::diag::model_source::ModelSource;
use trainer::diag::ops_bench::{OpsBench, bench_ops};
use trainer::model::config::ModelConfig;
use trainer::model::precision::parse_compute;
use trainer::ops::backend::{BackendKind, BackendWork, fusion_pays_off, on_backend};
use trainer::ops::kernels::Kernels;
use trainer::ppo::config::PpoConfig;
use trainer::ppo::run::{EvalScore, PpoSummary, ppo};
use trainer::run::options::RunOptions;
use trainer::train::config::{PretrainConfig, check_compute_dtype};
use trainer::train::run::{Summary, pretrain};

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
    CompareBackends(SourceArgs),
    /// A checkpoint as a Hugging Face model folder (config.json, generation_config.json,
    /// model.safetensors or shards with an index, the tokenizer's files) that
    /// transformers' `from_pretrained` and vLLM load.
    Export {
        /// A trainer run folder (its newest checkpoint), a checkpoint folder, a `.mpk`
        /// record, or Hugging Face safetensors.
        #[arg(long)]
        checkpoint: PathBuf,
        /// A new (or empty) folder to write.
        #[arg(long)]
        out: PathBuf,
        /// The model's config.json (or its folder); default: the one the run recorded.
        #[arg(long)]
        model_config: Option<PathBuf>,
        /// The folder (or tokenizer.json) whose tokenizer files are copied; default: beside
        /// the model's config.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// bf16, f16 or f32.
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// Largest shard in GB (10^9 bytes); a larger model is written in shards with an index.
        #[arg(long, default_value_t = 5.0)]
        max_shard_gb: f64,
    },
    /// A model's logits for rows of token ids, written as a NumPy `.npy` file (f32, [rows,
    /// seq, vocab]) for another implementation to be compared with.
    Logits {
        #[command(flatten)]
        source: SourceArgs,
        /// A JSON file of equally long rows of token ids: [[1, 2, 3], [4, 5, 6]].
        #[arg(long)]
        ids: PathBuf,
        /// The `.npy` file to write.
        #[arg(long)]
        out: PathBuf,
        /// "cpu" or "cuda".
        #[arg(long, default_value = "cuda")]
        backend: String,
        /// The dtype the matmuls run in: f32, bf16 or f16 (cuda), f64.
        #[arg(long, default_value = "f32")]
        compute_dtype: String,
    },
    /// Generates from token-id prompts with the rollout engine; prints one JSON line a
    /// prompt: its new tokens and each step's gap between the two largest logits.
    Generate {
        #[command(flatten)]
        source: SourceArgs,
        /// A JSON file of prompts, rows of token ids of any lengths: [[1, 2, 3], [4, 5]].
        #[arg(long)]
        prompts: PathBuf,
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// 0: greedy; otherwise sampled at this temperature (top-p 1), seeded per row.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// "cpu" or "cuda".
        #[arg(long, default_value = "cuda")]
        backend: String,
        /// The dtype the matmuls run in: f32, bf16 or f16 (cuda), f64.
        #[arg(long, default_value = "f32")]
        compute_dtype: String,
    },
    /// Rows of a batch against the same rows alone, on one backend: greedy generation of
    /// a rollout-shaped batch (left-padded prompts of 80-92 tokens), then its first rows one
    /// by one; prints each row's logits gap step by step and which row a mixed-up row took.
    CheckBatch {
        #[command(flatten)]
        source: SourceArgs,
        /// "cpu" or "cuda" (HABITS_CUDA_FUSION=0: without burn's fusion).
        #[arg(long, default_value = "cuda")]
        backend: String,
        #[arg(long, default_value_t = 256)]
        rows: usize,
        /// How many of the first rows are generated again alone.
        #[arg(long, default_value_t = 6)]
        alone: usize,
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
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
        /// Write a GPU profile of one more call here (every kernel, per decoding step; CUDA builds).
        #[arg(long)]
        gpu_profile: Option<PathBuf>,
        /// The dtype the matmuls run in: f32, bf16 or f16 (cuda), f64.
        #[arg(long, default_value = "f32")]
        compute_dtype: String,
    },
    /// Where a pretraining step's time goes: its pieces timed alone at a model's shapes
    /// (projections, attention, a decoder layer, LM head + loss, model, step); JSON lines.
    BenchOps {
        /// A Hugging Face `config.json` (the model's shape; random weights).
        #[arg(long)]
        model: PathBuf,
        /// "cpu" or "cuda".
        #[arg(long, default_value = "cuda")]
        backend: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 2048)]
        seq: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// The dtype the matmuls run in: f32, bf16 or f16 (cuda), f64.
        #[arg(long, default_value = "f32")]
        compute_dtype: String,
    },
}

/// Which weights a check runs on.
#[derive(clap::Args)]
struct SourceArgs {
    /// A Hugging Face model folder (config.json + safetensors).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    model: Option<PathBuf>,
    /// Or a model's shape (a `config.json`): a seeded random init (the same weights on
    /// every backend).
    #[arg(long)]
    config: Option<PathBuf>,
    /// With --config: these weights instead: a trainer checkpoint (a record such as
    /// `runs/ppo-gpu/checkpoints/step-00000010/actor.mpk`, a checkpoint or a run folder) or
    /// Hugging Face safetensors (a file, an index or a folder), shapes checked.
    #[arg(long, requires = "config")]
    record: Option<PathBuf>,
}

impl SourceArgs {
    fn source(self) -> Result<ModelSource> {
        ModelSource::new(self.model, self.config, self.record)
    }
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
    /// Write no checkpoints (a benchmark or a smoke run: nothing to resume from).
    #[arg(long)]
    no_save: bool,
    /// Stop cleanly after this many minutes: the step in progress finishes, then an
    /// evaluation and a checkpoint; the next invocation resumes.
    #[arg(long)]
    time_limit_minutes: Option<f64>,
    /// Write a sampling profile of the host over the steps after the third (folded stacks;
    /// summarise with scripts/host_profile.py). Needs the `host-profile` cargo feature.
    #[arg(long)]
    host_profile: Option<PathBuf>,
    /// Record every GPU kernel and write where the GPU's time went (JSON lines: the window,
    /// then each kernel most time first): pretraining, over the steps after the third; PPO,
    /// over the invocation's first step, also by part (generation, scoring, each model's
    /// update). Needs a CUDA build and libcupti.
    #[arg(long)]
    gpu_profile: Option<PathBuf>,
}

impl RunArgs {
    fn options(&self) -> RunOptions {
        RunOptions {
            fresh: self.fresh,
            stop_after: self.stop_after,
            no_save: self.no_save,
            time_limit: self.time_limit_minutes.map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
            host_profile: self.host_profile.clone(),
            gpu_profile: self.gpu_profile.clone(),
        }
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
            let mut cfg = PretrainConfig::load(&args.config)?;
            cfg.kernels = cfg.kernels.with_env_overrides()?;
            eprintln!("{}", cfg.kernels.describe());
            let fusion = fusion_pays_off(parse_compute(&cfg.train.compute_dtype)?);
            on_backend(BackendKind::parse(&cfg.train.backend, "train.backend")?, cfg.kernels, fusion, Work::Pretrain(&cfg, args.options()))
        }
        Command::Ppo(args) => {
            if args.host_profile.is_some() {
                bail!("--host-profile profiles pretraining steps; `trainer ppo` does not take it (--gpu-profile profiles a PPO step)");
            }
            let mut cfg = PpoConfig::load(&args.config)?;
            cfg.kernels = cfg.kernels.with_env_overrides()?;
            eprintln!("{}", cfg.kernels.describe());
            on_backend(BackendKind::parse(&cfg.ppo.backend, "ppo.backend")?, cfg.kernels, false, Work::Ppo(&cfg, args.options()))
        }
        Command::CompareBackends(source) => compare_backends(&source.source()?, Kernels::default().with_env_overrides()?),
        Command::Export { checkpoint, out, model_config, tokenizer, dtype, max_shard_gb } => {
            if max_shard_gb.is_nan() || max_shard_gb <= 0.0 {
                bail!("--max-shard-gb must be above 0");
            }
            let max_shard_bytes = (max_shard_gb * 1e9) as u64;
            let export = trainer::export::Export { checkpoint, model_config, tokenizer, out, dtype, max_shard_bytes };
            trainer::export::parse_dtype(&export.dtype)?;
            let (config, tokenizer_dir) = trainer::export::resolve(&export)?;
            let model = trainer::weights::load_weights::<trainer::Cpu>(&config, &export.checkpoint, &Default::default())?;
            let files = trainer::export::write_export(&model, &export, tokenizer_dir.as_deref())?;
            eprintln!("export: {} parameters in {} as {}:", config.num_parameters(), export.out.display(), export.dtype);
            for f in files {
                eprintln!("  {}", f.display());
            }
            Ok(())
        }
        Command::Logits { source, ids, out, backend, compute_dtype } => {
            let (kind, kernels) = (BackendKind::parse(&backend, "--backend")?, Kernels::default().with_env_overrides()?);
            let compute = check_compute_dtype(&compute_dtype, kind, "--compute-dtype")?;
            on_backend(kind, kernels, false, Work::Logits(LogitsJob { source: source.source()?, ids, out, compute, kernels }))
        }
        Command::Generate { source, prompts, new_tokens, temperature, seed, backend, compute_dtype } => {
            let (kind, kernels) = (BackendKind::parse(&backend, "--backend")?, Kernels::default().with_env_overrides()?);
            let compute = check_compute_dtype(&compute_dtype, kind, "--compute-dtype")?;
            if !(temperature >= 0.0 && temperature.is_finite()) {
                bail!("--temperature must be 0 (greedy) or above");
            }
            let job = GenerateJob { source: source.source()?, prompts, new_tokens, temperature, seed, compute, kernels };
            on_backend(kind, kernels, false, Work::Generate(job))
        }
        Command::CheckBatch { source, backend, rows, alone, new_tokens } => {
            let kernels = Kernels::default().with_env_overrides()?;
            let work = Work::CheckBatch(source.source()?, BatchCheck { rows, alone, new_tokens, kernels });
            on_backend(BackendKind::parse(&backend, "--backend")?, kernels, true, work)
        }
        Command::BenchGenerate { model, backend, batch, prompt_tokens, new_tokens, repeats, gpu_profile, compute_dtype } => {
            let (kind, kernels) = (BackendKind::parse(&backend, "--backend")?, Kernels::default().with_env_overrides()?);
            let compute = check_compute_dtype(&compute_dtype, kind, "--compute-dtype")?;
            let bench = GenerateBench { batch, prompt_tokens, new_tokens, repeats, compute, kernels, gpu_profile };
            on_backend(kind, kernels, false, Work::BenchGenerate(ModelConfig::from_file(&model)?, bench))
        }
        Command::BenchOps { model, backend, batch, seq, repeats, compute_dtype } => {
            let (kind, kernels) = (BackendKind::parse(&backend, "--backend")?, Kernels::default().with_env_overrides()?);
            let compute = check_compute_dtype(&compute_dtype, kind, "--compute-dtype")?;
            let bench = OpsBench { batch, seq, repeats, compute, kernels };
            on_backend(kind, kernels, fusion_pays_off(compute), Work::BenchOps(ModelConfig::from_file(&model)?, bench))
        }
    }
}

/// What a command runs on its backend, with what it was given.
enum Work<'a> {
    Pretrain(&'a PretrainConfig, RunOptions),
    Ppo(&'a PpoConfig, RunOptions),
    CheckBatch(ModelSource, BatchCheck),
    Logits(LogitsJob),
    Generate(GenerateJob),
    BenchGenerate(ModelConfig, GenerateBench),
    BenchOps(ModelConfig, OpsBench),
}

impl BackendWork for Work<'_> {
    type Output = ();
    fn run<B: TrainBackend>(self, device: &B::Device) -> Result<()> {
        match self {
            Work::Pretrain(cfg, opts) => {
                print_pretrain(&pretrain::<B>(cfg, device, &opts)?, cfg);
                Ok(())
            }
            Work::Ppo(cfg, opts) => {
                print_ppo(&ppo::<B>(cfg, device, &opts)?, cfg);
                Ok(())
            }
            Work::CheckBatch(source, check) => {
                let bad = check_batch::<B::InnerBackend>(&source, &check)?;
                if bad > 0 {
                    bail!("{bad} of {} rows differ from themselves generated alone: the backend mixes rows up", check.alone);
                }
                Ok(())
            }
            Work::Logits(job) => {
                let shape = write_logits::<B::InnerBackend>(&job, device)?;
                eprintln!("logits: {shape:?} of {} written to {}", job.source, job.out.display());
                Ok(())
            }
            Work::Generate(job) => generate_ids::<B::InnerBackend>(&job, device),
            Work::BenchGenerate(config, bench) => {
                println!("{}", bench_generate::<B::InnerBackend>(&config, &bench, device)?);
                Ok(())
            }
            Work::BenchOps(config, bench) => bench_ops::<B>(&config, &bench, device, &mut |l| println!("{l}")),
        }
    }
}

fn print_pretrain(summary: &Summary, cfg: &PretrainConfig) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    eprintln!(
        "pretrain: {} of {} steps done, {} tokens seen, last loss {}, eval loss {}; checkpoint {}; metrics {}",
        summary.steps,
        summary.total_steps,
        summary.tokens_seen,
        or_dash(summary.last_loss.map(|l| format!("{l:.4}"))),
        or_dash(summary.eval_loss.map(|l| format!("{l:.4}"))),
        or_dash(summary.checkpoint.as_ref().map(|p| p.display().to_string())),
        cfg.output.dir.join("metrics.jsonl").display()
    );
}

fn print_ppo(summary: &PpoSummary, cfg: &PpoConfig) {
    let eval = |e: &Option<EvalScore>| e.as_ref().map(|e| format!("accuracy {:.3}, reward {:.3}", e.accuracy, e.reward_mean)).unwrap_or("-".into());
    eprintln!(
        "ppo: {} of {} steps done; held-out tasks before: {}, last: {}; checkpoint {}; metrics {}",
        summary.steps,
        summary.total_steps,
        eval(&summary.first_eval),
        eval(&summary.last_eval),
        summary.checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or("-".into()),
        cfg.output.dir.join("metrics.jsonl").display()
    );
}
