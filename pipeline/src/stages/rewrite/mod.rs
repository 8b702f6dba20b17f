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

use anyhow::{Context, Result};
use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use self::parse::{Qa, parse_qa};
use crate::hashing;
use crate::journal::Record;
use crate::llm::batch::{Reask, RequestId};
use crate::llm::client::Extra;
use crate::llm::context::ContextNeed;
use crate::llm::protocol::Sampling;
use crate::llm::stage::LlmSession;
use crate::run_dir::{RunDir, publish_table, staging_for};
use crate::stages::classify::cut::Cutter;
use crate::stages::stage::{Stage, StageContext};
use crate::stages::tables::{PartInfo, PartWriter, parquet_parts};
use crate::stages::template::Template;

/// The stage's table: `runs/<name>/rewrites/`.
pub const TABLE: &str = run_contract::tables::REWRITES;
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

/// The rewrite stage: the selected documents rewritten into question / thoughts / answer.
pub struct Rewrite;

impl Stage for Rewrite {
    const VERB: &'static str = "rewrite";
    type Manifest = RewritesManifest;

    async fn run(ctx: &StageContext) -> Result<RewritesManifest> {
        run_rewrite(ctx).await
    }

    fn render(m: &RewritesManifest, ctx: &StageContext) -> String {
        let mut s = String::new();
        for (set, by) in &m.statuses {
            let mut by: Vec<_> = by.iter().collect();
            by.sort();
            s.push_str(&format!("rewrite {set}: {}\n", by.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")));
        }
        s.push_str(&format!("rewrites: {} documents ({} requests sent now) in {}\n", m.rows, m.requests_sent, ctx.cfg.run_path().join(TABLE).display()));
        s
    }
}

/// Runs the stage over the run's `select` and `docs` tables: the request of a chosen
/// document is its set's prompt around the cut document, sent where the journal lacks it;
/// an answer must parse as question / thoughts / answer within the length limit; the
/// rewrites table is built from the journal.
async fn run_rewrite(ctx: &StageContext) -> Result<RewritesManifest> {
    let cfg = &ctx.cfg;
    let r = &cfg.config.rewrite;
    let run = RunDir::new(cfg.run_path());
    let chosen = read_select(&run.stage(crate::stages::select::TABLE))?;
    let parts = parquet_parts(&run.stage(crate::stages::sample::TABLE), "run `pipeline sample` first")?;
    let dir = cfg.resolve(&r.prompts_dir);
    let templates: Vec<Template> = SETS.iter().map(|s| Template::load(&dir, s, "rewrite.prompts_dir")).collect::<Result<_>>()?;
    let tokenizer = r.tokenizer.as_ref().or(cfg.config.classify.tokenizer.as_ref()).map(|t| cfg.resolve(t));
    let cutter = Cutter::for_stage("rewrite", tokenizer.as_deref(), r.max_doc_tokens, cfg.config.classify.chars_per_token)?;
    let sampling = Sampling { temperature: r.temperature, max_tokens: r.max_tokens, top_p: None, seed: None };
    let session = LlmSession::open(ctx, "rewrite", sampling, &format!("|structured_output={}", cfg.config.llm.structured_output)).await?;
    let template = templates.iter().map(|t| t.render("").chars().count()).max().unwrap_or(0);
    session.check_context(ContextNeed::new(template, cfg.config.classify.chars_per_token, r.max_doc_tokens, r.max_tokens)).await?;
    let constraint = constraint(&cfg.config.llm.structured_output, r.max_tokens);

    let requests_of = {
        let (templates, keys, chosen) = (templates.clone(), session.keys.clone(), chosen.clone());
        move |doc_id: &str, text: &str| -> Result<Vec<(String, Job)>> {
            let Some(&set) = chosen.get(doc_id) else { return Ok(Vec::new()) };
            let doc = cutter.cut(text)?;
            let key = keys.key(&templates[set].hash, &hashing::doc_id(hashing::doc_hash(doc)));
            let job = Job { key: key.clone(), doc_id: doc_id.to_string(), set, prompt: templates[set].render(doc), doc_chars: doc.chars().count() };
            Ok(vec![(key, job)])
        }
    };
    let (outcome, order) = session
        .send_documents(parts, chosen.len() as u64, requests_of, |job: Job| {
            let (session, template, constraint) = (&session, &templates[job.set], constraint.as_ref());
            async move { ask(session, template, constraint, &job, r.reasks, r.max_length_ratio).await }
        })
        .await?;

    // The rewrites table, from the journal.
    let records = session.records()?;
    let out = run.stage(TABLE);
    let staging = staging_for(&out)?;
    let schema = rewrites_schema();
    let mut writer = PartWriter::new(&staging, schema.clone(), cfg.config.sample.part_rows)?;
    let mut statuses: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for chunk in order.chunks(4096) {
        let mut b = RowsBuilder::default();
        for (doc_id, keys) in chunk {
            let (set, rec) = (chosen[doc_id], records.get(&keys[0]));
            let (status, qa) = verdict(rec);
            *statuses.entry(SETS[set].to_string()).or_default().entry(status.clone()).or_default() += 1;
            b.push(doc_id, SETS[set], &status, qa.as_ref(), rec, (session.model(), &templates[set].hash));
        }
        writer.write(&b.finish(&schema)?)?;
    }
    let (state, too_many_failed) = session.table_state(&records, order.iter().flat_map(|(_, keys)| keys));
    let manifest = RewritesManifest {
        stage: TABLE.into(),
        state,
        model: session.model().to_string(),
        prompts: templates.iter().map(|t| (t.name.clone(), t.hash.clone())).collect(),
        sampling: session.sampling.clone(),
        rows: order.len() as u64,
        statuses,
        requests_sent: outcome.sent,
        failures_by_class: outcome.failures_by_class,
        parts: writer.finish()?,
    };
    publish_table(&staging, &out, &manifest)?;
    if let Some(problem) = too_many_failed {
        anyhow::bail!(problem);
    }
    Ok(manifest)
}

/// A rewrite's status and its fields from its journal record. The length limit was applied
/// when the answer came (its verdict is the record's `reason`); here the fields are only
/// taken apart again.
fn verdict(rec: Option<&Record>) -> (String, Option<Qa>) {
    match rec {
        None => ("not_asked".to_string(), None),
        Some(x) if x.status != "ok" => (format!("failed:{}", x.failure.as_deref().unwrap_or("unknown")), None),
        Some(x) => match (&x.reason, parse_qa(x.content.as_deref().unwrap_or(""), usize::MAX)) {
            (Some(verdict), _) => (verdict.clone(), None),
            (None, Ok(qa)) => ("ok".to_string(), Some(qa)),
            (None, Err(s)) => (s.to_string(), None),
        },
    }
}

/// Sends one rewrite, asking again while the answer does not parse. A parse failure after
/// the last re-ask is kept in the record's `reason` (status stays `ok`: an answer came).
async fn ask(session: &LlmSession, template: &Template, constraint: Option<&Extra>, job: &Job, reasks: u32, ratio: f64) -> Record {
    let max_chars = ((job.doc_chars.max(100)) as f64 * ratio) as usize;
    let id = RequestId { key: &job.key, doc_id: &job.doc_id, task: &template.name, prompt_hash: &template.hash, model: session.model() };
    let reask = Reask { times: reasks, text: REASK };
    session.ask(id, job.prompt.clone(), constraint, reask, |content| parse_qa(content, max_chars).map(|_| ())).await
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
    /// One row: a document of `set` with its status, its fields (when they parsed), its
    /// journal record and `(model, prompt hash)`.
    fn push(&mut self, doc_id: &str, set: &str, status: &str, qa: Option<&Qa>, rec: Option<&Record>, (model, prompt_hash): (&str, &str)) {
        self.doc_id.append_value(doc_id);
        self.set.append_value(set);
        self.question.append_option(qa.map(|q| q.question.as_str()));
        self.thoughts.append_option(qa.map(|q| q.thoughts.as_str()));
        self.answer.append_option(qa.map(|q| q.answer.as_str()));
        self.status.append_value(status);
        self.raw.append_option(rec.and_then(|x| x.content.as_deref().or(x.reason.as_deref())));
        self.model.append_value(model);
        self.prompt_hash.append_value(prompt_hash);
        self.prompt_tokens.append_value(rec.map(|x| x.prompt_tokens).unwrap_or(0));
        self.completion_tokens.append_value(rec.map(|x| x.completion_tokens).unwrap_or(0));
    }

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
