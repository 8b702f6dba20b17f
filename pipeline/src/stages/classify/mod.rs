//! The classify stage: every document of the `docs` table (or any parquet with `doc_id`
//! and `text`) is asked, once per task, how often it shows a reasoning behavior (and
//! whether it holds a problem and a solution). Answers are journaled as they arrive
//! (`runs/<name>/journal/classify.jsonl`), so a rerun sends only what is missing; the
//! `labels` table and its statistics are then built from the journal.

pub mod config;
pub mod cut;
pub mod format;
pub mod labels;
pub mod parse;
pub mod prompts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use serde::{Deserialize, Serialize};

use self::cut::Cutter;
use self::labels::{LabelStats, LabelsBuilder, records_of};
use self::parse::{parse_count, parse_joint, parse_problem_solution};
use self::prompts::{Answer, Prompt, TASKS};
use crate::hashing;
use crate::journal::Record;
use crate::llm::batch::{Reask, RequestId};
use crate::llm::client::Extra;
use crate::llm::context::ContextNeed;
use crate::llm::protocol::Sampling;
use crate::llm::stage::LlmSession;
use crate::run_dir::{RunDir, publish_table, staging_for};
use crate::stages::stage::{Stage, StageContext};
use crate::stages::tables::{PartInfo, PartWriter, parquet_parts};

/// The stage's table: `runs/<name>/labels/`.
pub const TABLE: &str = run_contract::tables::LABELS;

/// Asked when an answer cannot be parsed.
const REASK: &str = "Your answer did not end in the required format. Reply again, ending exactly with the tag(s) the instructions ask for.";

/// `labels/_manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelsManifest {
    pub stage: String,
    pub state: String,
    pub model: String,
    pub input: String,
    pub prompts: BTreeMap<String, String>,
    pub sampling: Sampling,
    pub max_doc_tokens: usize,
    pub cut_by: String,
    pub rows: u64,
    pub stats: LabelStats,
    pub requests_sent: u64,
    pub failures_by_class: BTreeMap<String, u64>,
    pub parts: Vec<PartInfo>,
}

/// One request to send.
struct Job {
    key: String,
    doc_id: String,
    task: usize,
    prompt: String,
}

/// The classify stage: every document asked about every behavior, the answers parsed into
/// `labels/`.
pub struct Classify;

impl Stage for Classify {
    const VERB: &'static str = "classify";
    type Manifest = LabelsManifest;

    async fn run(ctx: &StageContext) -> Result<LabelsManifest> {
        run_classify(ctx).await
    }

    fn render(m: &LabelsManifest, ctx: &StageContext) -> String {
        let dir = ctx.cfg.run_path().join(TABLE);
        format!("{}labels: {} documents ({} requests sent now) in {}\n", labels::render(&m.stats), m.rows, m.requests_sent, dir.display())
    }
}

/// Runs the stage: the requests of a document are one per task (prompt), sent where the
/// journal lacks them; an answer is parsed by its task's rule; the labels table is built
/// from the journal.
async fn run_classify(ctx: &StageContext) -> Result<LabelsManifest> {
    let cfg = &ctx.cfg;
    let (c, l) = (&cfg.config.classify, &cfg.config.llm);
    let run = RunDir::new(cfg.run_path());
    let input = ctx.input.clone().unwrap_or_else(|| run.stage(crate::stages::sample::TABLE));
    let parts = parquet_parts(&input, "run `pipeline sample` first, or pass --input FILE")?;
    let prompts_dir = cfg.resolve(&c.prompts_dir);
    let prompts: Vec<Prompt> =
        TASKS.iter().filter(|(t, _)| c.tasks.iter().any(|x| x == t)).map(|(t, a)| Prompt::load(&prompts_dir, t, *a)).collect::<Result<_>>()?;
    let tokenizer = c.tokenizer.as_ref().map(|t| cfg.resolve(t));
    let cutter = Cutter::for_stage("classify", tokenizer.as_deref(), c.max_doc_tokens, c.chars_per_token)?;
    let sampling = Sampling { temperature: c.temperature, max_tokens: c.max_tokens, top_p: None, seed: None };
    // The answer constraint changes answers, so it is part of every key.
    let session = LlmSession::open(ctx, "classify", sampling, &format!("|structured_output={}", l.structured_output)).await?;
    let template = prompts.iter().map(|p| p.render("").chars().count()).max().unwrap_or(0);
    session.check_context(ContextNeed::new(template, c.chars_per_token, c.max_doc_tokens, c.max_tokens)).await?;
    let constraints: Vec<Option<Extra>> = prompts.iter().map(|p| format::constraint(p.answer, &l.structured_output)).collect();

    let requests_of = {
        let (prompts, keys) = (prompts.clone(), session.keys.clone());
        move |doc_id: &str, text: &str| -> Result<Vec<(String, Job)>> {
            let doc = cutter.cut(text)?;
            let doc_hash = hashing::doc_id(hashing::doc_hash(doc));
            let job = |(task, p): (usize, &Prompt)| {
                let key = keys.key(&p.hash, &doc_hash);
                (key.clone(), Job { key, doc_id: doc_id.to_string(), task, prompt: p.render(doc) })
            };
            Ok(prompts.iter().enumerate().map(job).collect())
        }
    };
    let total = count_rows(&parts)? * prompts.len() as u64;
    let (outcome, order) = session
        .send_documents(parts, total, requests_of, |job: Job| {
            let (session, prompt, constraint) = (&session, &prompts[job.task], constraints[job.task].as_ref());
            async move { ask(session, prompt, constraint, &job, c.max_count, c.reasks).await }
        })
        .await?;

    // The labels table, from the journal.
    let records = session.records()?;
    let out = run.stage(TABLE);
    let staging = staging_for(&out)?;
    let mut builder = LabelsBuilder::new(&prompts, session.model(), c.max_count);
    let mut writer = PartWriter::new(&staging, builder.schema(), cfg.config.sample.part_rows)?;
    for chunk in order.chunks(8192) {
        for (doc_id, keys) in chunk {
            builder.push(doc_id, &records_of(&records, keys));
        }
        writer.write(&builder.take_batch()?)?;
    }
    let mut stats = builder.stats.clone();
    stats.finish();
    let (state, too_many_failed) = session.table_state(&records, order.iter().flat_map(|(_, keys)| keys));
    let manifest = LabelsManifest {
        stage: TABLE.into(),
        state,
        model: session.model().to_string(),
        input: input.display().to_string(),
        prompts: prompts.iter().map(|p| (p.task.clone(), p.hash.clone())).collect(),
        sampling: session.sampling.clone(),
        max_doc_tokens: c.max_doc_tokens,
        cut_by: if c.tokenizer.is_some() { "tokenizer".into() } else { "characters".into() },
        rows: order.len() as u64,
        stats,
        requests_sent: outcome.sent,
        failures_by_class: outcome.failures_by_class,
        parts: writer.finish()?,
    };
    publish_table(&staging, &out, &manifest)?;
    if let Some(problem) = too_many_failed {
        bail!(problem);
    }
    Ok(manifest)
}

/// Sends one job (and re-asks while the answer cannot be parsed); the journal record.
async fn ask(session: &LlmSession, prompt: &Prompt, constraint: Option<&Extra>, job: &Job, max_count: u32, reasks: u32) -> Record {
    let id = RequestId { key: &job.key, doc_id: &job.doc_id, task: &prompt.task, prompt_hash: &prompt.hash, model: session.model() };
    let answer = prompt.answer;
    session
        .ask(id, job.prompt.clone(), constraint, Reask { times: reasks, text: REASK }, |content| match answer {
            Answer::Count => parse_count(content, max_count).map(|_| ()),
            Answer::ProblemSolution => parse_problem_solution(content).map(|_| ()),
            Answer::Joint => parse_joint(content, max_count).map(|_| ()),
        })
        .await
}

fn count_rows(parts: &[PathBuf]) -> Result<u64> {
    let mut n = 0;
    for p in parts {
        let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&f)
            .with_context(|| format!("{} is not a readable parquet file", p.display()))?;
        n += meta.file_metadata().num_rows().max(0) as u64;
    }
    Ok(n)
}

/// Calls `each(doc_id, text)` for every row of a parquet file with those two columns.
pub fn for_each_doc(path: &Path, mut each: impl FnMut(&str, &str) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable parquet file", path.display()))?;
    let schema = builder.schema().clone();
    let (Ok(id_idx), Ok(text_idx)) = (schema.index_of("doc_id"), schema.index_of("text")) else {
        bail!(
            "{} needs string columns `doc_id` and `text` (it has: {})",
            path.display(),
            schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        );
    };
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [id_idx, text_idx]);
    for batch in builder.with_projection(mask).with_batch_size(1024).build()? {
        let batch = batch.with_context(|| format!("{} is damaged", path.display()))?;
        let ids = batch.column_by_name("doc_id").context("doc_id")?;
        let texts = batch.column_by_name("text").context("text")?;
        let (Some(ids), Some(texts)) = (ids.as_string_opt::<i32>(), texts.as_string_opt::<i32>()) else {
            bail!("{}: `doc_id` and `text` must be strings", path.display());
        };
        for i in 0..batch.num_rows() {
            each(ids.value(i), texts.value(i))?;
        }
    }
    Ok(())
}
