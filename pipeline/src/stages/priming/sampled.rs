//! The wrong-answer condition as the study made it: a served model (`[llm.priming_sample]`,
//! a base or primed model behind `/v1/completions`) continues the Countdown prompt of
//! puzzles drawn from `[priming.sampled]` (targets 10..100, 3 or 4 numbers in 1..99 by
//! default), once each; the replies the study's reward does not score 1.0 are the
//! condition's traces, as given, the first `priming.tasks` of them in draw order. Requests
//! are journaled (`journal/priming_sample.jsonl`): a rerun asks only what is missing.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;

use anyhow::{Result, bail};
use countdown::reward::{Verdict, judge};
use countdown::task::{Task, generate, prompt};

use crate::config::LoadedConfig;
use crate::hashing;
use crate::llm::batch::RequestId;
use crate::llm::context::ContextNeed;
use crate::llm::protocol::Sampling;
use crate::llm::stage::LlmSession;
use crate::stages::stage::StageContext;

/// The journal's and the server's name (`[llm.priming_sample]`).
pub const LABEL: &str = "priming_sample";
/// The `prompt_hash` of every sampled request: the prompt is the task's whole text.
const PROMPT: &str = "countdown_prompt";

/// The condition's traces and how the draws fared.
pub struct Sampled {
    /// (puzzle, its id, the reply as given), in draw order.
    pub traces: Vec<(Task, String, String)>,
    /// `kept` (not correct, among the first wanted), `correct`, `not_needed` (not correct,
    /// past the wanted number), `failed:<class>`, `not_asked`.
    pub statuses: BTreeMap<String, u64>,
    pub model: String,
    pub sent: u64,
    pub failures_by_class: BTreeMap<String, u64>,
    /// The journal's verdict on the requests, as `LlmSession::table_state` gives it.
    pub state: (String, Option<String>),
}

/// Samples the condition (what the journal lacks) and reads its traces back.
pub async fn sample_wrong_answers(ctx: &StageContext) -> Result<Sampled> {
    let cfg = &ctx.cfg;
    let (p, s) = (&cfg.config.priming, &cfg.config.priming.sampled);
    require_server(cfg)?;
    // The sampled model is always [llm.priming_sample]'s: --endpoint and --model name the LLM of the other conditions.
    let own = StageContext { endpoints: Vec::new(), model: None, ..ctx.clone() };
    let sampling = Sampling { temperature: s.temperature, max_tokens: s.max_tokens, top_p: None, seed: None };
    let session = LlmSession::open(&own, LABEL, sampling, "text").await?;
    let puzzles = draw(p.seed, p.tasks * s.draws_per_trace, &s.generate);
    let longest = puzzles.iter().map(|t| prompt(t).chars().count()).max().unwrap_or(0);
    session.check_context(ContextNeed::new(longest, cfg.config.classify.chars_per_token, 0, s.max_tokens)).await?;
    let ids: Vec<String> = puzzles.iter().map(|t| hashing::doc_id(hashing::doc_hash(&prompt(t)))).collect();
    let keys: Vec<String> = ids.iter().map(|id| session.keys.key(PROMPT, id)).collect();
    let jobs: Vec<usize> = (0..puzzles.len()).filter(|&i| !session.is_done(&keys[i])).collect();
    let already = AtomicU64::new((puzzles.len() - jobs.len()) as u64);
    let outcome = session
        .send(futures_util::stream::iter(jobs), puzzles.len() as u64, &already, |i| {
            let (session, key, id, text) = (&session, &keys[i], &ids[i], prompt(&puzzles[i]));
            async move {
                let request = RequestId { key, doc_id: id, task: LABEL, prompt_hash: PROMPT, model: session.model() };
                session.continue_text(request, &text).await
            }
        })
        .await?;
    let records = session.records()?;
    let mut sampled = Sampled {
        traces: Vec::new(),
        statuses: BTreeMap::new(),
        model: session.model().to_string(),
        sent: outcome.sent,
        failures_by_class: outcome.failures_by_class,
        state: session.table_state(&records, &keys),
    };
    for ((task, id), key) in puzzles.into_iter().zip(ids).zip(&keys) {
        let status = match records.get(key) {
            None => "not_asked".to_string(),
            Some(r) if r.status != "ok" => format!("failed:{}", r.failure.as_deref().unwrap_or("unknown")),
            Some(r) => {
                let reply = r.content.clone().unwrap_or_default();
                match judge(&format!("{}{reply}", prompt(&task)), &task) {
                    Verdict::Correct => "correct".into(),
                    _ if sampled.traces.len() >= p.tasks => "not_needed".into(),
                    _ => {
                        sampled.traces.push((task, id, reply));
                        "kept".into()
                    }
                }
            }
        };
        *sampled.statuses.entry(status).or_default() += 1;
    }
    if sampled.traces.len() < p.tasks {
        tracing::warn!(
            "priming: {} of {} sampled replies were not correct, fewer than priming.tasks = {}: raise priming.sampled.draws_per_trace",
            sampled.traces.len(),
            sampled.statuses.values().sum::<u64>(),
            p.tasks
        );
    }
    Ok(sampled)
}

/// The sampled model must be chosen on purpose: `[llm.priming_sample]` is required (its
/// `endpoints` and `model`; a table without endpoints samples `[llm]`'s servers, or the
/// local server of `[llm.serve]`). Checked before the stage sends anything.
pub fn require_server(cfg: &LoadedConfig) -> Result<()> {
    if cfg.config.llm.priming_sample.is_none() {
        bail!(
            "priming: all_strategies_wrong is sampled from a model (priming.wrong_answers = \"sampled\", the study's way): add [llm.priming_sample] with \
             endpoints and model (a base or primed model served with /v1/completions, e.g. vLLM) to {}, or set priming.wrong_answers = \"asked\"",
            cfg.path.display()
        );
    }
    Ok(())
}

/// `n` distinct puzzles drawn from `seed` (a stream of its own, apart from the other
/// conditions' puzzles).
fn draw(seed: u64, n: usize, spec: &countdown::task::TaskSpec) -> Vec<Task> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5341_4d50_4c45_0000);
    let (mut seen, mut out) = (HashSet::new(), Vec::with_capacity(n));
    for _ in 0..n * 50 {
        if out.len() == n {
            break;
        }
        let (task, _) = generate(&mut rng, spec);
        if seen.insert(task.clone()) {
            out.push(task);
        }
    }
    out
}
