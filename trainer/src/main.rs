//! The `trainer` command line: `pretrain` (continued pretraining / SFT on a built set),
//! `ppo` (PPO on Countdown), `compare-backends` (the same weights on the CPU and on CUDA)
//! `check-batch` (rows of a batch against themselves alone), `bench-generate` (rollout
//! generation speed) and `bench-ops` (where a pretraining step's time goes).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use trainer::generate_bench::{GenerateBench, bench_generate};
use trainer::ops_bench::{OpsBench, bench_ops};
use trainer::ppo::config::PpoConfig;
use trainer::ppo::run::{PpoSummary, ppo};
use trainer::train::config::{PretrainConfig, check_compute_dtype};
use trainer::train::run::{RunOptions, pretrain};
#[cfg(feature = "cuda")]
use trainer::{CudaFused, CudaPlain};

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
    /// With --config: the weights of a trainer checkpoint instead (a record such as
    /// `runs/ppo-gpu/checkpoints/step-00000010/actor.mpk`, a checkpoint or a run folder).
    #[arg(long, requires = "config")]
    record: Option<PathBuf>,
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
    /// Write a sampling profile of the host over the steps after the third (folded stacks;
    /// summarise with scripts/host_profile.py). Needs the `host-profile` cargo feature.
    #[arg(long)]
    host_profile: Option<PathBuf>,
    /// Record every GPU kernel over the steps after the third and write where the GPU's
    /// time went (JSON lines: the window, then each kernel most time first). Needs a CUDA
    /// build and libcupti.
    #[arg(long)]
    gpu_profile: Option<PathBuf>,
}

impl RunArgs {
    fn options(&self) -> RunOptions {
        RunOptions {
            fresh: self.fresh,
            stop_after: self.stop_after,
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
            if args.host_profile.is_some() || args.gpu_profile.is_some() {
                bail!("--host-profile and --gpu-profile profile pretraining steps; `trainer ppo` does not take them");
            }
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
        Command::CompareBackends(source) => compare_backends(&ModelSource::new(source)?),
        Command::CheckBatch { source, backend, rows, alone, new_tokens } => {
            let source = ModelSource::new(source)?;
            let check = BatchCheck { rows, alone, new_tokens };
            let bad = match backend.as_str() {
                "cpu" => check_batch::<trainer::Cpu>(&source, &check)?,
                "cuda" => cuda_check_batch(&source, &check)?,
                other => bail!("--backend {other}: use cpu or cuda"),
            };
            if bad > 0 {
                bail!("{bad} of {alone} rows differ from themselves generated alone: the backend mixes rows up");
            }
            Ok(())
        }
        Command::BenchGenerate { model, backend, batch, prompt_tokens, new_tokens, repeats, compute_dtype } => {
            let config = trainer::model::config::ModelConfig::from_file(&model)?;
            let compute = check_compute_dtype(&compute_dtype, &backend, "--compute-dtype")?;
            let b = GenerateBench { batch, prompt_tokens, new_tokens, repeats, compute };
            let result = match backend.as_str() {
                "cpu" => bench_generate::<trainer::Cpu>(&config, &b, &Default::default())?,
                "cuda" => cuda_bench_generate(&config, &b)?,
                other => bail!("--backend {other}: use cpu or cuda"),
            };
            println!("{result}");
            Ok(())
        }
        Command::BenchOps { model, backend, batch, seq, repeats, compute_dtype } => {
            let config = trainer::model::config::ModelConfig::from_file(&model)?;
            let compute = check_compute_dtype(&compute_dtype, &backend, "--compute-dtype")?;
            let o = OpsBench { batch, seq, repeats, compute };
            let mut print = |l: &serde_json::Value| println!("{l}");
            match backend.as_str() {
                "cpu" => bench_ops::<trainer::CpuAutodiff>(&config, &o, &Default::default(), &mut print)?,
                "cuda" => cuda_bench_ops(&config, &o, &mut print)?,
                other => bail!("--backend {other}: use cpu or cuda"),
            };
            Ok(())
        }
    }
}

/// Where a checked model's weights come from.
enum ModelSource {
    /// A Hugging Face folder.
    Folder(PathBuf),
    /// A shape: seeded random weights, or a trainer checkpoint's.
    Shape { config: PathBuf, record: Option<PathBuf> },
}

impl ModelSource {
    fn new(args: SourceArgs) -> Result<Self> {
        match (args.model, args.config) {
            (Some(dir), _) => Ok(ModelSource::Folder(dir)),
            (None, Some(config)) => Ok(ModelSource::Shape { config, record: args.record }),
            (None, None) => bail!("give --model DIR or --config CONFIG.json"),
        }
    }

    fn load<B: trainer::ModelBackend>(&self, device: &B::Device) -> Result<trainer::model::Llama<B>> {
        match self {
            ModelSource::Folder(dir) => trainer::weights::load_model::<B>(dir, device),
            ModelSource::Shape { config, record } => {
                let config = trainer::model::config::ModelConfig::from_file(config)?;
                match record {
                    // A trainer checkpoint (record, checkpoint or run folder), shapes checked.
                    Some(path) => trainer::weights::load_weights::<B>(&config, path, device),
                    None => {
                        B::seed(device, 17);
                        Ok(trainer::model::Llama::<B>::random(&config, device))
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Folder(dir) => write!(f, "{}", dir.display()),
            ModelSource::Shape { config, record: None } => write!(f, "{} (random weights)", config.display()),
            ModelSource::Shape { config, record: Some(r) } => write!(f, "{} ({})", config.display(), r.display()),
        }
    }
}

/// What `check-batch` generates.
struct BatchCheck {
    rows: usize,
    alone: usize,
    new_tokens: usize,
}

/// Prints each checked row; returns how many differ from themselves alone.
fn check_batch<B: trainer::ModelBackend>(source: &ModelSource, c: &BatchCheck) -> Result<usize> {
    let started = std::time::Instant::now();
    let model = source.load::<B>(&Default::default())?;
    let prompts = trainer::batch_check::rollout_like_prompts(c.rows, model.config.vocab_size);
    let checks = trainer::batch_check::batch_vs_alone(&model, &prompts, c.alone, c.new_tokens)?;
    for check in &checks {
        println!("{check}");
    }
    println!("{} rows at once, {} alone, {} new tokens ({:.0} s)", c.rows, checks.len(), c.new_tokens, started.elapsed().as_secs_f64());
    Ok(checks.iter().filter(|c| c.first_bad.is_some() || !c.tokens_equal).count())
}

#[cfg(feature = "cuda")]
fn cuda_check_batch(source: &ModelSource, c: &BatchCheck) -> Result<usize> {
    if cuda_fusion(true) { check_batch::<CudaFused>(source, c) } else { check_batch::<CudaPlain>(source, c) }
}

#[cfg(not(feature = "cuda"))]
fn cuda_check_batch(_: &ModelSource, _: &BatchCheck) -> Result<usize> {
    Err(without_cuda("pass --backend cpu"))
}

/// The one error of every CUDA path in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
fn without_cuda(otherwise: &str) -> anyhow::Error {
    anyhow::anyhow!("this trainer was built without CUDA: build it with `cargo build --release -p trainer --features cuda`, or {otherwise}")
}

/// Whether a CUDA command runs with burn's fusion: `HABITS_CUDA_FUSION` (1 or 0) when set,
/// else the command's default. PPO runs without it: on the GPU, a 90M actor trained with
/// fusion generated other rows' answers in a batch (docs/PERF.md), without it every row
/// its own; so does `bench-generate`, which measures PPO's rollouts. The checks keep it;
/// pretraining and `bench-ops` keep it only where it pays off (`fusion_pays_off`).
#[cfg(feature = "cuda")]
fn cuda_fusion(default_on: bool) -> bool {
    let on = std::env::var("HABITS_CUDA_FUSION").map_or(default_on, |v| v != "0");
    eprintln!("cuda: {} (HABITS_CUDA_FUSION=1 or 0 picks)", if on { "with burn's fusion" } else { "without burn's fusion" });
    on
}

/// Whether burn's fusion speeds up training at this compute dtype, as measured on an H200
/// (docs/PERF.md, 1B shape): with f32 matmuls it did (5,331 tokens/s with fusion and
/// autotuning, 2,648 without either); with bf16 matmuls it halved the speed (3,272 tokens/s
/// with fusion, 7,119 without: its fused elementwise kernels made clip + AdamW 313 ms
/// instead of 51 ms, and the model's forward and backward 313 ms instead of 236 ms).
#[cfg(feature = "cuda")]
fn fusion_pays_off(compute: trainer::model::precision::Compute) -> bool {
    compute.is_none()
}

#[cfg(feature = "cuda")]
fn cuda_bench_generate(config: &trainer::model::config::ModelConfig, b: &GenerateBench) -> Result<serde_json::Value> {
    if cuda_fusion(false) { bench_generate::<CudaFused>(config, b, &Default::default()) } else { bench_generate::<CudaPlain>(config, b, &Default::default()) }
}

#[cfg(not(feature = "cuda"))]
fn cuda_bench_generate(_: &trainer::model::config::ModelConfig, _: &GenerateBench) -> Result<serde_json::Value> {
    Err(without_cuda("pass --backend cpu"))
}

#[cfg(feature = "cuda")]
fn cuda_bench_ops(config: &trainer::model::config::ModelConfig, o: &OpsBench, emit: &mut dyn FnMut(&serde_json::Value)) -> Result<()> {
    use burn::backend::Autodiff;
    if cuda_fusion(fusion_pays_off(o.compute)) {
        bench_ops::<Autodiff<CudaFused>>(config, o, &Default::default(), emit)
    } else {
        bench_ops::<Autodiff<CudaPlain>>(config, o, &Default::default(), emit)
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_bench_ops(_: &trainer::model::config::ModelConfig, _: &OpsBench, _: &mut dyn FnMut(&serde_json::Value)) -> Result<()> {
    Err(without_cuda("pass --backend cpu"))
}

#[cfg(feature = "cuda")]
fn cuda_ppo(cfg: &PpoConfig, opts: &RunOptions) -> Result<PpoSummary> {
    use burn::backend::Autodiff;
    if cuda_fusion(false) { ppo::<Autodiff<CudaFused>>(cfg, &Default::default(), opts) } else { ppo::<Autodiff<CudaPlain>>(cfg, &Default::default(), opts) }
}

#[cfg(not(feature = "cuda"))]
fn cuda_ppo(_: &PpoConfig, _: &RunOptions) -> Result<PpoSummary> {
    Err(without_cuda("set ppo.backend = \"cpu\""))
}

#[cfg(feature = "cuda")]
fn cuda_pretrain(cfg: &PretrainConfig, opts: &RunOptions) -> Result<trainer::train::run::Summary> {
    use burn::backend::Autodiff;
    eprintln!("cuda: the first steps compile and tune kernels (minutes on a 1B model); the steady speed comes after");
    let compute = trainer::model::precision::parse_compute(&cfg.train.compute_dtype)?;
    if cuda_fusion(fusion_pays_off(compute)) {
        pretrain::<Autodiff<CudaFused>>(cfg, &Default::default(), opts)
    } else {
        pretrain::<Autodiff<CudaPlain>>(cfg, &Default::default(), opts)
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_pretrain(_: &PretrainConfig, _: &RunOptions) -> Result<trainer::train::run::Summary> {
    Err(without_cuda("set train.backend = \"cpu\""))
}

/// The CPU (NdArray) against CUDA with and without fusion: op by op at a rollout batch's
/// shapes (and AdamW's update and the projections' product, on CUDA without fusion its own
/// kernel and cuBLAS), the first layer stage by stage, then the whole model (logits and batched greedy
/// generation). Fails when the configured CUDA backend (`HABITS_CUDA_FUSION`) disagrees.
#[cfg(feature = "cuda")]
fn compare_backends(source: &ModelSource) -> Result<()> {
    use trainer::backend_check::{
        OpShapes, check_adamw, check_attention, check_cross_entropy, check_matmul, check_matmul_gradients, check_ops, check_rms_norm, check_rotary_heads,
        check_squared_norms, check_swiglu,
    };
    let started = std::time::Instant::now();
    // Flash attention in bf16 (heads of 64, whole 64-position blocks; grouped heads, one
    // sequence and two; the queries and values token-major, the keys and the output's
    // gradient head-major) against the CPU in f32, and the staircase on the same bf16
    // inputs: the two gaps are bf16's.
    let flash = trainer::model::flash_attention();
    for shape in [[1, 4, 2, 128, 64], [2, 6, 2, 192, 64]] {
        for (on, name) in [(true, "flash kernels"), (false, "staircase")] {
            trainer::model::set_flash_attention(on);
            for g in check_attention::<trainer::Cpu, CudaPlain>(shape, burn::tensor::DType::BF16, &Default::default(), &Default::default()) {
                println!("op {g} (CUDA without fusion: {name})");
            }
        }
    }
    trainer::model::set_flash_attention(flash);
    let shapes = OpShapes { batch: 256, heads: 8, kv_heads: 4, head_dim: 64, prompt: 96, capacity: 192, vocab: 128_256 };
    for g in check_ops::<trainer::Cpu, CudaFused>(shapes, &Default::default(), &Default::default()) {
        println!("op {g}");
    }
    // Odd sizes, so that the kernel's last block is partly outside the tensor.
    for g in check_adamw::<trainer::Cpu, CudaPlain>([1001, 777], &Default::default(), &Default::default()) {
        println!("op {g} (CUDA without fusion: one kernel)");
    }
    for g in check_matmul::<trainer::Cpu, CudaPlain>([333, 517, 129], &Default::default(), &Default::default()) {
        println!("op {g} (CUDA without fusion: cuBLAS unless HABITS_CUBLAS=0)");
    }
    for g in check_matmul_gradients::<trainer::Cpu, CudaPlain>([333, 517, 129], &Default::default(), &Default::default()) {
        println!("op {g} (CUDA without fusion: cuBLAS unless HABITS_CUBLAS=0)");
    }
    // Grouped heads (3 and 2 query heads per key/value head), one sequence and two; the
    // scores in chunks of 16 queries (the last of 13), in one chunk, and one chunk a query;
    // 64 positions for the kernels' vectors of 4 values (f32).
    let chunk = trainer::model::attention_chunk();
    for shape in [[1, 6, 2, 77, 16], [2, 4, 2, 77, 16], [2, 4, 2, 64, 16]] {
        for positions in [16, 77, 1] {
            trainer::model::set_attention_chunk(positions);
            for g in check_attention::<trainer::Cpu, CudaPlain>(shape, burn::tensor::DType::F32, &Default::default(), &Default::default()) {
                println!("op {g} (CUDA without fusion: cuBLAS on chunks of {positions} queries, two kernels)");
            }
        }
    }
    trainer::model::set_attention_chunk(chunk);
    for g in check_squared_norms::<trainer::Cpu, CudaPlain>(&[1, 1000, 1_048_583], &Default::default(), &Default::default()) {
        println!("op {g} (CUDA without fusion: cuBLAS unless HABITS_CUBLAS=0)");
    }
    // Rows not a whole number of cubes, a width not a multiple of a plane.
    for g in check_rms_norm::<trainer::Cpu, CudaPlain>([77, 2050], &Default::default(), &Default::default()) {
        println!("op {g} (CUDA without fusion: two kernels)");
    }
    // Pairs not a whole number of cubes.
    for g in check_rotary_heads::<trainer::Cpu, CudaPlain>([3, 77, 5, 64], &Default::default(), &Default::default()) {
        println!("op {g} (CUDA without fusion: one kernel each way)");
    }
    // One value a unit (77 x 1001 is odd) and vectors of four f32.
    for shape in [[77, 1001], [64, 1000]] {
        for g in check_swiglu::<trainer::Cpu, CudaPlain>(shape, &Default::default(), &Default::default()) {
            println!("op {g} (CUDA without fusion: one kernel each way)");
        }
    }
    // A vocabulary that is not a multiple of the 256 units a cube walks a row with.
    for g in check_cross_entropy::<trainer::Cpu, CudaPlain>([37, 50_021], &Default::default(), &Default::default()) {
        println!("op {g} (CUDA without fusion: two kernels)");
    }
    println!("({:.0} s)", started.elapsed().as_secs_f64());
    let cpu = source.load::<trainer::Cpu>(&Default::default())?;
    let name = source.to_string();
    // The GPU models get the CPU model's weights (a record written once; burn's records do
    // not depend on the backend).
    let record = std::env::temp_dir().join(format!("habits-compare-{}", std::process::id()));
    trainer::train::checkpoint::write_module(&record, &cpu)?;
    let fused = compare_model::<CudaFused>(&name, &record, &cpu, "CUDA with fusion", started);
    let plain = compare_model::<CudaPlain>(&name, &record, &cpu, "CUDA without fusion", started);
    std::fs::remove_file(record.with_extension("mpk")).ok();
    if cuda_fusion(true) { fused } else { plain }
}

#[cfg(feature = "cuda")]
fn compare_model<G: trainer::ModelBackend>(
    source: &str,
    record: &std::path::Path,
    cpu: &trainer::model::Llama<trainer::Cpu>,
    name: &str,
    started: std::time::Instant,
) -> Result<()> {
    let shape = trainer::model::Llama::<G>::random(&cpu.config, &Default::default());
    let gpu = trainer::train::checkpoint::read_module(record, shape, &Default::default())?;
    let vocab = cpu.config.vocab_size as i64;
    // Rows of a rollout batch's length, enough of them to show rows mixing up.
    let [rows, len] = [16, 112];
    let ids: Vec<i64> = (0..rows * len).map(|i| (i as i64 * 7919 + 3) % vocab).collect();
    for g in trainer::backend_check::trace_first_layer(cpu, &gpu, &ids, [rows, len]) {
        println!("{name}: {g}");
    }
    let report = |l: &str| println!("{source}, {name}: {l} ({:.0} s)", started.elapsed().as_secs_f64());
    let verdict = trainer::backend_check::compare_models(cpu, &gpu, report);
    match &verdict {
        Ok(()) => println!("{source}, {name}: AGREES with the CPU"),
        Err(e) => println!("{source}, {name}: DIFFERS: {e:#}"),
    }
    verdict
}

#[cfg(not(feature = "cuda"))]
fn compare_backends(_: &ModelSource) -> Result<()> {
    Err(without_cuda("run compare-backends with a build that has it (it compares the CPU with CUDA)"))
}
