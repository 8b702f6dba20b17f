//! Training examples from the run's tables: every rewrite that parsed (`status = ok`)
//! becomes prompt = the conversation template around its question, completion =
//! `<think>{thoughts}</think>\n<answer>{answer}</answer>`, with its lineage from `docs`
//! (source, revision, file, row) and its token ids under the build tokenizer.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use xxhash_rust::xxh3::xxh3_128;

use crate::stages::tables::{complete_table_parts, parquet_parts};
use crate::stages::template::Template;

/// The sets, in the order the build writes them.
pub const SETS: [&str; 2] = ["rich", "control"];

/// Where a document came from.
#[derive(Clone, Debug)]
pub struct Lineage {
    pub source: String,
    pub revision: String,
    pub file: String,
    pub row: u64,
}

/// One training example, with its tokens.
#[derive(Clone, Debug)]
pub struct Example {
    pub doc_id: String,
    pub set: usize,
    pub prompt: String,
    pub completion: String,
    pub lineage: Lineage,
    pub model: String,
    pub rewrite_prompt_hash: String,
    pub prompt_ids: Vec<u32>,
    /// All completion ids; the build packs at most `max_completion_tokens` of them.
    pub completion_ids: Vec<u32>,
}

/// What reading the rewrites found.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Gathered {
    /// Rewrites per set that parsed.
    pub ok: [u64; 2],
    /// Rewrites per set that failed (never examples).
    pub failed: [u64; 2],
    /// Examples dropped because an earlier one had the same prompt and completion.
    pub duplicates_dropped: u64,
}

/// The completion text of a rewrite.
pub fn completion_text(thoughts: &str, answer: &str) -> String {
    format!("<think>{thoughts}</think>\n<answer>{answer}</answer>")
}

/// Reads the `rewrites` and `docs` tables of a run into examples (sorted by doc_id, one per
/// distinct prompt + completion), not yet tokenized.
pub fn gather(run: &Path, template: &Template) -> Result<(Vec<Example>, Gathered)> {
    let rewrites = complete_table_parts(&run.join(crate::stages::rewrite::TABLE), "rewrite")?;
    let mut found = Gathered::default();
    let mut examples = Vec::new();
    for part in &rewrites {
        for batch in read(part, &["doc_id", "set", "question", "thoughts", "answer", "status", "model", "prompt_hash"])? {
            let s = |name| string_column(&batch, name, part);
            let (ids, sets, qs, ts, ans, statuses, models, hashes) =
                (s("doc_id")?, s("set")?, s("question")?, s("thoughts")?, s("answer")?, s("status")?, s("model")?, s("prompt_hash")?);
            for i in 0..batch.num_rows() {
                let set = SETS.iter().position(|x| *x == sets.value(i)).ok_or_else(|| anyhow!("{}: unknown set `{}`", part.display(), sets.value(i)))?;
                if statuses.value(i) != "ok" || qs.is_null(i) || ts.is_null(i) || ans.is_null(i) {
                    found.failed[set] += 1;
                    continue;
                }
                found.ok[set] += 1;
                examples.push(Example {
                    doc_id: ids.value(i).to_string(),
                    set,
                    prompt: template.render(qs.value(i)),
                    completion: completion_text(ts.value(i), ans.value(i)),
                    lineage: Lineage { source: String::new(), revision: String::new(), file: String::new(), row: 0 },
                    model: models.value(i).to_string(),
                    rewrite_prompt_hash: hashes.value(i).to_string(),
                    prompt_ids: Vec::new(),
                    completion_ids: Vec::new(),
                });
            }
        }
    }
    examples.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    let mut seen = std::collections::HashSet::new();
    examples.retain(|e| {
        let fresh = seen.insert(xxh3_128(format!("{}\u{0}{}", e.prompt, e.completion).as_bytes()));
        found.duplicates_dropped += u64::from(!fresh);
        fresh
    });
    attach_lineage(run, &mut examples)?;
    Ok((examples, found))
}

/// Fills in each example's lineage from the `docs` table (its text column is not read).
fn attach_lineage(run: &Path, examples: &mut [Example]) -> Result<()> {
    let mut wanted: HashMap<&str, Option<Lineage>> = examples.iter().map(|e| (e.doc_id.as_str(), None)).collect();
    for part in parquet_parts(&run.join(crate::stages::sample::TABLE), "run `pipeline sample` first")? {
        for batch in read(&part, &["doc_id", "source", "revision", "file", "row"])? {
            let s = |name| string_column(&batch, name, &part);
            let (ids, sources, revisions, files) = (s("doc_id")?, s("source")?, s("revision")?, s("file")?);
            let rows = batch
                .column_by_name("row")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .with_context(|| format!("{}: no u64 `row` column", part.display()))?;
            for i in 0..batch.num_rows() {
                if let Some(slot) = wanted.get_mut(ids.value(i)) {
                    *slot =
                        Some(Lineage { source: sources.value(i).into(), revision: revisions.value(i).into(), file: files.value(i).into(), row: rows.value(i) });
                }
            }
        }
    }
    let found: HashMap<String, Lineage> = wanted.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect();
    for e in examples.iter_mut() {
        e.lineage = found.get(&e.doc_id).cloned().with_context(|| {
            format!("rewrite of document {} has no row in docs/: the run's tables are from different samples; rerun `pipeline run`", e.doc_id)
        })?;
    }
    Ok(())
}

/// Tokenizes prompts and completions in parallel (no special tokens added).
pub fn tokenize(tokenizer: &tokenizers::Tokenizer, examples: &mut [Example]) -> Result<()> {
    for chunk in examples.chunks_mut(2048) {
        let texts: Vec<&str> = chunk.iter().flat_map(|e| [e.prompt.as_str(), e.completion.as_str()]).collect();
        let encodings = tokenizer.encode_batch_fast(texts, false).map_err(|e| anyhow!("tokenizer failed: {e}"))?;
        for (e, pair) in chunk.iter_mut().zip(encodings.chunks(2)) {
            e.prompt_ids = pair[0].get_ids().to_vec();
            e.completion_ids = pair[1].get_ids().to_vec();
        }
    }
    Ok(())
}

fn read(part: &Path, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(part).with_context(|| format!("cannot open {}", part.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is not a readable parquet file", part.display()))?;
    let names: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    for c in columns {
        if !names.iter().any(|n| n == c) {
            bail!("{} has no `{c}` column: it was written by another version; rerun its stage", part.display());
        }
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
    builder.with_projection(mask).with_batch_size(8192).build()?.map(|b| b.map_err(Into::into)).collect()
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str, part: &Path) -> Result<&'a arrow_array::StringArray> {
    batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).with_context(|| format!("{}: `{name}` is not a string column", part.display()))
}
