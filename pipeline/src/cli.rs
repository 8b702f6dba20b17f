//! The `pipeline` command line: every stage on its own, and `run` for all of them.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::LoadedConfig;
use crate::hub::config::HubConfig;
use crate::llm::FailureClass;
use crate::shard::Shard;
use crate::stages::build::Build;
use crate::stages::classify::Classify;
use crate::stages::fetch::{FetchRequest, fetch};
use crate::stages::plan::{human_bytes, plan, render};
use crate::stages::priming::Priming;
use crate::stages::rewrite::Rewrite;
use crate::stages::sample::Sample;
use crate::stages::select::Select;
use crate::stages::stage::{Stage, StageContext, StageName, run_and_report};

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
    pub until: StageName,
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
    /// Ask again the requests the journal records as failed with these classes (e.g.
    /// `context_overflow` after raising the server's context; none given: every class).
    /// Failures that can heal or that a configuration fix cures are asked again anyway.
    #[arg(long, num_args = 0.., value_name = "CLASS", value_parser = failure_class)]
    pub retry_failed: Option<Vec<FailureClass>>,
}

/// A failure class by its journal name.
fn failure_class(name: &str) -> Result<FailureClass, String> {
    FailureClass::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = FailureClass::ALL.iter().map(|c| c.name()).collect();
        format!("`{name}` is not a failure class; the journal's classes are: {}", names.join(", "))
    })
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
    /// When another process works on the same stage of this run (and shard), wait for it
    /// to finish instead of stopping at once.
    #[arg(long)]
    pub wait: bool,
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
        Command::Sample(a) => stage::<Sample>(a.context()?).await,
        Command::Select(a) => stage::<Select>(a.context()?).await,
        Command::Build(a) => stage::<Build>(a.context()?).await,
        Command::Rewrite(a) => stage::<Rewrite>(a.context()?).await,
        Command::Prime(a) => stage::<Priming>(a.context()?).await,
        Command::Classify(a) => {
            let mut ctx = a.llm.context()?;
            if let Some(run) = &a.run {
                ctx.cfg.set_run_path(run)?;
            }
            ctx.input = a.input;
            stage::<Classify>(ctx).await
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

impl StageArgs {
    fn context(&self) -> Result<StageContext> {
        let mut ctx = StageContext::new(LoadedConfig::load(&self.config)?);
        ctx.shard = self.shard;
        ctx.cache_dir = self.cache_dir.clone();
        ctx.wait = self.wait;
        Ok(ctx)
    }
}

impl LlmStageArgs {
    fn context(&self) -> Result<StageContext> {
        let mut ctx = self.stage.context()?;
        ctx.endpoints = self.endpoints.clone();
        ctx.model = self.model.clone();
        ctx.retry_failed = self.retry_failed.clone();
        Ok(ctx)
    }
}

/// One stage's verb: the stage, then its report.
async fn stage<S: Stage>(ctx: StageContext) -> Result<()> {
    run_and_report::<S>(&ctx).await.map(|_| ())
}

/// `pipeline run`: every stage in order up to `until`; stops early when a stage is not
/// complete (other shards still scan) or no LLM is configured for the LLM stages.
async fn run_all(args: &StageArgs, until: StageName) -> Result<()> {
    let ctx = args.context()?;
    for name in StageName::ORDER {
        if name == StageName::Classify && ctx.cfg.config.llm.endpoints.is_empty() && ctx.cfg.config.llm.serve.is_none() {
            eprintln!(
                "classify: skipped (no llm.endpoints nor [llm.serve] in {}; or run `pipeline classify --endpoint URL --model NAME`)",
                args.config.display()
            );
            return Ok(());
        }
        if !name.run(&ctx).await? {
            return Ok(());
        }
        if name == until {
            break;
        }
    }
    if until == StageName::Build {
        eprint!("{}", summary(&ctx.cfg, &crate::stages::build::read_manifest(&ctx.cfg)?));
    }
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
    s.push_str(&format!("  {:<10} {}  (request journals)\n", "journal", run.join(run_contract::JOURNAL_DIR).display()));
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
