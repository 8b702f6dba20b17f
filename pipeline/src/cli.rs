//! The `pipeline` command line: every stage on its own, and `run` for all of them.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::LoadedConfig;
use crate::hub::config::HubConfig;
use crate::shard::Shard;
use crate::stages::classify::{ClassifyOptions, run_classify};
use crate::stages::fetch::{FetchRequest, fetch};
use crate::stages::plan::{human_bytes, plan, render};
use crate::stages::sample::{SampleOptions, SampleOutcome, run_sample};

#[derive(Debug, Parser)]
#[command(name = "pipeline", version, about = "habits: build behavior-enriched pretraining corpora", long_about = None)]
pub struct Cli {
    /// More log lines (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every stage of a config in order (resumes finished work).
    Run(RunArgs),
    /// Dry run: files, bytes, rows, sample size and LLM cost, before any download.
    Plan {
        #[command(flatten)]
        stage: StageArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a dataset repo from the hub (honours HF_ENDPOINT, HF_TOKEN, HF_HOME).
    Fetch(FetchArgs),
    /// The sample stage alone: write runs/<name>/docs/.
    Sample(StageArgs),
    /// The classify stage alone: ask the LLM about every document, write runs/<name>/labels/.
    Classify(ClassifyArgs),
    /// The select stage alone: apply the [select] rules to the labels, write runs/<name>/select/.
    Select(StageArgs),
    /// The rewrite stage alone: rewrite the selected documents into question/thoughts/answer.
    Rewrite(LlmStageArgs),
    /// The build stage alone: fill both sets to the token budget, write runs/<name>/sets/.
    Build(StageArgs),
    /// Countdown priming sets, one per condition of [priming]: traces written by the LLM,
    /// checked with the study's reward, written to runs/<name>/priming/<condition>/.
    Prime(LlmStageArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Stop after this stage (e.g. `select`, to look at the counts before paying for rewrites).
    #[arg(long, value_enum, default_value = "build")]
    pub until: Stage,
}

/// The stages, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Stage {
    Sample,
    Classify,
    Select,
    Rewrite,
    Build,
}

#[derive(Debug, clap::Args)]
pub struct LlmStageArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// OpenAI-compatible base URL ending in /v1 (repeatable; replaces llm.endpoints).
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// The served model's name (replaces llm.model).
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub llm: LlmStageArgs,
    /// A parquet file or folder with `doc_id` and `text` (default: the run's docs table).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The run folder that gets the labels and the journal (default: run.dir/run.name),
    /// e.g. a PPO run whose rollouts/ are the input.
    #[arg(long)]
    pub run: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct StageArgs {
    /// The run config (TOML), e.g. configs/demo.toml.
    #[arg(short, long)]
    pub config: PathBuf,
    /// Work on shard i of n (0-based), e.g. 0/4; the last shard to finish merges.
    #[arg(long, default_value = "0/1")]
    pub shard: Shard,
    /// Hub cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The dataset repo, `owner/name`.
    pub repo: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Only files matching this glob (repeatable; `*` also crosses `/`).
    #[arg(long)]
    pub include: Vec<String>,
    /// Write plain files into this folder instead of the hub cache.
    #[arg(long)]
    pub local_dir: Option<PathBuf>,
    /// Hub cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Files downloaded at the same time.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Attempts per request for retryable failures (429, 5xx, timeouts, broken bodies).
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, default_value_t = 1000)]
    pub backoff_ms: u64,
    /// Only datasets are supported; the flag exists for symmetry with the hub's CLI.
    #[arg(long, default_value = "dataset", value_parser = ["dataset"])]
    pub repo_type: String,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_all(&args.stage, args.until).await,
        Command::Sample(args) => sample(&args).await.map(|_| ()),
        Command::Select(a) => select(&LoadedConfig::load(&a.config)?),
        Command::Build(a) => build(&LoadedConfig::load(&a.config)?).map(|_| ()),
        Command::Rewrite(a) => rewrite(&LoadedConfig::load(&a.stage.config)?, &a.endpoints, a.model.as_deref()).await,
        Command::Prime(a) => {
            let cfg = LoadedConfig::load(&a.stage.config)?;
            let m = crate::stages::priming::run_priming(&cfg, &a.endpoints, a.model.as_deref()).await?;
            eprint!("{}", crate::stages::priming::render(&m, &cfg.run_path().join(crate::stages::priming::TABLE)));
            Ok(())
        }
        Command::Classify(a) => {
            let mut cfg = LoadedConfig::load(&a.llm.stage.config)?;
            if let Some(run) = &a.run {
                cfg.set_run_path(run)?;
            }
            let opts = ClassifyOptions { endpoints: a.llm.endpoints, model: a.llm.model, input: a.input };
            classify(&cfg, &opts).await
        }
        Command::Plan { stage, json } => {
            let cfg = LoadedConfig::load(&stage.config)?;
            let p = plan(&cfg, stage.cache_dir.clone()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print!("{}", render(&p));
            }
            Ok(())
        }
        Command::Fetch(a) => {
            let req = FetchRequest {
                repo: a.repo,
                revision: a.revision,
                include: a.include,
                local_dir: a.local_dir,
                cache_dir: a.cache_dir,
                hub: HubConfig { concurrency: a.concurrency.max(1), max_attempts: a.max_attempts.max(1), backoff_ms: a.backoff_ms, ..HubConfig::default() },
            };
            let done = fetch(&req).await?;
            eprintln!("fetched {} files ({}) at commit {}", done.files.len(), human_bytes(done.bytes), done.commit);
            println!("{}", done.folder.display());
            Ok(())
        }
    }
}

/// Runs the sample stage; whether `docs/` is complete (false: other shards still scan).
async fn sample(args: &StageArgs) -> Result<bool> {
    let cfg = LoadedConfig::load(&args.config)?;
    let opts = SampleOptions { shard: args.shard, cache_dir: args.cache_dir.clone() };
    let docs = cfg.run_path().join(crate::stages::sample::TABLE);
    match run_sample(&cfg, &opts).await? {
        SampleOutcome::UpToDate(m) => eprintln!("docs: up to date, {} documents in {}", m.rows, docs.display()),
        SampleOutcome::Written(m) => {
            eprintln!("docs: {} documents ({} parts) in {}", m.rows, m.parts.len(), docs.display());
            for s in &m.sources {
                eprintln!(
                    "  {:<16} sampled {:>8} of {:>10} rows scanned (quota {}, {} repeated texts dropped)",
                    s.name, s.counts.sampled, s.counts.rows_scanned, s.quota, s.counts.duplicates_removed
                );
            }
        }
        SampleOutcome::ShardDone { scanned, missing } => {
            eprintln!("shard {} done: {scanned} files scanned, {missing} still to scan by other shards; the last shard to finish writes docs/", args.shard);
            return Ok(false);
        }
    }
    Ok(true)
}

async fn classify(cfg: &LoadedConfig, opts: &ClassifyOptions) -> Result<()> {
    let m = run_classify(cfg, opts).await?;
    let dir = cfg.run_path().join(crate::stages::classify::TABLE);
    eprint!("{}", crate::stages::classify::labels::render(&m.stats));
    eprintln!("labels: {} documents ({} requests sent now) in {}", m.rows, m.requests_sent, dir.display());
    Ok(())
}

fn select(cfg: &LoadedConfig) -> Result<()> {
    let m = crate::stages::select::run_select(cfg)?;
    eprint!("{}", crate::stages::select::render(&m));
    eprintln!("select: {}", cfg.run_path().join(crate::stages::select::TABLE).display());
    Ok(())
}

async fn rewrite(cfg: &LoadedConfig, endpoints: &[String], model: Option<&str>) -> Result<()> {
    let m = crate::stages::rewrite::run_rewrite(cfg, endpoints, model).await?;
    for (set, by) in &m.statuses {
        let mut by: Vec<_> = by.iter().collect();
        by.sort();
        eprintln!("rewrite {set}: {}", by.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    }
    eprintln!("rewrites: {} documents ({} requests sent now) in {}", m.rows, m.requests_sent, cfg.run_path().join(crate::stages::rewrite::TABLE).display());
    Ok(())
}

fn build(cfg: &LoadedConfig) -> Result<crate::stages::build::BuildManifest> {
    let m = crate::stages::build::run_build(cfg)?;
    eprint!("{}", crate::stages::build::render(&m, &cfg.run_path().join(crate::stages::build::TABLE)));
    Ok(m)
}

async fn run_all(args: &StageArgs, until: Stage) -> Result<()> {
    if !sample(args).await? || until == Stage::Sample {
        return Ok(());
    }
    let cfg = LoadedConfig::load(&args.config)?;
    if cfg.config.llm.endpoints.is_empty() && cfg.config.llm.serve.is_none() {
        eprintln!("classify: skipped (no llm.endpoints nor [llm.serve] in {}; or run `pipeline classify --endpoint URL --model NAME`)", args.config.display());
        return Ok(());
    }
    classify(&cfg, &ClassifyOptions::default()).await?;
    if until == Stage::Classify {
        return Ok(());
    }
    select(&cfg)?;
    if until == Stage::Select {
        return Ok(());
    }
    rewrite(&cfg, &[], None).await?;
    if until == Stage::Rewrite {
        return Ok(());
    }
    let built = build(&cfg)?;
    eprint!("{}", summary(&cfg, &built));
    Ok(())
}

/// The last lines of `run`: what was made and where.
fn summary(cfg: &LoadedConfig, built: &crate::stages::build::BuildManifest) -> String {
    let run = cfg.run_path();
    let mut s = format!("\nrun `{}` complete: {}\n", cfg.config.run.name, run.display());
    for (table, what) in
        [("docs", "sampled documents"), ("labels", "behavior labels"), ("select", "set membership"), ("rewrites", "question/thoughts/answer rewrites")]
    {
        s.push_str(&format!("  {:<10} {}  ({what})\n", table, run.join(table).display()));
    }
    s.push_str(&format!("  {:<10} {}  (request journals)\n", "journal", run.join("journal").display()));
    for (set, rows) in &built.rows {
        let tokens: u64 = built.completion_tokens.get(set).map(|t| t.values().sum()).unwrap_or(0);
        let dir = run.join(crate::stages::build::TABLE).join(set);
        s.push_str(&format!(
            "  {:<10} {}  ({} rows: {}; {tokens} completion tokens; data/ parquet, jsonl/, megatron/, manifest.json, README.md)\n",
            set,
            dir.display(),
            rows.values().sum::<u64>(),
            rows.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        ));
    }
    s
}
