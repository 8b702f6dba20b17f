//! The build stage: the two training sets. Every parsed rewrite becomes an example
//! (`examples`), both sets are filled to the same completion-token budget, optionally
//! with matched length distributions (`budget`), shuffled and split by seeded keys, and
//! written as parquet, JSONL and Megatron shards (`shards`, `megatron`) with a manifest and
//! a dataset card (`card`) under `runs/<name>/sets/{rich,control}/`.

pub mod budget;
pub mod card;
pub mod config;
pub mod examples;
pub mod megatron;
pub mod shards;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use self::budget::{Candidate, ChoiceReport, Goal, LengthSummary, choose, ks_statistic, summarize};
use self::examples::{Example, Gathered, SETS, gather, tokenize};
use self::megatron::TokenType;
use self::shards::{Packing, SplitTotals, write_splits};
use crate::config::LoadedConfig;
use crate::run_dir::{RunDir, publish_table, sha256_file, staging_for, write_atomic, write_json};
use crate::stages::build::config::BuildConfig;
use crate::stages::stage::{Stage, StageContext};
use crate::stages::template::Template;

/// The stage's folder: `runs/<name>/sets/`.
pub const TABLE: &str = run_contract::tables::SETS;
/// The placeholder of the conversation template.
pub const QUESTION: &str = "{{question}}";
pub use run_contract::set::{FORMAT_VERSION, TokenizerInfo};

/// `sets/<set>/manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetManifest {
    pub format_version: u32,
    pub set: String,
    pub run: String,
    /// Rows, tokens and files per split.
    #[serde(flatten)]
    pub splits: SplitTotals,
    /// The configured budget and the one both sets were filled to.
    pub budget_tokens: u64,
    pub target_tokens: u64,
    pub within_tolerance: bool,
    pub selection_rule: String,
    pub require_rule: String,
    pub rewrite_model: String,
    pub rewrite_prompt_hash: String,
    pub template_sha256: String,
    pub tokenizer: TokenizerInfo,
    /// Completion lengths of the chosen examples, and of every candidate of this set.
    pub lengths: LengthSummary,
    pub candidate_lengths: LengthSummary,
    pub config: BuildConfig,
}

/// `sets/_manifest.json`: the build as a whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildManifest {
    pub stage: String,
    pub state: String,
    pub gathered: Gathered,
    pub choice: ChoiceReport,
    /// Kolmogorov-Smirnov distance between the two sets' completion lengths: among all
    /// candidates, and among the chosen examples.
    pub length_ks_candidates: f64,
    pub length_ks_chosen: f64,
    /// set -> split -> rows / completion tokens.
    pub rows: BTreeMap<String, BTreeMap<String, u64>>,
    pub completion_tokens: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Runs the stage over the run's `rewrites` and `docs` tables.
/// The build stage: the two token-matched training sets.
pub struct Build;

impl Stage for Build {
    const VERB: &'static str = "build";
    type Manifest = BuildManifest;

    async fn run(ctx: &StageContext) -> Result<BuildManifest> {
        run_build(&ctx.cfg)
    }

    fn render(m: &BuildManifest, ctx: &StageContext) -> String {
        render(m, &ctx.cfg.run_path().join(TABLE))
    }
}

/// The build's manifest as the last build wrote it (`sets/_manifest.json`).
pub fn read_manifest(cfg: &LoadedConfig) -> Result<BuildManifest> {
    crate::run_dir::read_json(&cfg.run_path().join(TABLE).join(run_contract::TABLE_MANIFEST))?.context("no sets/_manifest.json: run `pipeline build` first")
}

/// One clear error when either set has no example to choose from.
fn check_both_sets(examples: &[Example], gathered: &Gathered) -> Result<()> {
    for (set, name) in SETS.iter().enumerate() {
        if !examples.iter().any(|e| e.set == set) {
            bail!(
                "the {name} set has no examples ({} rewrites parsed, {} failed): see `pipeline select` (its counts) and rewrites/_manifest.json; with a small sample, widen [select] or raise sample.size",
                gathered.ok[set],
                gathered.failed[set]
            );
        }
    }
    Ok(())
}

/// Says when the sets could not reach the budget.
/// The tokens an example counts for against the budget (`build.count_tokens`).
fn budget_count(b: &BuildConfig, e: &Example) -> u64 {
    b.count_tokens.count(e.completion_ids.len(), b.max_completion_tokens as usize) as u64
}

fn warn_unmet_budget(r: &ChoiceReport, budget: u64) {
    if !r.budget_met {
        tracing::warn!(
            "build: the budget of {budget} tokens per set was not met; both sets hold {} / {} tokens (target {}): the sample has too few examples for this budget",
            r.tokens[0],
            r.tokens[1],
            r.target_tokens
        );
    }
}

fn run_build(cfg: &LoadedConfig) -> Result<BuildManifest> {
    let b = &cfg.config.build;
    let run = RunDir::new(cfg.run_path());
    let template_dir = cfg.resolve(&b.prompts_dir);
    let template = Template::load_with(&template_dir, "prompt", "build.prompts_dir", QUESTION)?;
    let (tokenizer, tokenizer_info) = load_tokenizer(cfg)?;
    let (bos, eos, dtype) = (tokenizer_info.bos, tokenizer_info.eos, TokenType::for_vocabulary(tokenizer_info.vocab_size));

    let (mut examples, gathered) = gather(&run.root, &template)?;
    check_both_sets(&examples, &gathered)?;
    let started = std::time::Instant::now();
    tokenize(&tokenizer, &mut examples)?;
    tracing::info!("build: tokenized {} examples in {:.1}s", examples.len(), started.elapsed().as_secs_f64());
    let packing = Packing {
        bos,
        eos,
        max_completion_tokens: b.max_completion_tokens as usize,
        dtype,
        template_hash: &template.hash,
        shard_rows: b.shard_rows,
        set_names: &SETS,
    };
    let cands: Vec<Candidate> =
        examples.iter().map(|e| Candidate { set: e.set, tokens: budget_count(b, e), key: xxh3_64_with_seed(e.doc_id.as_bytes(), b.seed) }).collect();
    let choice = choose(&cands, &Goal { budget: b.budget_tokens, tolerance: b.tolerance, match_lengths: b.match_lengths, bins: b.length_bins });
    let r = &choice.report;
    warn_unmet_budget(r, b.budget_tokens);

    let out = run.stage(TABLE);
    let staging = staging_for(&out)?;
    let lengths_of = |idx: &mut dyn Iterator<Item = usize>| -> Vec<u64> { idx.map(|i| cands[i].tokens).collect() };
    let all: [Vec<u64>; 2] = [0, 1].map(|s| lengths_of(&mut (0..cands.len()).filter(|&i| cands[i].set == s)));
    let chosen: [Vec<u64>; 2] = [0, 1].map(|s| lengths_of(&mut choice.chosen[s].iter().copied()));
    let mut manifest = BuildManifest {
        stage: TABLE.into(),
        state: "complete".into(),
        gathered,
        choice: r.clone(),
        length_ks_candidates: ks_statistic(&all[0], &all[1]),
        length_ks_chosen: ks_statistic(&chosen[0], &chosen[1]),
        rows: BTreeMap::new(),
        completion_tokens: BTreeMap::new(),
    };
    for (set, name) in SETS.iter().enumerate() {
        let splits = split(&choice.chosen[set], &examples, b);
        let set_dir = staging.join(name);
        let m = SetManifest {
            format_version: FORMAT_VERSION,
            set: name.to_string(),
            run: cfg.config.run.name.clone(),
            splits: write_splits(&set_dir, &[("train", splits.0.as_slice()), ("test", splits.1.as_slice())], &packing)?,
            budget_tokens: b.budget_tokens,
            target_tokens: r.target_tokens,
            within_tolerance: r.within_tolerance[set],
            selection_rule: if set == 0 { cfg.config.select.rich.clone() } else { cfg.config.select.control.clone() },
            require_rule: cfg.config.select.require.clone(),
            rewrite_model: examples.iter().find(|e| e.set == set).map(|e| e.model.clone()).unwrap_or_default(),
            rewrite_prompt_hash: examples.iter().find(|e| e.set == set).map(|e| e.rewrite_prompt_hash.clone()).unwrap_or_default(),
            template_sha256: template.hash.clone(),
            tokenizer: tokenizer_info.clone(),
            lengths: summarize(&chosen[set]),
            candidate_lengths: summarize(&all[set]),
            config: b.clone(),
        };
        write_atomic(&set_dir.join(run_contract::set::CARD), card::render(&m, &card::ALL_FILES).as_bytes())?;
        write_json(&set_dir.join(run_contract::set::MANIFEST), &m)?;
        manifest.rows.insert(name.to_string(), m.splits.rows.clone());
        manifest.completion_tokens.insert(name.to_string(), m.splits.completion_tokens.clone());
    }
    publish_table(&staging, &out, &manifest)?;
    Ok(manifest)
}

/// The build tokenizer (`build.tokenizer`) and what the sets record about it, with its
/// special tokens (`build.bos_token`, `build.eos_token`).
pub fn load_tokenizer(cfg: &LoadedConfig) -> Result<(tokenizers::Tokenizer, TokenizerInfo)> {
    let b = &cfg.config.build;
    let tokenizer_path = cfg.resolve(&b.tokenizer);
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
        anyhow!("cannot load the build tokenizer {}: {e}; run `make llm-assets` or point build.tokenizer at a Llama-3 tokenizer.json", tokenizer_path.display())
    })?;
    let special = |token: &str, key: &str| -> Result<Option<u32>> {
        if token.is_empty() {
            return Ok(None);
        }
        tokenizer
            .token_to_id(token)
            .map(Some)
            .with_context(|| format!("{key} = \"{token}\" is not a token of {}; name one of its special tokens or \"\" for none", tokenizer_path.display()))
    };
    let (bos, eos) = (special(&b.bos_token, "build.bos_token")?, special(&b.eos_token, "build.eos_token")?);
    let vocab_size = tokenizer.get_vocab_size(true);
    let dtype = TokenType::for_vocabulary(vocab_size);
    let info =
        TokenizerInfo { path: tokenizer_path.display().to_string(), sha256: sha256_file(&tokenizer_path)?, vocab_size, bos, eos, dtype: dtype.name().into() };
    Ok((tokenizer, info))
}

/// A set's chosen examples as (train, test): the test split is the `test_fraction` of them
/// with the smallest split keys; each split is in shuffle-key order.
fn split<'a>(chosen: &[usize], examples: &'a [Example], b: &BuildConfig) -> (Vec<&'a Example>, Vec<&'a Example>) {
    let split_key = |e: &Example| xxh3_64_with_seed(e.doc_id.as_bytes(), b.seed ^ 0x7465_7374);
    let mut by_split: Vec<usize> = chosen.to_vec();
    by_split.sort_by_key(|&i| (split_key(&examples[i]), i));
    let n_test = (chosen.len() as f64 * b.test_fraction).round() as usize;
    let test: std::collections::HashSet<usize> = by_split[..n_test].iter().copied().collect();
    // `chosen` is in shuffle-key order already.
    let (test_rows, train_rows): (Vec<usize>, Vec<usize>) = chosen.iter().partition(|i| test.contains(i));
    (train_rows.iter().map(|&i| &examples[i]).collect(), test_rows.iter().map(|&i| &examples[i]).collect())
}

/// A readable summary of a finished build.
pub fn render(m: &BuildManifest, dir: &Path) -> String {
    let mut s = String::new();
    for set in SETS {
        let rows = m.rows.get(set).cloned().unwrap_or_default();
        let tokens = m.completion_tokens.get(set).cloned().unwrap_or_default();
        let by: Vec<String> = rows.iter().map(|(split, n)| format!("{split} {n} rows / {} tokens", tokens.get(split).copied().unwrap_or(0))).collect();
        s.push_str(&format!("build {set}: {} in {}\n", by.join(", "), dir.join(set).display()));
    }
    s.push_str(&format!(
        "build: target {} completion tokens per set ({}); length KS distance {:.3} among candidates, {:.3} in the sets\n",
        m.choice.target_tokens,
        if m.choice.budget_met { "budget met" } else { "BUDGET NOT MET: too few examples" },
        m.length_ks_candidates,
        m.length_ks_chosen
    ));
    s
}
