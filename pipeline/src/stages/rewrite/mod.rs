//! The rewrite stage: every document the select stage put in a set is rewritten by the
//! LLM into `<question>`, `<thoughts>`, `<answer>`, with the set's instructions
//! (`configs/prompts/rewrite/{rich,control}.md`). Same client, journal and resume as
//! classification (`journal/rewrite.jsonl`); answers are parsed strictly, asked again a
//! bounded number of times, and failures are recorded with their reason. Table `rewrites`.

pub mod config;
pub mod parse;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use self::parse::parse_qa;
use crate::config::LoadedConfig;
use crate::hashing;
use crate::journal::{Journal, Record, request_key};
use crate::llm::LlmClient;
use crate::llm::batch::{RequestId, ask_until_parsed, send_journaled};
use crate::llm::client::Extra;
use crate::llm::protocol::Sampling;
use crate::llm::setup::connect;
use crate::run_dir::{RunDir, publish_table, staging_for};
use crate::stages::classify::cut::Cutter;
use crate::stages::classify::for_each_doc;
use crate::stages::tables::{PartInfo, PartWriter, parquet_parts};
use crate::stages::template::Template;

/// The stage's table: `runs/<name>/rewrites/`.
pub const TABLE: &str = "rewrites";
const SETS: [&str; 2] = ["rich", "control"];
const REASK: &str = "Your answer was not in the required format. Reply again with exactly <question>...</question>, <thoughts>...</thoughts>, <answer>...</answer> and nothing else.";

/// `rewrites/_manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewritesManifest {
    pub stage: String,
    pub state: String,
    pub model: String,
    pub prompts: HashMap<String, String>,
    pub sampling: Sampling,
    pub rows: u64,
    /// `<set>` -> `<status>` -> rows.
    pub statuses: HashMap<String, HashMap<String, u64>>,
    pub requests_sent: u64,
    pub failures_by_class: std::collections::BTreeMap<String, u64>,
    pub parts: Vec<PartInfo>,
}

struct Job {
    key: String,
    doc_id: String,
    set: usize,
    prompt: String,
    doc_chars: usize,
}

/// Runs the stage over the run's `select` and `docs` tables.
pub async fn run_rewrite(cfg: &LoadedConfig, endpoints: &[String], model: Option<&str>) -> Result<RewritesManifest> {
    let r = &cfg.config.rewrite;
    let run = RunDir::new(cfg.run_path());
    let chosen = read_select(&run.stage(crate::stages::select::TABLE))?;
    let parts = parquet_parts(&run.stage(crate::stages::sample::TABLE), "run `pipeline sample` first")?;
    let dir = cfg.resolve(&r.prompts_dir);
    let templates: Vec<Template> = SETS.iter().map(|s| Template::load(&dir, s, "rewrite.prompts_dir")).collect::<Result<_>>()?;
    let tokenizer = r.tokenizer.as_ref().or(cfg.config.classify.tokenizer.as_ref()).map(|t| cfg.resolve(t));
    let cutter = Arc::new(Cutter::for_stage("rewrite", tokenizer.as_deref(), r.max_doc_tokens, cfg.config.classify.chars_per_token)?);
    let connection = connect(cfg, "rewrite", endpoints, model, &run.root).await?;
    let (client, model) = (connection.client.clone(), connection.model.clone());
    let sampling = Sampling { temperature: r.temperature, max_tokens: r.max_tokens, top_p: None, seed: None };
    let sampling_json = format!("{}|structured_output={}", serde_json::to_string(&sampling)?, cfg.config.llm.structured_output);
    let constraint = constraint(&cfg.config.llm.structured_output, r.max_tokens);
    let (journal, done) = Journal::open(&run.root.join("journal").join("rewrite.jsonl"))?;
    let done_keys: std::collections::HashSet<String> = done.values().filter(|x| x.status == "ok" || !x.retry_on_rerun).map(|x| x.key.clone()).collect();
    drop(done);

    // Pass 1 (a thread): the chosen documents, cut, queued when the journal lacks them.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(1024);
    // Chosen documents the journal already rewrote, counted as the reader finds them.
    let already = Arc::new(AtomicU64::new(0));
    let producer = {
        let already = already.clone();
        let (templates, cutter, model, sampling_json, done_keys) = (templates.clone(), cutter.clone(), model.clone(), sampling_json.clone(), done_keys.clone());
        let chosen = chosen.clone();
        std::thread::spawn(move || -> Result<Vec<(String, usize, String)>> {
            let mut order = Vec::new();
            for part in &parts {
                for_each_doc(part, |doc_id, text| {
                    let Some(&set) = chosen.get(doc_id) else { return Ok(()) };
                    let doc = cutter.cut(text)?;
                    let doc_hash = hashing::doc_id(hashing::doc_hash(doc));
                    let key = request_key(&model, &templates[set].hash, &sampling_json, &doc_hash);
                    if done_keys.contains(&key) {
                        already.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let job = Job { key: key.clone(), doc_id: doc_id.to_string(), set, prompt: templates[set].render(doc), doc_chars: doc.chars().count() };
                        if tx.blocking_send(job).is_err() {
                            anyhow::bail!("the request loop stopped");
                        }
                    }
                    order.push((doc_id.to_string(), set, key));
                    Ok(())
                })?;
            }
            Ok(order)
        })
    };

    // Pass 2: send, parse, ask again if needed, journal.
    let width = client.settings.endpoints.len() * cfg.config.llm.max_concurrency;
    let jobs = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let total = chosen.len() as u64;
    let outcome = send_journaled("rewrite", jobs, &client, width, total, &already, &journal, |job: Job| {
        let (client, templates, sampling, constraint, model) = (client.clone(), &templates, &sampling, constraint.as_ref(), model.clone());
        async move { ask(&client, &templates[job.set], constraint, &job, sampling, r.reasks, r.max_length_ratio, &model).await }
    })
    .await?;
    let order = producer.join().map_err(|_| anyhow::anyhow!("the document reader panicked"))??;

    // Pass 3: the rewrites table, from the journal.
    let (_, records) = Journal::open(journal.path())?;
    let out = run.stage(TABLE);
    let staging = staging_for(&out)?;
    let schema = rewrites_schema();
    let mut writer = PartWriter::new(&staging, schema.clone(), cfg.config.sample.part_rows)?;
    let mut statuses: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for chunk in order.chunks(4096) {
        let mut b = RowsBuilder::default();
        for (doc_id, set, key) in chunk {
            let rec = records.get(key);
            // The length limit was applied when the answer came (its verdict is the record's
            // `reason`); here the fields are only taken apart again.
            let (status, qa) = match rec {
                None => ("not_asked".to_string(), None),
                Some(x) if x.status != "ok" => (format!("failed:{}", x.failure.as_deref().unwrap_or("unknown")), None),
                Some(x) => match (&x.reason, parse_qa(x.content.as_deref().unwrap_or(""), usize::MAX)) {
                    (Some(verdict), _) => (verdict.clone(), None),
                    (None, Ok(qa)) => ("ok".to_string(), Some(qa)),
                    (None, Err(s)) => (s.to_string(), None),
                },
            };
            *statuses.entry(SETS[*set].to_string()).or_default().entry(status.clone()).or_default() += 1;
            b.doc_id.append_value(doc_id);
            b.set.append_value(SETS[*set]);
            b.question.append_option(qa.as_ref().map(|q| q.question.as_str()));
            b.thoughts.append_option(qa.as_ref().map(|q| q.thoughts.as_str()));
            b.answer.append_option(qa.as_ref().map(|q| q.answer.as_str()));
            b.status.append_value(&status);
            b.raw.append_option(rec.and_then(|x| x.content.as_deref().or(x.reason.as_deref())));
            b.model.append_value(&model);
            b.prompt_hash.append_value(&templates[*set].hash);
            b.prompt_tokens.append_value(rec.map(|x| x.prompt_tokens).unwrap_or(0));
            b.completion_tokens.append_value(rec.map(|x| x.completion_tokens).unwrap_or(0));
        }
        writer.write(&b.finish(&schema)?)?;
    }
    let manifest = RewritesManifest {
        stage: TABLE.into(),
        state: "complete".into(),
        model,
        prompts: templates.iter().map(|t| (t.name.clone(), t.hash.clone())).collect(),
        sampling,
        rows: order.len() as u64,
        statuses,
        requests_sent: outcome.sent,
        failures_by_class: outcome.failures_by_class,
        parts: writer.finish()?,
    };
    publish_table(&staging, &out, &manifest)?;
    Ok(manifest)
}

/// Sends one rewrite, asking again while the answer does not parse. A parse failure after
/// the last re-ask is kept in the record's `reason` (status stays `ok`: an answer came).
#[allow(clippy::too_many_arguments)]
async fn ask(
    client: &LlmClient,
    template: &Template,
    constraint: Option<&Extra>,
    job: &Job,
    sampling: &Sampling,
    reasks: u32,
    ratio: f64,
    model: &str,
) -> Record {
    let max_chars = ((job.doc_chars.max(100)) as f64 * ratio) as usize;
    let id = RequestId { key: &job.key, doc_id: &job.doc_id, task: &template.name, prompt_hash: &template.hash, model };
    ask_until_parsed(client, id, job.prompt.clone(), sampling, constraint, reasks, REASK, |content| parse_qa(content, max_chars).map(|_| ())).await
}

/// The answer format as a llama.cpp grammar or a vLLM regex, with field lengths (in
/// characters) that fit in `max_tokens` together, so a constrained answer is never cut.
fn constraint(dialect: &str, max_tokens: u32) -> Option<Extra> {
    let budget = max_tokens as usize;
    let (q, t, a) = ((budget * 3 / 5).max(20), (budget * 2).max(40), (budget * 3 / 10).max(10));
    let mut extra = Extra::new();
    match dialect {
        "llama_cpp" => {
            let grammar = format!(
                "root ::= \"<question>\" [^<]{{1,{q}}} \"</question>\\n<thoughts>\" [^<]{{1,{t}}} \"</thoughts>\\n<answer>\" [^<]{{1,{a}}} \"</answer>\"\n"
            );
            extra.insert("grammar".into(), grammar.into());
        }
        "vllm" => {
            let regex = format!("<question>[^<]{{1,{q}}}</question>\\n<thoughts>[^<]{{1,{t}}}</thoughts>\\n<answer>[^<]{{1,{a}}}</answer>");
            extra.insert("structured_outputs".into(), serde_json::json!({ "regex": regex }));
        }
        _ => return None,
    }
    Some(extra)
}

/// doc_id -> set index, from the select table.
fn read_select(dir: &Path) -> Result<HashMap<String, usize>> {
    let mut out = HashMap::new();
    for part in parquet_parts(dir, "run `pipeline select` first")? {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&part)?)?.build()?;
        for batch in reader {
            let batch = batch?;
            let ids = batch.column_by_name("doc_id").context("select has no doc_id")?.as_string::<i32>().clone();
            let sets = batch.column_by_name("set").context("select has no set")?.as_string::<i32>().clone();
            for i in 0..batch.num_rows() {
                let set = SETS.iter().position(|s| *s == sets.value(i)).with_context(|| format!("{}: unknown set `{}`", part.display(), sets.value(i)))?;
                out.insert(ids.value(i).to_string(), set);
            }
        }
    }
    Ok(out)
}

fn rewrites_schema() -> Arc<Schema> {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("doc_id", false),
        s("set", false),
        s("question", true),
        s("thoughts", true),
        s("answer", true),
        s("status", false),
        s("raw", true),
        s("model", false),
        s("prompt_hash", false),
        Field::new("prompt_tokens", DataType::UInt64, false),
        Field::new("completion_tokens", DataType::UInt64, false),
    ]))
}

#[derive(Default)]
struct RowsBuilder {
    doc_id: StringBuilder,
    set: StringBuilder,
    question: StringBuilder,
    thoughts: StringBuilder,
    answer: StringBuilder,
    status: StringBuilder,
    raw: StringBuilder,
    model: StringBuilder,
    prompt_hash: StringBuilder,
    prompt_tokens: UInt64Builder,
    completion_tokens: UInt64Builder,
}

impl RowsBuilder {
    fn finish(mut self, schema: &Arc<Schema>) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.doc_id.finish()),
            Arc::new(self.set.finish()),
            Arc::new(self.question.finish()),
            Arc::new(self.thoughts.finish()),
            Arc::new(self.answer.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.prompt_hash.finish()),
            Arc::new(self.prompt_tokens.finish()),
            Arc::new(self.completion_tokens.finish()),
        ];
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }
}
