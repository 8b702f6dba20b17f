//! The one shape every stage has: it is given a `StageContext` (the loaded config and the
//! command line's overrides), runs or resumes, and returns its manifest, which it renders
//! for a person. `pipeline run` is a loop over `StageName::ORDER`; each stage's own verb
//! runs the same code.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Result;

use crate::config::LoadedConfig;
use crate::llm::FailureClass;
use crate::shard::Shard;
use crate::stage_lock::StageLock;

/// What a stage is given.
#[derive(Clone, Debug)]
pub struct StageContext {
    pub cfg: LoadedConfig,
    /// OpenAI-compatible base URLs that replace `llm.endpoints` (the LLM stages).
    pub endpoints: Vec<String>,
    /// The served model's name, replacing `llm.model`.
    pub model: Option<String>,
    /// This process's share of the work (`--shard i/n`; the sample stage).
    pub shard: Shard,
    /// The hub cache folder, replacing `$HF_HUB_CACHE` (the sample stage).
    pub cache_dir: Option<PathBuf>,
    /// A parquet file or folder with `doc_id` and `text` instead of the run's `docs` (classify).
    pub input: Option<PathBuf>,
    /// Failure classes whose recorded requests are asked again on purpose (`--retry-failed`;
    /// empty: every class); `None`: only what is asked again anyway (the LLM stages).
    pub retry_failed: Option<Vec<FailureClass>>,
    /// Wait for another process working on the same stage of the run to finish, instead
    /// of stopping at once (`--wait`).
    pub wait: bool,
}

impl StageContext {
    /// The config alone: no overrides, the whole of the work.
    pub fn new(cfg: LoadedConfig) -> Self {
        StageContext { cfg, endpoints: Vec::new(), model: None, shard: Shard::ALL, cache_dir: None, input: None, retry_failed: None, wait: false }
    }
}

/// A stage of the pipeline.
pub trait Stage {
    /// The stage's verb (`pipeline <verb>`), which also names its lock.
    const VERB: &'static str;

    /// What the stage returns when it is done (its manifest, or what it did instead).
    type Manifest;

    /// Runs the stage, resuming what an earlier run finished.
    fn run(ctx: &StageContext) -> impl Future<Output = Result<Self::Manifest>>;

    /// What a person reads when the stage is done: counts and where the table is.
    fn render(m: &Self::Manifest, ctx: &StageContext) -> String;

    /// Whether the stages after it can run now (false: e.g. other shards still scan).
    fn complete(_m: &Self::Manifest) -> bool {
        true
    }
}

/// The stages `pipeline run` runs, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum StageName {
    Sample,
    Classify,
    Select,
    Rewrite,
    Build,
}

impl StageName {
    pub const ORDER: [StageName; 5] = [StageName::Sample, StageName::Classify, StageName::Select, StageName::Rewrite, StageName::Build];

    /// Runs the stage and prints its report on stderr; whether the stages after it can run.
    pub async fn run(self, ctx: &StageContext) -> Result<bool> {
        use crate::stages::{build, classify, rewrite, sample, select};
        match self {
            StageName::Sample => run_and_report::<sample::Sample>(ctx).await,
            StageName::Classify => run_and_report::<classify::Classify>(ctx).await,
            StageName::Select => run_and_report::<select::Select>(ctx).await,
            StageName::Rewrite => run_and_report::<rewrite::Rewrite>(ctx).await,
            StageName::Build => run_and_report::<build::Build>(ctx).await,
        }
    }
}

/// Runs stage `S` (holding its lock: one process per stage of a run and shard) and prints
/// its report; whether the stages after it can run.
pub async fn run_and_report<S: Stage>(ctx: &StageContext) -> Result<bool> {
    let (root, shard, wait) = (ctx.cfg.run_path(), ctx.shard, ctx.wait);
    let _lock = tokio::task::spawn_blocking(move || StageLock::acquire(&root, S::VERB, shard, wait)).await??;
    let m = S::run(ctx).await?;
    eprint!("{}", S::render(&m, ctx));
    Ok(S::complete(&m))
}
