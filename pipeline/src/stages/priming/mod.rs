//! The priming stage (`pipeline prime`): Countdown traces for the study's priming
//! conditions, written by the LLM with one prompt per condition
//! (`configs/prompts/priming/<condition>.md`), kept as given (the study's way) or checked
//! (format; the answer correct, or for `all_strategies_wrong` well formed and wrong, by the
//! study's reward), and written as one SFT set per condition under
//! `runs/<name>/priming/<condition>/`, in the build's shard layout that `trainer pretrain`
//! and `trainer ppo` (`[prime] set`) read. The same puzzles serve every condition. Requests
//! are journaled (`journal/priming.jsonl`): a rerun asks only what is missing; when checked,
//! a rejected reply is asked again with the reason. Every reply's check status is counted
//! in the manifest either way. The wrong-answer condition is sampled from a model, as the
//! study made it (`sampled`), or asked of the LLM like the others.

pub mod conditions;
pub mod config;
pub mod sampled;
pub mod sets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicU64;

use anyhow::{Result, bail};
use countdown::task::{Task, generate, prompt, read_tasks};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use self::conditions::{ALL_STRATEGIES, Keep, Kept, Source, check, completion, keep_reply, puzzle, reask};
use self::config::WrongAnswers;
use self::sampled::{Sampled, sample_wrong_answers};
use self::sets::{SetRows, write_condition};
use crate::config::LoadedConfig;
use crate::hashing;
use crate::journal::Record;
use crate::llm::batch::{Reask, RequestId};
use crate::llm::context::ContextNeed;
use crate::llm::protocol::Sampling;
use crate::llm::stage::{LlmSession, RequestKeys};
use crate::run_dir::{RunDir, publish_table, staging_for};
use crate::stages::build::examples::{Example, Lineage, tokenize};
use crate::stages::build::shards::Packing;
use crate::stages::build::{TokenizerInfo, load_tokenizer};
use crate::stages::stage::{Stage, StageContext};
use crate::stages::template::Template;

/// The stage's folder: `runs/<name>/priming/`.
pub const TABLE: &str = run_contract::tables::PRIMING;
/// The placeholder of the condition prompts.
pub const PUZZLE: &str = "{{puzzle}}";

/// `priming/_manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrimingManifest {
    pub stage: String,
    pub state: String,
    pub model: String,
    /// condition -> sha256 of its prompt.
    pub prompts: BTreeMap<String, String>,
    pub sampling: Sampling,
    pub puzzles: usize,
    /// The model sampled for `all_strategies_wrong` (`priming.wrong_answers = "sampled"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_model: Option<String>,
    pub requests_sent: u64,
    pub failures_by_class: BTreeMap<String, u64>,
    /// Which replies became rows (`as_given`: every answered one; `checked`: those with
    /// status `ok`).
    #[serde(default)]
    pub keep: Keep,
    /// condition -> the check's status (`ok`, `unparsed`, `bad_equation`, `wrong_result`,
    /// `correct_result`, `failed:<class>`, `not_asked`) -> puzzles.
    pub statuses: BTreeMap<String, BTreeMap<String, u64>>,
    /// condition -> split -> rows.
    pub rows: BTreeMap<String, BTreeMap<String, u64>>,
}

struct Job {
    key: String,
    puzzle_id: String,
    task: usize,
    condition: usize,
    prompt: String,
}

/// The priming stage (`pipeline prime`): Countdown traces per condition, written by the LLM.
pub struct Priming;

impl Stage for Priming {
    const VERB: &'static str = "prime";
    type Manifest = PrimingManifest;

    async fn run(ctx: &StageContext) -> Result<PrimingManifest> {
        run_priming(ctx).await
    }

    fn render(m: &PrimingManifest, ctx: &StageContext) -> String {
        render(m, &ctx.cfg.run_path().join(TABLE))
    }
}

/// What a priming run asks and writes: the wanted conditions, those asked of the LLM (the
/// wanted ones, and "all strategies" for the controls made from its traces), their
/// templates, the puzzles and their ids.
struct Plan<'a> {
    wanted: Vec<&'a str>,
    /// The wrong-answer condition is wanted and sampled from a model (not asked).
    sampled: bool,
    asked: Vec<(&'a str, bool)>,
    templates: Vec<Template>,
    tasks: Vec<Task>,
    ids: Vec<String>,
}

impl<'a> Plan<'a> {
    fn new(cfg: &'a LoadedConfig) -> Result<Self> {
        let p = &cfg.config.priming;
        let tasks = load_puzzles(cfg)?;
        let wanted: Vec<&str> = p.conditions.iter().map(String::as_str).collect();
        let sampled = p.wrong_answers == WrongAnswers::Sampled && wanted.contains(&conditions::ALL_STRATEGIES_WRONG);
        let mut asked: Vec<(&str, bool)> = wanted
            .iter()
            .filter_map(|&c| match conditions::source(c) {
                Some(Source::Llm { correct: false }) if sampled => None,
                Some(Source::Llm { correct }) => Some((c, correct)),
                _ => None,
            })
            .collect();
        let derived = wanted.iter().any(|&c| matches!(conditions::source(c), Some(Source::EmptyThoughts | Source::Placeholder)));
        if derived && !asked.iter().any(|(c, _)| *c == ALL_STRATEGIES) {
            asked.push((ALL_STRATEGIES, true));
        }
        let dir = cfg.resolve(&p.prompts_dir);
        let templates = asked.iter().map(|(c, _)| Template::load_with(&dir, c, "priming.prompts_dir", PUZZLE)).collect::<Result<_>>()?;
        let ids = tasks.iter().map(|t| hashing::doc_id(hashing::doc_hash(&puzzle(t)))).collect();
        Ok(Plan { wanted, sampled, asked, templates, tasks, ids })
    }

    /// The key of asked condition `c` about puzzle `t`.
    fn key(&self, keys: &RequestKeys, c: usize, t: usize) -> String {
        keys.key(&self.templates[c].hash, &self.ids[t])
    }

    /// The key of every request the stage makes.
    fn keys(&self, keys: &RequestKeys) -> Vec<String> {
        (0..self.templates.len()).flat_map(|c| (0..self.tasks.len()).map(move |t| self.key(keys, c, t))).collect()
    }

    /// The requests the journal lacks.
    fn jobs(&self, session: &LlmSession) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (c, template) in self.templates.iter().enumerate() {
            for (t, (task, id)) in self.tasks.iter().zip(&self.ids).enumerate() {
                let key = self.key(&session.keys, c, t);
                if !session.is_done(&key) {
                    jobs.push(Job { key, puzzle_id: id.clone(), task: t, condition: c, prompt: template.render(&puzzle(task)) });
                }
            }
        }
        jobs
    }

    /// Every asked condition's kept replies (by puzzle, `None` where none was kept) and the
    /// check statuses by condition, from the journal's records.
    fn traces(&self, records: &HashMap<String, Record>, keys: &RequestKeys, keep: Keep) -> (Statuses, Vec<Vec<Option<Kept>>>) {
        let mut statuses = Statuses::new();
        let mut traces = Vec::new();
        for (c, (name, correct)) in self.asked.iter().enumerate() {
            let row = self.tasks.iter().enumerate().map(|(t, task)| {
                let (status, trace) = verdict(records.get(&self.key(keys, c, t)), task, *correct, keep);
                *statuses.entry(name.to_string()).or_default().entry(status).or_default() += 1;
                trace
            });
            traces.push(row.collect());
        }
        (statuses, traces)
    }

    /// Each wanted condition's examples (from its own kept replies, or from the "all
    /// strategies" replies that parse for the controls, which take their statuses), with
    /// the indices of the placeholder control's examples and their thoughts (their lengths
    /// become placeholder tokens).
    fn examples(&self, traces: &[Vec<Option<Kept>>], statuses: &mut Statuses, lineage: &Lineage, model: &str) -> (Vec<Example>, Vec<(usize, String)>) {
        let all = self.asked.iter().position(|(c, _)| *c == ALL_STRATEGIES);
        let (mut examples, mut placeholders) = (Vec::new(), Vec::new());
        for (set, &name) in self.wanted.iter().enumerate() {
            if self.sampled && name == conditions::ALL_STRATEGIES_WRONG {
                continue;
            }
            let from = self.asked.iter().position(|(c, _)| *c == name).unwrap_or_else(|| all.expect("asked for the controls"));
            let kind = conditions::source(name).expect("validated");
            for (t, kept) in traces[from].iter().enumerate() {
                let Some(kept) = kept else { continue };
                let completion = match (kind, &kept.parts) {
                    (Source::Llm { .. }, _) => kept.completion.clone(),
                    (_, None) => continue,
                    (_, Some(trace)) => {
                        if kind == Source::Placeholder {
                            placeholders.push((examples.len(), trace.thoughts.clone()));
                        }
                        completion("", &trace.equation)
                    }
                };
                examples.push(Example {
                    doc_id: self.ids[t].clone(),
                    set,
                    prompt: prompt(&self.tasks[t]),
                    completion,
                    lineage: Lineage { row: t as u64, ..lineage.clone() },
                    model: model.to_string(),
                    rewrite_prompt_hash: self.templates[from].hash.clone(),
                    prompt_ids: Vec::new(),
                    completion_ids: Vec::new(),
                });
            }
            if !matches!(kind, Source::Llm { .. }) {
                statuses.insert(name.to_string(), statuses.get(ALL_STRATEGIES).cloned().unwrap_or_default());
            }
        }
        (examples, placeholders)
    }
}

/// The sampled wrong-answer condition's examples, its statuses recorded.
fn sampled_examples(wanted: &[&str], sampled: &Sampled, statuses: &mut Statuses) -> Vec<Example> {
    let set = wanted.iter().position(|&c| c == conditions::ALL_STRATEGIES_WRONG).expect("wanted when sampled");
    statuses.insert(conditions::ALL_STRATEGIES_WRONG.into(), sampled.statuses.clone());
    let source = Lineage { source: format!("sampled from {}", sampled.model), revision: String::new(), file: String::new(), row: 0 };
    sampled
        .traces
        .iter()
        .enumerate()
        .map(|(row, (task, id, reply))| Example {
            doc_id: id.clone(),
            set,
            prompt: prompt(task),
            completion: reply.clone(),
            lineage: Lineage { row: row as u64, ..source.clone() },
            model: sampled.model.clone(),
            rewrite_prompt_hash: String::new(),
            prompt_ids: Vec::new(),
            completion_ids: Vec::new(),
        })
        .collect()
}

/// Statuses by condition: condition -> status -> puzzles.
type Statuses = BTreeMap<String, BTreeMap<String, u64>>;

/// Runs the stage: asks what the journal lacks, then writes every condition's set.
async fn run_priming(ctx: &StageContext) -> Result<PrimingManifest> {
    let cfg = &ctx.cfg;
    let p = &cfg.config.priming;
    let plan = Plan::new(cfg)?;
    if plan.sampled {
        sampled::require_server(cfg)?;
    }
    let (tokenizer, tokenizer_info) = load_tokenizer(cfg)?;
    let placeholder = placeholder_id(&tokenizer, &p.placeholder)?;
    let sampling = Sampling { temperature: p.temperature, max_tokens: p.max_tokens, top_p: None, seed: None };
    let session = LlmSession::open(ctx, "priming", sampling, "").await?;
    let longest = plan.tasks.first().map(|t| plan.templates.iter().map(|x| x.render(&puzzle(t)).chars().count()).max().unwrap_or(0)).unwrap_or(0);
    if !plan.asked.is_empty() {
        session.check_context(ContextNeed::new(longest, cfg.config.classify.chars_per_token, 0, p.max_tokens)).await?;
    }
    let jobs = plan.jobs(&session);
    let total = (plan.asked.len() * plan.tasks.len()) as u64;
    let already = AtomicU64::new(total - jobs.len() as u64);
    let outcome = session
        .send(futures_util::stream::iter(jobs), total, &already, |job: Job| {
            let (session, template, correct, task) = (&session, &plan.templates[job.condition], plan.asked[job.condition].1, &plan.tasks[job.task]);
            async move {
                let id = RequestId { key: &job.key, doc_id: &job.puzzle_id, task: &template.name, prompt_hash: &template.hash, model: session.model() };
                let times = if p.keep == Keep::Checked { p.reasks } else { 0 };
                let again = Reask { times, text: reask(correct) };
                session.ask(id, job.prompt, None, again, |c| check(c, task, correct).map(|_| ())).await
            }
        })
        .await?;

    let sampled = if plan.sampled { Some(sample_wrong_answers(ctx).await?) } else { None };
    let records = session.records()?;
    let (mut statuses, traces) = plan.traces(&records, &session.keys, p.keep);
    let (mut state, mut too_many_failed) = session.table_state(&records, &plan.keys(&session.keys));
    if let Some((sampled_state, Some(problem))) = sampled.as_ref().map(|s| s.state.clone()) {
        (state, too_many_failed) = (sampled_state, too_many_failed.or(Some(problem)));
    }
    let lineage = match &p.tasks_file {
        Some(f) => Lineage { source: cfg.resolve(f).display().to_string(), revision: String::new(), file: String::new(), row: 0 },
        None => Lineage { source: "countdown-generator".into(), revision: format!("seed {}", p.seed), file: String::new(), row: 0 },
    };
    let (mut examples, placeholders) = plan.examples(&traces, &mut statuses, &lineage, session.model());
    if let Some(sampled) = &sampled {
        examples.extend(sampled_examples(&plan.wanted, sampled, &mut statuses));
    }
    tokenize(&tokenizer, &mut examples)?;
    fill_placeholders(&tokenizer, placeholder, &mut examples, placeholders)?;

    let out = RunDir::new(cfg.run_path()).stage(TABLE);
    let staging = staging_for(&out)?;
    let sets = Sets { cfg, wanted: &plan.wanted, model: session.model(), tokenizer: &tokenizer_info };
    let rows = sets.write(&staging, &examples, &statuses)?;
    let manifest = PrimingManifest {
        stage: TABLE.into(),
        state,
        model: session.model().to_string(),
        prompts: plan.asked.iter().zip(&plan.templates).map(|((c, _), t)| (c.to_string(), t.hash.clone())).collect(),
        sampling: session.sampling.clone(),
        puzzles: plan.tasks.len(),
        sampled_model: sampled.as_ref().map(|s| s.model.clone()),
        keep: p.keep,
        requests_sent: outcome.sent + sampled.as_ref().map_or(0, |s| s.sent),
        failures_by_class: merged(outcome.failures_by_class, sampled.as_ref().map(|s| &s.failures_by_class)),
        statuses,
        rows,
    };
    publish_table(&staging, &out, &manifest)?;
    if let Some(problem) = too_many_failed {
        bail!(problem);
    }
    Ok(manifest)
}

/// Failures by class of both sessions.
fn merged(mut a: BTreeMap<String, u64>, b: Option<&BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    for (class, n) in b.into_iter().flatten() {
        *a.entry(class.clone()).or_default() += n;
    }
    a
}

/// The placeholder control: as many placeholder tokens as the thoughts had (`placeholders`:
/// example index and thoughts), then the answer.
fn fill_placeholders(tokenizer: &tokenizers::Tokenizer, placeholder: u32, examples: &mut [Example], placeholders: Vec<(usize, String)>) -> Result<()> {
    for (i, thoughts) in placeholders {
        let n = tokenizer.encode_fast(format!("\n{thoughts}\n"), false).map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))?.len();
        let e = &mut examples[i];
        let mut ids = vec![placeholder; n];
        ids.extend_from_slice(&e.completion_ids);
        e.completion = tokenizer.decode(&ids, false).map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))?;
        e.completion_ids = ids;
    }
    Ok(())
}

/// Where and how the conditions' sets are written (the layout and split of `[build]`).
struct Sets<'a> {
    cfg: &'a LoadedConfig,
    wanted: &'a [&'a str],
    model: &'a str,
    tokenizer: &'a TokenizerInfo,
}

impl Sets<'_> {
    /// Writes each wanted condition's set under `staging`; its rows by split.
    fn write(&self, staging: &Path, examples: &[Example], statuses: &Statuses) -> Result<BTreeMap<String, BTreeMap<String, u64>>> {
        let b = &self.cfg.config.build;
        let packing = Packing {
            bos: self.tokenizer.bos,
            eos: self.tokenizer.eos,
            max_completion_tokens: b.max_completion_tokens as usize,
            dtype: crate::stages::build::megatron::TokenType::for_vocabulary(self.tokenizer.vocab_size),
            template_hash: "",
            shard_rows: b.shard_rows,
            set_names: self.wanted,
        };
        let mut rows = BTreeMap::new();
        for (set, name) in self.wanted.iter().enumerate() {
            let mine: Vec<&Example> = examples.iter().filter(|e| e.set == set).collect();
            let (test, train): (Vec<&Example>, Vec<&Example>) = mine.into_iter().partition(|e| is_test(&e.doc_id, b.seed, b.test_fraction));
            let statuses = statuses.get(*name).cloned().unwrap_or_default();
            let info = SetRows { name, run: &self.cfg.config.run.name, model: self.model, license: &b.license, statuses };
            let m = write_condition(&staging.join(name), &info, &[("train", train.as_slice()), ("test", test.as_slice())], &packing, self.tokenizer)?;
            rows.insert(name.to_string(), m.splits.rows);
        }
        Ok(rows)
    }
}

/// The puzzles: the first `tasks` rows of `tasks_file`, or as many generated from `seed`
/// (no puzzle twice).
fn load_puzzles(cfg: &LoadedConfig) -> Result<Vec<Task>> {
    let p = &cfg.config.priming;
    let mut tasks = match &p.tasks_file {
        Some(f) => read_tasks(&cfg.resolve(f), 0..p.tasks)?,
        None => {
            let mut rng = fastrand::Rng::with_seed(p.seed);
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(p.tasks);
            for _ in 0..p.tasks * 50 {
                if out.len() == p.tasks {
                    break;
                }
                let (task, _) = generate(&mut rng, &p.generate);
                if seen.insert(task.clone()) {
                    out.push(task);
                }
            }
            out
        }
    };
    let mut seen = HashSet::new();
    tasks.retain(|t| seen.insert(t.clone()));
    if tasks.len() < p.tasks {
        match &p.tasks_file {
            Some(f) => tracing::warn!("priming: {} has {} distinct puzzles in its first {} rows", f.display(), tasks.len(), p.tasks),
            None => bail!(
                "priming.generate allows only {} distinct puzzles, fewer than priming.tasks = {}: widen the number or target ranges",
                tasks.len(),
                p.tasks
            ),
        }
    }
    if tasks.is_empty() {
        bail!("priming: no puzzles; set priming.tasks, or point priming.tasks_file at a TinyZero task file with rows");
    }
    Ok(tasks)
}

/// The status of a puzzle's request and its row when `keep` keeps it.
fn verdict(record: Option<&Record>, task: &Task, correct: bool, keep: Keep) -> (String, Option<Kept>) {
    match record {
        None => ("not_asked".into(), None),
        Some(r) if r.status != "ok" => (format!("failed:{}", r.failure.as_deref().unwrap_or("unknown")), None),
        Some(r) => {
            let (status, kept) = keep_reply(r.content.as_deref().unwrap_or(""), task, correct, keep);
            (status.into(), kept)
        }
    }
}

/// Whether a puzzle is in the test split (the same puzzles for every condition).
fn is_test(puzzle_id: &str, seed: u64, fraction: f64) -> bool {
    (xxh3_64_with_seed(puzzle_id.as_bytes(), seed ^ 0x7465_7374) as f64) < fraction * u64::MAX as f64
}

/// The placeholder's token id: it must be exactly one token.
fn placeholder_id(tokenizer: &tokenizers::Tokenizer, placeholder: &str) -> Result<u32> {
    let ids = tokenizer.encode_fast(placeholder, false).map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))?;
    match ids.get_ids() {
        [one] => Ok(*one),
        other => {
            bail!("priming.placeholder = {placeholder:?} is {} tokens of the build tokenizer; choose a string that is one token (e.g. \"...\")", other.len())
        }
    }
}

/// Readable lines about a finished stage.
pub fn render(m: &PrimingManifest, dir: &Path) -> String {
    let mut s = String::new();
    for (name, by) in &m.statuses {
        let statuses: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let rows = m.rows.get(name).map(|r| r.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        let written = if m.rows.contains_key(name) { format!(" -> {rows} in {}", dir.join(name).display()) } else { " (asked for the controls)".into() };
        s.push_str(&format!("priming {name}: {}{written}\n", statuses.join(", ")));
    }
    let kept = match m.keep {
        Keep::AsGiven => "every answered reply kept as given (priming.keep = \"as_given\"); the statuses are the check's",
        Keep::Checked => "replies with status ok kept (priming.keep = \"checked\")",
    };
    s.push_str(&format!("priming: {} puzzles, {} requests sent now; {kept}\n", m.puzzles, m.requests_sent));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_split_takes_about_its_fraction_and_is_stable() {
        let ids: Vec<String> = (0..10_000).map(|i| hashing::doc_id(hashing::doc_hash(&i.to_string()))).collect();
        let test = ids.iter().filter(|id| is_test(id, 0, 0.05)).count();
        assert!((400..600).contains(&test), "{test}");
        assert_eq!(test, ids.iter().filter(|id| is_test(id, 0, 0.05)).count());
        assert_eq!(ids.iter().filter(|id| is_test(id, 0, 0.0)).count(), 0);
    }
}
