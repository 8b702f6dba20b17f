//! The run configuration: one TOML file (`configs/*.toml`), every key documented in the
//! README. Unknown keys and bad values are rejected with the file, the key and the fix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub run: RunConfig,
    #[serde(default)]
    pub hub: HubConfig,
    #[serde(default, rename = "sources")]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub sample: SampleConfig,
    #[serde(default)]
    pub plan: PlanConfig,
    #[serde(default)]
    pub llm: LlmConfig,
    #[serde(default)]
    pub classify: ClassifyConfig,
    #[serde(default)]
    pub select: SelectConfig,
    #[serde(default)]
    pub rewrite: RewriteConfig,
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub priming: PrimingConfig,
}

/// `[priming]`: Countdown priming sets, one per condition, written by the LLM (the sets'
/// tokenizer, special tokens, clip, shard size and test split come from `[build]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrimingConfig {
    /// Puzzles per condition (the study: about 1000); the same puzzles for every condition.
    #[serde(default = "default_priming_tasks")]
    pub tasks: usize,
    /// Seeds the puzzle generator.
    #[serde(default)]
    pub seed: u64,
    /// The conditions to write (default: all eight; `empty_cot` and `placeholder` are made
    /// from the `all_strategies` traces, which are then asked for too).
    #[serde(default = "default_priming_conditions")]
    pub conditions: Vec<String>,
    /// Folder of one prompt per LLM condition (`<condition>.md`, with `{{puzzle}}`).
    #[serde(default = "default_priming_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Longest reply, in tokens.
    #[serde(default = "default_priming_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_priming_temperature")]
    pub temperature: f64,
    /// Times a rejected reply is asked again (with the reason).
    #[serde(default = "default_priming_reasks")]
    pub reasks: u32,
    /// Puzzles from a TinyZero task file (`target`, `nums`) instead of the generator: its
    /// first `tasks` rows.
    #[serde(default)]
    pub tasks_file: Option<PathBuf>,
    /// The generator's puzzles (default: the study's, 3 or 4 numbers up to 99, targets 10..=25).
    #[serde(default)]
    pub generate: countdown::task::TaskSpec,
    /// The `placeholder` condition's token (must be one token of the build tokenizer).
    #[serde(default = "default_placeholder")]
    pub placeholder: String,
}

fn default_priming_tasks() -> usize {
    1000
}
fn default_priming_conditions() -> Vec<String> {
    crate::stages::priming::conditions::names().into_iter().map(String::from).collect()
}
fn default_priming_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/priming")
}
fn default_priming_max_tokens() -> u32 {
    2048
}
fn default_priming_temperature() -> f64 {
    0.7
}
fn default_priming_reasks() -> u32 {
    2
}
fn default_placeholder() -> String {
    "...".into()
}

impl Default for PrimingConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[build]`: the two token-matched training sets made from the rewrites.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The Llama-3 `tokenizer.json` that counts and packs the tokens.
    #[serde(default = "default_build_tokenizer")]
    pub tokenizer: PathBuf,
    /// Completion tokens per set (the study: 8.3M).
    #[serde(default = "default_budget_tokens")]
    pub budget_tokens: u64,
    /// How far below the budget a set may end, as a fraction (0.001 = 0.1%).
    #[serde(default = "default_budget_tolerance")]
    pub tolerance: f64,
    /// Completions are counted (and packed) up to this many tokens.
    #[serde(default = "default_max_completion_tokens")]
    pub max_completion_tokens: u32,
    /// Pick the two sets so that their completion lengths have the same distribution.
    #[serde(default = "default_true")]
    pub match_lengths: bool,
    /// Length bins (quantiles of both sets together) that matching pairs examples within.
    #[serde(default = "default_length_bins")]
    pub length_bins: usize,
    /// Share of each set held out as its test split.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seeds the shuffle and the test split.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Rows per shard file (the same rows in the parquet, JSONL and Megatron shards).
    #[serde(default = "default_shard_rows")]
    pub shard_rows: usize,
    /// Folder of `prompt.md`, the conversation template around `{{question}}`.
    #[serde(default = "default_build_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Token put before each packed sequence (`""`: none).
    #[serde(default = "default_bos_token")]
    pub bos_token: String,
    /// Token put after each packed sequence (`""`: none).
    #[serde(default = "default_eos_token")]
    pub eos_token: String,
    /// The license named in the dataset card (the study's sources are ODC-By).
    #[serde(default = "default_license")]
    pub license: String,
}

fn default_build_tokenizer() -> PathBuf {
    PathBuf::from("${HABITS_CACHE}/tokenizers/llama3/tokenizer.json")
}
fn default_budget_tokens() -> u64 {
    8_300_000
}
fn default_budget_tolerance() -> f64 {
    0.001
}
fn default_max_completion_tokens() -> u32 {
    4096
}
fn default_length_bins() -> usize {
    32
}
fn default_test_fraction() -> f64 {
    0.05
}
fn default_shard_rows() -> usize {
    10_000
}
fn default_build_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/build")
}
fn default_bos_token() -> String {
    "<|begin_of_text|>".into()
}
fn default_eos_token() -> String {
    "<|end_of_text|>".into()
}
fn default_license() -> String {
    "odc-by".into()
}

impl Default for BuildConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[rewrite]`: the question / thoughts / answer rewrite of the selected documents.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Folder of `rich.md` and `control.md`.
    #[serde(default = "default_rewrite_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Longest answer, in tokens (the study: 5120 of a 8192 context).
    #[serde(default = "default_rewrite_max_tokens")]
    pub max_tokens: u32,
    #[serde(default)]
    pub temperature: f64,
    /// Documents are cut to this many tokens (leaving room for the answer in the context).
    #[serde(default = "default_rewrite_doc_tokens")]
    pub max_doc_tokens: usize,
    /// The served model's `tokenizer.json` for that cut; default: `classify.tokenizer`.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Times an unparseable answer is asked again.
    #[serde(default = "default_one_u32")]
    pub reasks: u32,
    /// Thoughts + answer longer than this many times the document are refused as `too_long`.
    #[serde(default = "default_length_ratio")]
    pub max_length_ratio: f64,
}

fn default_rewrite_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/rewrite")
}
fn default_rewrite_max_tokens() -> u32 {
    5120
}
fn default_rewrite_doc_tokens() -> usize {
    2560
}
fn default_length_ratio() -> f64 {
    10.0
}

impl Default for RewriteConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[select]`: the rules that make the two sets (expressions over the labels columns).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// Both sets need this.
    #[serde(default = "default_require")]
    pub require: String,
    /// The habit-rich set.
    #[serde(default = "default_rich")]
    pub rich: String,
    /// The control set.
    #[serde(default = "default_control")]
    pub control: String,
}

fn default_require() -> String {
    "has_problem && has_solution".into()
}
fn default_rich() -> String {
    "backtracking >= 1".into()
}
fn default_control() -> String {
    "backtracking == 0 && verification == 0 && subgoal_setting == 0 && backward_chaining == 0".into()
}

impl Default for SelectConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[llm]`: the served model and how hard to push it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// OpenAI-compatible base URLs ending in `/v1`; requests are spread over all of them.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The model name the servers expect (vLLM: the served model name).
    #[serde(default)]
    pub model: String,
    /// The environment variable holding the API key (never written in the config itself).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Requests in flight per endpoint at the start; adapts between min and max.
    #[serde(default = "default_llm_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_one")]
    pub min_concurrency: usize,
    #[serde(default = "default_llm_max_concurrency")]
    pub max_concurrency: usize,
    /// Seconds one request may take.
    #[serde(default = "default_llm_timeout_s")]
    pub timeout_s: u64,
    /// Attempts per request for retryable failures.
    #[serde(default = "default_llm_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_llm_backoff_max_s")]
    pub backoff_max_s: u64,
    /// Constrain answers to the expected format: `none`, `llama_cpp` (a GBNF `grammar`)
    /// or `vllm` (`structured_outputs.regex`). Small models need it; the study used none.
    #[serde(default = "default_structured_output")]
    pub structured_output: String,
    /// Start a local `llama-server` for the run instead of using `endpoints`.
    #[serde(default)]
    pub serve: Option<ServeConfig>,
}

/// `[llm.serve]`: a `llama-server` started and stopped by the pipeline (the offline demo).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The `llama-server` binary (`make llm-assets` builds it).
    #[serde(default = "default_llama_binary")]
    pub binary: PathBuf,
    /// The GGUF model file.
    #[serde(default = "default_llama_model")]
    pub model_file: PathBuf,
    /// Context size over all slots (`-c`).
    #[serde(default = "default_serve_context")]
    pub context: u32,
    /// Requests served at once (`-np`); each gets `context / parallel` tokens.
    #[serde(default = "default_serve_parallel")]
    pub parallel: u32,
    /// CPU threads (`-t`).
    #[serde(default = "default_one_u32")]
    pub threads: u32,
    /// Seconds to wait for the model to load.
    #[serde(default = "default_serve_startup_s")]
    pub startup_timeout_s: u64,
}

fn default_llama_binary() -> PathBuf {
    PathBuf::from("${HABITS_CACHE}/bin/llama-server")
}
fn default_llama_model() -> PathBuf {
    PathBuf::from("${HABITS_CACHE}/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}
fn default_serve_context() -> u32 {
    8192
}
fn default_serve_parallel() -> u32 {
    2
}
fn default_serve_startup_s() -> u64 {
    120
}

fn default_api_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_llm_concurrency() -> usize {
    32
}
fn default_one() -> usize {
    1
}
fn default_llm_max_concurrency() -> usize {
    256
}
fn default_llm_timeout_s() -> u64 {
    600
}
fn default_llm_attempts() -> u32 {
    6
}
fn default_llm_backoff_max_s() -> u64 {
    60
}
fn default_structured_output() -> String {
    "none".into()
}

impl Default for LlmConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[classify]`: the behavior classification stage.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    /// Folder of the prompt templates (`<task>.md`).
    #[serde(default = "default_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Tasks to run: any of backtracking, verification, subgoal_setting, backward_chaining,
    /// problem_solution, and `joint` (all four counts in one request, as JSON).
    #[serde(default = "default_tasks")]
    pub tasks: Vec<String>,
    /// Longest answer, in tokens (the study: 1024).
    #[serde(default = "default_classify_max_tokens")]
    pub max_tokens: u32,
    /// Sampling temperature (the study: 0, greedy).
    #[serde(default)]
    pub temperature: f64,
    /// Documents are cut to this many tokens, then back to the last newline (the study: 3072).
    #[serde(default = "default_max_doc_tokens_usize")]
    pub max_doc_tokens: usize,
    /// The served model's `tokenizer.json`; without it documents are cut at
    /// `max_doc_tokens * chars_per_token` characters.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    #[serde(default = "default_chars_per_token")]
    pub chars_per_token: usize,
    /// Counts above this are recorded as out of range, not believed.
    #[serde(default = "default_max_count")]
    pub max_count: u32,
    /// Times an unparseable answer is asked again before it is recorded as such.
    #[serde(default = "default_one_u32")]
    pub reasks: u32,
}

fn default_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/classify")
}
fn default_tasks() -> Vec<String> {
    ["backtracking", "verification", "subgoal_setting", "backward_chaining", "problem_solution"].map(String::from).to_vec()
}
fn default_classify_max_tokens() -> u32 {
    1024
}
fn default_max_doc_tokens_usize() -> usize {
    3072
}
fn default_chars_per_token() -> usize {
    4
}
fn default_max_count() -> u32 {
    100
}
fn default_one_u32() -> u32 {
    1
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[run]`: where the run's tables live.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The run's name: its directory is `<dir>/<name>`.
    pub name: String,
    /// The parent folder of run directories, relative to the config file's folder's parent
    /// when relative (so `configs/x.toml` with `dir = "runs"` means `./runs`).
    #[serde(default = "default_runs_dir")]
    pub dir: PathBuf,
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// `[hub]`: how files are fetched from the Hugging Face hub (or a mirror).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's address; `HF_ENDPOINT` overrides it, as in the hub's own tools.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The hub cache; default `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Files downloaded at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts per request before giving up on retryable failures (429, 5xx, timeouts).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff delay in milliseconds; doubles per attempt, with full jitter.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Ceiling of one backoff delay (and of an honoured `Retry-After`), in seconds.
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: u64,
    /// Seconds without a byte before a request counts as timed out.
    #[serde(default = "default_read_timeout_s")]
    pub read_timeout_s: u64,
    /// Keep downloaded shards in the cache after sampling (false frees disk as it goes).
    #[serde(default = "default_true")]
    pub keep_downloads: bool,
}

fn default_concurrency() -> usize {
    4
}
fn default_attempts() -> u32 {
    8
}
fn default_backoff_ms() -> u64 {
    1000
}
fn default_backoff_max_s() -> u64 {
    120
}
fn default_read_timeout_s() -> u64 {
    60
}
fn default_true() -> bool {
    true
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            endpoint: None,
            cache_dir: None,
            concurrency: default_concurrency(),
            max_attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            backoff_max_s: default_backoff_max_s(),
            read_timeout_s: default_read_timeout_s(),
            keep_downloads: true,
        }
    }
}

/// One `[[sources]]` entry as written; [`crate::sources::Source`] is the checked form.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Short name, unique in the file; it is the `source` column of the docs table.
    pub name: String,
    /// `hub` (a dataset repo on the hub) or `local` (a folder of parquet or JSONL files).
    pub kind: String,
    /// hub: `owner/name` of the dataset repo.
    #[serde(default)]
    pub repo: Option<String>,
    /// hub: branch, tag or commit; pinned to its commit sha when the run starts.
    #[serde(default)]
    pub revision: Option<String>,
    /// hub and local: glob patterns of files to read (`*` also crosses `/`, as in the hub's tools).
    #[serde(default)]
    pub include: Vec<String>,
    /// local: the folder (relative paths are taken from the config file's folder's parent).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Share of the sample; quotas are proportional to the weights of all sources.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Column holding the document text.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column holding the document URL (optional in the data: missing values are null).
    #[serde(default = "default_url_column")]
    pub url_column: String,
}

fn default_weight() -> f64 {
    1.0
}
fn default_text_column() -> String {
    "text".into()
}
fn default_url_column() -> String {
    "url".into()
}

/// `[sample]`: the deterministic sample of documents.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Documents in the sample, over all sources.
    #[serde(default = "default_sample_size")]
    pub size: u64,
    /// Seed of the sample keys: another seed, another sample.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Rows decoded at a time from an input file.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Rows per output part file of the docs table.
    #[serde(default = "default_part_rows")]
    pub part_rows: usize,
    /// Input files scanned at the same time (0 = one per CPU core).
    #[serde(default)]
    pub threads: usize,
    /// Documents shorter than this many characters are skipped (0 keeps all, empty texts never count).
    #[serde(default)]
    pub min_chars: u64,
}

fn default_sample_size() -> u64 {
    200_000
}
fn default_seed() -> u64 {
    20250304
}
fn default_batch_rows() -> usize {
    4096
}
fn default_part_rows() -> usize {
    50_000
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            size: default_sample_size(),
            seed: default_seed(),
            batch_rows: default_batch_rows(),
            part_rows: default_part_rows(),
            threads: 0,
            min_chars: 0,
        }
    }
}

/// `[plan]`: assumptions of the dry run's cost estimate for the LLM stages.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Bytes of UTF-8 text per model token, for estimates before a tokenizer has run.
    #[serde(default = "default_bytes_per_token")]
    pub bytes_per_token: f64,
    /// Prompt tokens of one classification template without the document.
    #[serde(default = "default_template_tokens")]
    pub template_tokens: u64,
    /// Share of sampled documents expected to reach the rewrite stage.
    #[serde(default = "default_rewrite_share")]
    pub rewrite_share: f64,
}

fn default_bytes_per_token() -> f64 {
    3.6
}
fn default_template_tokens() -> u64 {
    700
}
fn default_rewrite_share() -> f64 {
    0.35
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig { bytes_per_token: default_bytes_per_token(), template_tokens: default_template_tokens(), rewrite_share: default_rewrite_share() }
    }
}

/// A loaded config with the folder its relative paths are taken from.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    pub base_dir: PathBuf,
}

impl LoadedConfig {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}: check the path (configs/ holds the shipped profiles)", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config {} is invalid: {}\nfix: correct the key or value above; every key is listed in the README under \"Configuration\"",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        config.validate().with_context(|| format!("config {} is invalid", path.display()))?;
        let base_dir = base_dir_of(path);
        Ok(LoadedConfig { config, path: path.to_path_buf(), base_dir })
    }

    /// Resolves a path from the config: `${HABITS_CACHE}` and a leading `~/` are expanded,
    /// then a relative path is taken from the base folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        let p = expand_path(p);
        if p.is_absolute() { p } else { self.base_dir.join(p) }
    }

    /// The run directory `<run.dir>/<run.name>`.
    pub fn run_path(&self) -> PathBuf {
        self.resolve(&self.config.run.dir).join(&self.config.run.name)
    }

    /// Points the run at another folder (`--run DIR`): its parent becomes `run.dir`, its
    /// name `run.name`.
    pub fn set_run_path(&mut self, run: &Path) -> Result<()> {
        let abs = std::path::absolute(run).with_context(|| format!("--run {}", run.display()))?;
        let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
            bail!("--run {}: give a folder below another, e.g. runs/ppo-gpu", run.display());
        };
        self.config.run.dir = dir.to_path_buf();
        self.config.run.name = name.to_string_lossy().into_owned();
        Ok(())
    }
}

/// The cache of fetched assets: `$HABITS_CACHE`, else `~/.cache/habits`.
pub fn habits_cache() -> PathBuf {
    match std::env::var("HABITS_CACHE") {
        Ok(v) if !v.trim().is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into())).join(".cache").join("habits"),
    }
}

/// Expands `${HABITS_CACHE}` and a leading `~/` in a config path.
pub fn expand_path(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    let s = s.replace("${HABITS_CACHE}", &habits_cache().to_string_lossy());
    match s.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into())).join(rest),
        None => PathBuf::from(s),
    }
}

/// Relative paths in `configs/foo.toml` are relative to the project root (the folder
/// above `configs/`); elsewhere, to the config file's own folder.
fn base_dir_of(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "configs") { dir.parent().map(Path::to_path_buf).unwrap_or(dir) } else { dir }
}

impl Config {
    /// Checks what serde cannot: value ranges, required keys per source kind, uniqueness.
    pub fn validate(&self) -> Result<()> {
        let name = &self.run.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.') {
            bail!("run.name `{name}` must be non-empty and use only letters, digits, `-`, `_`, `.` (it names a folder)");
        }
        if self.hub.concurrency == 0 {
            bail!("hub.concurrency must be at least 1");
        }
        if self.hub.max_attempts == 0 {
            bail!("hub.max_attempts must be at least 1");
        }
        if self.sample.size == 0 {
            bail!("sample.size must be at least 1");
        }
        if self.sample.batch_rows == 0 || self.sample.part_rows == 0 {
            bail!("sample.batch_rows and sample.part_rows must be at least 1");
        }
        if !self.plan.bytes_per_token.is_finite() || self.plan.bytes_per_token <= 0.0 || !(0.0..=1.0).contains(&self.plan.rewrite_share) {
            bail!("plan.bytes_per_token must be > 0 and plan.rewrite_share within 0..=1");
        }
        if self.llm.min_concurrency == 0 || self.llm.min_concurrency > self.llm.max_concurrency || self.llm.max_attempts == 0 {
            bail!("llm: need 1 <= min_concurrency <= max_concurrency and max_attempts >= 1");
        }
        for e in &self.llm.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bail!("llm.endpoints: `{e}` is not an http(s) URL; give the base URL ending in /v1, e.g. http://127.0.0.1:8000/v1");
            }
        }
        if !["none", "llama_cpp", "vllm"].contains(&self.llm.structured_output.as_str()) {
            bail!("llm.structured_output `{}`: use \"none\", \"llama_cpp\" or \"vllm\"", self.llm.structured_output);
        }
        let mut known = default_tasks();
        known.push("joint".into());
        for t in &self.classify.tasks {
            if !known.contains(t) {
                bail!("classify.tasks: unknown task `{t}`; known: {}", known.join(", "));
            }
        }
        if self.classify.max_doc_tokens == 0 {
            bail!("classify.max_doc_tokens must be at least 1");
        }
        let b = &self.build;
        if b.budget_tokens == 0 || !(0.0..0.5).contains(&b.tolerance) || b.tolerance.is_nan() {
            bail!("build.budget_tokens must be at least 1 and build.tolerance within 0..0.5 (0.001 = 0.1%)");
        }
        if b.max_completion_tokens == 0 || b.length_bins == 0 || b.shard_rows == 0 {
            bail!("build.max_completion_tokens, build.length_bins and build.shard_rows must be at least 1");
        }
        if !(0.0..1.0).contains(&b.test_fraction) {
            bail!("build.test_fraction must be within 0..1 (0.05 = 5%), got {}", b.test_fraction);
        }
        let p = &self.priming;
        if p.tasks == 0 || p.max_tokens == 0 {
            bail!("priming.tasks and priming.max_tokens must be at least 1");
        }
        let mut seen = BTreeSet::new();
        for c in &p.conditions {
            if crate::stages::priming::conditions::source(c).is_none() {
                bail!("priming.conditions: unknown condition `{c}`; known: {}", crate::stages::priming::conditions::names().join(", "));
            }
            if !seen.insert(c) {
                bail!("priming.conditions: `{c}` is listed twice");
            }
        }
        let g = &p.generate;
        if g.min_numbers < 2 || g.min_numbers > g.max_numbers || g.max_numbers > 6 || g.min_number > g.max_number || g.min_target > g.max_target {
            bail!("priming.generate: need 2 <= min_numbers <= max_numbers <= 6, min_number <= max_number and min_target <= max_target");
        }
        let mut names = BTreeSet::new();
        for s in &self.sources {
            s.validate()?;
            if !names.insert(&s.name) {
                bail!("source name `{}` appears twice: names must be unique", s.name);
            }
        }
        Ok(())
    }
}

impl SourceConfig {
    fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            bail!("source name `{n}` must use only letters, digits, `-`, `_`, `.`");
        }
        if !self.weight.is_finite() || self.weight <= 0.0 {
            bail!("source `{n}`: weight must be a positive number, got {}", self.weight);
        }
        match self.kind.as_str() {
            "hub" => {
                let repo = self.repo.as_deref().unwrap_or("");
                if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                    bail!("source `{n}`: kind = \"hub\" needs repo = \"owner/name\", got `{repo}`");
                }
                if self.path.is_some() {
                    bail!("source `{n}`: `path` is for kind = \"local\"; a hub source uses repo/revision/include");
                }
                if self.include.is_empty() {
                    bail!("source `{n}`: a hub source needs include = [\"glob\", ...], e.g. [\"data/train-*.parquet\"]");
                }
            }
            "local" => {
                if self.path.is_none() {
                    bail!("source `{n}`: kind = \"local\" needs path = \"folder of parquet or jsonl files\"");
                }
                if self.repo.is_some() || self.revision.is_some() {
                    bail!("source `{n}`: repo/revision are for kind = \"hub\"");
                }
            }
            other => bail!("source `{n}`: unknown kind `{other}`; use \"hub\" or \"local\""),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        let c: Config = toml::from_str(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        c.validate()?;
        Ok(c)
    }

    const OK: &str = r#"
        [run]
        name = "t"
        [[sources]]
        name = "owm"
        kind = "hub"
        repo = "open-web-math/open-web-math"
        include = ["data/*.parquet"]
    "#;

    #[test]
    fn defaults_follow_the_study() {
        let c = parse(OK).unwrap();
        assert_eq!(c.sample.size, 200_000);
        assert_eq!(c.classify.max_doc_tokens, 3072);
        assert_eq!(c.classify.tasks.len(), 5);
        assert_eq!(c.llm.max_concurrency, 256);
        assert_eq!(c.sources[0].text_column, "text");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse(&OK.replace("[run]", "[run]\nnmae = 1")).unwrap_err().to_string();
        assert!(err.contains("nmae"), "{err}");
    }

    #[test]
    fn bad_sources_are_explained() {
        let err = parse(&OK.replace("kind = \"hub\"", "kind = \"ftp\"")).unwrap_err().to_string();
        assert!(err.contains("unknown kind `ftp`"), "{err}");
        let err = parse(&OK.replace("open-web-math/open-web-math", "owm")).unwrap_err().to_string();
        assert!(err.contains("owner/name"), "{err}");
    }
}
