//! What every LLM stage (classify, rewrite, priming) does around its own two parts, "the
//! requests of a row" and "parse an answer": connect to the served model, open the stage's
//! journal, key each request by everything that decides its answer, send only what the
//! journal lacks (at most the client's window at a time, each answer journaled as it
//! arrives, the circuit breaker watching), then read the journal back to build the
//! stage's table, whose state says whether too many of its requests failed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use futures_util::Stream;

use super::LlmClient;
use super::batch::{BatchOutcome, Counts, Reask, RequestId, send_journaled};
use super::client::{Extra, Failure};
use super::context::{ContextNeed, judge};
use super::error::FailureClass;
use super::protocol::Message;
use super::protocol::Sampling;
use super::setup::{Connection, connect};
use crate::journal::{Journal, Record, request_key};
use crate::run_dir::RunDir;
use crate::stages::classify::for_each_doc;
use crate::stages::stage::StageContext;

/// Whether a journaled request is sent again: a failure that can heal or that a fixed
/// configuration cures (journals written before that rule are read by the class), or
/// one of the classes asked for with `--retry-failed` (`Some(&[])`: every class).
fn asked_again(r: &Record, retry_failed: Option<&[FailureClass]>) -> bool {
    if r.status == "ok" {
        return false;
    }
    let class = r.failure.as_deref().and_then(FailureClass::from_name);
    let asked = match (retry_failed, class) {
        (Some([]), _) => true,
        (Some(classes), Some(c)) => classes.contains(&c),
        _ => false,
    };
    r.retry_on_rerun || class.is_some_and(FailureClass::retry_on_rerun) || asked
}

/// How requests are keyed: the served model and the sampling settings (with whatever else
/// changes answers), so that a request's key is the same on any machine and changes when
/// any of them does. Cheap to clone into a reader thread.
#[derive(Clone, Debug)]
pub struct RequestKeys {
    pub model: String,
    sampling_json: String,
}

impl RequestKeys {
    /// The key of the request that sends a document (`doc_hash`) through a prompt (`prompt_hash`).
    pub fn key(&self, prompt_hash: &str, doc_hash: &str) -> String {
        request_key(&self.model, prompt_hash, &self.sampling_json, doc_hash)
    }
}

/// An LLM stage's connection and journal, open for the stage's run.
pub struct LlmSession {
    /// Held for the whole stage: a local server stops when this is dropped.
    connection: Connection,
    pub keys: RequestKeys,
    pub sampling: Sampling,
    journal: Journal,
    /// Keys the journal already answered for good (an answer, or a failure not worth
    /// asking again on a rerun).
    done: Arc<HashSet<String>>,
    label: &'static str,
    /// `llm.max_failed_share`.
    max_failed_share: f64,
}

impl LlmSession {
    /// Connects stage `label` (its journal is `journal/<label>.jsonl`); `key_extra` is
    /// added to the sampling settings in every key (what else changes the answers, such as
    /// the structured-output mode).
    pub async fn open(ctx: &StageContext, label: &'static str, sampling: Sampling, key_extra: &str) -> Result<Self> {
        let run = RunDir::new(ctx.cfg.run_path());
        let connection = connect(&ctx.cfg, label, &ctx.endpoints, ctx.model.as_deref(), &run.root).await?;
        let sampling_json = format!("{}{key_extra}", serde_json::to_string(&sampling)?);
        let (journal, records) = Journal::open(&run_contract::journal_path(&run.root, label))?;
        let done = records.into_values().filter(|r| !asked_again(r, ctx.retry_failed.as_deref())).map(|r| r.key).collect();
        let keys = RequestKeys { model: connection.model.clone(), sampling_json };
        Ok(LlmSession { connection, keys, sampling, journal, done: Arc::new(done), label, max_failed_share: ctx.cfg.config.llm.max_failed_share })
    }

    pub fn client(&self) -> &LlmClient {
        &self.connection.client
    }

    pub fn model(&self) -> &str {
        &self.keys.model
    }

    /// Whether the journal already answered `key` for good.
    pub fn is_done(&self, key: &str) -> bool {
        self.done.contains(key)
    }

    /// Sends `jobs` (requests the journal lacks) through `ask`, journaling each answer; `total`
    /// and `already` size the progress (all of the stage's requests, and those answered
    /// before, which may grow while a reader finds them).
    pub async fn send<J, F, Fut>(&self, jobs: impl Stream<Item = J>, total: u64, already: &AtomicU64, ask: F) -> Result<BatchOutcome>
    where
        F: Fn(J) -> Fut,
        Fut: Future<Output = Record>,
    {
        send_journaled(self.label, jobs, self.client(), Counts { total, already }, &self.journal, ask).await
    }

    /// Checks that the stage's requests (`need`) fit every endpoint's reported context,
    /// before the first is sent: an error when none can, a warning when the longest
    /// documents cannot (`llm::context`).
    pub async fn check_context(&self, need: ContextNeed) -> Result<()> {
        for (endpoint, reported) in self.client().contexts().await {
            match reported {
                Some(context) => {
                    if let Some(warning) = judge(self.label, need, &endpoint, context)? {
                        tracing::warn!("{warning}");
                    }
                }
                None => tracing::debug!("{}: {} reports no context; not checked", self.label, crate::origin::printable(&endpoint)),
            }
        }
        Ok(())
    }

    /// The state of the stage's table built from the records of `keys`: `"complete"`, or
    /// `"incomplete"` with the error the stage stops with (after writing the table) when
    /// more than `llm.max_failed_share` of them failed.
    pub fn table_state<'k>(&self, records: &HashMap<String, Record>, keys: impl IntoIterator<Item = &'k String>) -> (String, Option<String>) {
        let (mut total, mut by_class) = (0u64, std::collections::BTreeMap::<&str, u64>::new());
        for key in keys {
            total += 1;
            if let Some(r) = records.get(key).filter(|r| r.status != "ok") {
                *by_class.entry(r.failure.as_deref().unwrap_or("unknown")).or_default() += 1;
            }
        }
        let failed: u64 = by_class.values().sum();
        if total == 0 || failed as f64 <= self.max_failed_share * total as f64 {
            return ("complete".into(), None);
        }
        let classes: Vec<String> = by_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let problem = format!(
            "{}: {failed} of {total} requests ({:.1}%) failed ({}), more than llm.max_failed_share = {}; the table was written with state \"incomplete\". \
             Fix the cause and run the stage again (failures that can heal or that a configuration fix cures are asked again), \
             add --retry-failed CLASS to ask other failures again, or raise llm.max_failed_share",
            self.label,
            100.0 * failed as f64 / total as f64,
            classes.join(", "),
            self.max_failed_share
        );
        ("incomplete".into(), Some(problem))
    }

    /// One request: `prompt` sent with the session's sampling; while `check` rejects the
    /// answer, the conversation continues with `reask.text`, at most `reask.times` times.
    /// Returns the journal record: the last answer (with the reason `check` gave, if it
    /// still rejects it), or the failure with its class.
    pub async fn ask(
        &self,
        id: RequestId<'_>,
        prompt: String,
        constraint: Option<&Extra>,
        reask: Reask<'_>,
        check: impl Fn(&str) -> Result<(), &'static str>,
    ) -> Record {
        let mut messages = vec![Message::user(prompt)];
        let (mut prompt_tokens, mut completion_tokens, mut latency, mut attempts, mut asked) = (0, 0, Duration::ZERO, 0, 0);
        let result = loop {
            match self.client().complete(&messages, &self.sampling, constraint).await {
                Ok(c) => {
                    prompt_tokens += c.usage.prompt_tokens;
                    completion_tokens += c.usage.completion_tokens;
                    latency += c.latency;
                    attempts += c.attempts;
                    let verdict = check(&c.content);
                    if verdict.is_ok() || asked >= reask.times {
                        break Ok((c, verdict.err()));
                    }
                    asked += 1;
                    messages.push(Message::assistant(c.content));
                    messages.push(Message::user(reask.text));
                }
                Err(Failure { error, attempts: a }) => {
                    attempts += a;
                    break Err(error);
                }
            }
        };
        record(id, result, Spent { prompt_tokens, completion_tokens, latency, attempts })
    }

    /// One raw prompt that the served model continues (`/completions`, no chat template:
    /// sampling a base model), asked once; the journal record of its answer or failure.
    pub async fn continue_text(&self, id: RequestId<'_>, prompt: &str) -> Record {
        match self.client().continue_text(prompt, &self.sampling).await {
            Ok(c) => {
                let spent =
                    Spent { prompt_tokens: c.usage.prompt_tokens, completion_tokens: c.usage.completion_tokens, latency: c.latency, attempts: c.attempts };
                record(id, Ok((c, None)), spent)
            }
            Err(Failure { error, attempts }) => record(id, Err(error), Spent { attempts, ..Spent::default() }),
        }
    }

    /// Every key's last record, read back from the journal (for the stage's table).
    pub fn records(&self) -> Result<HashMap<String, Record>> {
        Ok(Journal::open(self.journal.path())?.1)
    }

    /// Sends the requests of every document of `parts` (parquet files with `doc_id` and
    /// `text`): a reader thread calls `requests_of(doc_id, text)` for each row, queues the
    /// requests (key and job) the journal lacks and counts the others; `ask` sends each.
    /// Returns what was sent and, in document order, each row's keys (rows without requests
    /// left out).
    pub async fn send_documents<J, R, F, Fut>(
        &self,
        parts: Vec<PathBuf>,
        total: u64,
        requests_of: R,
        ask: F,
    ) -> Result<(BatchOutcome, Vec<(String, Vec<String>)>)>
    where
        J: Send + 'static,
        R: FnMut(&str, &str) -> Result<Vec<(String, J)>> + Send + 'static,
        F: Fn(J) -> Fut,
        Fut: Future<Output = Record>,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<J>(1024);
        let already = Arc::new(AtomicU64::new(0));
        let reader = {
            let (already, done) = (already.clone(), self.done.clone());
            let mut requests_of = requests_of;
            std::thread::spawn(move || -> Result<Vec<(String, Vec<String>)>> {
                let mut order = Vec::new();
                for part in &parts {
                    for_each_doc(part, |doc_id, text| {
                        let requests = requests_of(doc_id, text)?;
                        if requests.is_empty() {
                            return Ok(());
                        }
                        let mut keys = Vec::with_capacity(requests.len());
                        for (key, job) in requests {
                            if done.contains(&key) {
                                already.fetch_add(1, Ordering::Relaxed);
                            } else if tx.blocking_send(job).is_err() {
                                bail!("the request loop stopped");
                            }
                            keys.push(key);
                        }
                        order.push((doc_id.to_string(), keys));
                        Ok(())
                    })?;
                }
                Ok(order)
            })
        };
        let jobs = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let outcome = self.send(jobs, total, &already, ask).await?;
        let order = reader.join().map_err(|_| anyhow::anyhow!("the document reader panicked"))??;
        Ok((outcome, order))
    }
}

/// What a request cost, over its attempts and re-asks.
#[derive(Default)]
struct Spent {
    prompt_tokens: u64,
    completion_tokens: u64,
    latency: Duration,
    attempts: u32,
}

/// The journal record of a request: its last answer (with the reason a check gave, if it
/// still rejects it), or its failure with the class.
fn record(id: RequestId<'_>, result: Result<(super::client::Completion, Option<&str>), super::error::LlmError>, spent: Spent) -> Record {
    let base = Record {
        key: id.key.to_string(),
        doc_id: id.doc_id.to_string(),
        task: id.task.to_string(),
        prompt_hash: id.prompt_hash.to_string(),
        model: id.model.to_string(),
        status: "ok".into(),
        content: None,
        finish_reason: None,
        failure: None,
        reason: None,
        retry_on_rerun: false,
        prompt_tokens: spent.prompt_tokens,
        completion_tokens: spent.completion_tokens,
        latency_ms: spent.latency.as_millis() as u64,
        endpoint: String::new(),
        attempts: spent.attempts,
        finished_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    };
    match result {
        Ok((c, verdict)) => {
            Record { content: Some(c.content), finish_reason: c.finish_reason, endpoint: c.endpoint, reason: verdict.map(str::to_string), ..base }
        }
        Err(e) => Record {
            status: "failed".into(),
            failure: Some(e.class.name().into()),
            reason: Some(e.message.clone()),
            retry_on_rerun: e.class.retry_on_rerun(),
            endpoint: e.endpoint.clone(),
            ..base
        },
    }
}
