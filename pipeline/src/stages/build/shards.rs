//! One split of one set written three ways, shard by shard, with the same rows in the
//! same order in each: `data/<split>-NNNNN-of-MMMMM.parquet`, `jsonl/<split>-….jsonl` and
//! `megatron/<split>-….bin` + `.idx` (one packed sequence per row:
//! [bos] + prompt ids + completion ids up to the clip + [eos]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use super::examples::Example;
use super::megatron::{MegatronWriter, TokenType};
use crate::run_dir::sha256_file;
use crate::stages::tables::table_properties;

/// How sequences are packed and rows labelled.
pub struct Packing<'a> {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub max_completion_tokens: usize,
    pub dtype: TokenType,
    pub template_hash: &'a str,
    pub shard_rows: usize,
    /// The `set` column's value for an example's `set` index.
    pub set_names: &'a [&'a str],
}

impl Packing<'_> {
    /// Completion tokens that count (and are packed).
    pub fn counted(&self, e: &Example) -> usize {
        e.completion_ids.len().min(self.max_completion_tokens)
    }

    /// The length of the packed sequence of an example.
    pub fn sequence_len(&self, e: &Example) -> usize {
        usize::from(self.bos.is_some()) + e.prompt_ids.len() + self.counted(e) + usize::from(self.eos.is_some())
    }

    /// The packed sequence of an example.
    pub fn sequence(&self, e: &Example) -> Vec<u32> {
        let mut ids = Vec::with_capacity(self.sequence_len(e));
        ids.extend(self.bos);
        ids.extend_from_slice(&e.prompt_ids);
        ids.extend_from_slice(&e.completion_ids[..self.counted(e)]);
        ids.extend(self.eos);
        ids
    }
}

pub use run_contract::set::FileInfo;

/// The columns of the parquet shards (and the keys of the JSONL lines, in this order).
pub fn schema() -> Arc<Schema> {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("prompt"),
        s("completion"),
        s("doc_id"),
        s("set"),
        s("split"),
        s("source"),
        s("revision"),
        s("file"),
        Field::new("row", DataType::UInt64, false),
        s("model"),
        s("rewrite_prompt_hash"),
        s("template_hash"),
        Field::new("prompt_tokens", DataType::UInt32, false),
        Field::new("completion_tokens", DataType::UInt32, false),
        Field::new("truncated", DataType::Boolean, false),
    ]))
}

/// One row, as both the parquet and the JSONL shards hold it (fields in column order).
#[derive(Serialize)]
struct Row<'a> {
    prompt: &'a str,
    completion: &'a str,
    doc_id: &'a str,
    set: &'a str,
    split: &'a str,
    source: &'a str,
    revision: &'a str,
    file: &'a str,
    row: u64,
    model: &'a str,
    rewrite_prompt_hash: &'a str,
    template_hash: &'a str,
    prompt_tokens: u32,
    completion_tokens: u32,
    truncated: bool,
}

impl<'a> Row<'a> {
    fn new(e: &'a Example, split: &'a str, p: &Packing<'a>) -> Self {
        Row {
            prompt: &e.prompt,
            completion: &e.completion,
            doc_id: &e.doc_id,
            set: p.set_names[e.set],
            split,
            source: &e.lineage.source,
            revision: &e.lineage.revision,
            file: &e.lineage.file,
            row: e.lineage.row,
            model: &e.model,
            rewrite_prompt_hash: &e.rewrite_prompt_hash,
            template_hash: p.template_hash,
            prompt_tokens: e.prompt_ids.len() as u32,
            completion_tokens: p.counted(e) as u32,
            truncated: e.completion_ids.len() > p.max_completion_tokens,
        }
    }

    /// The string columns before `row`, then the ones after it.
    fn strings(&self) -> ([&str; 8], [&str; 3]) {
        (
            [self.prompt, self.completion, self.doc_id, self.set, self.split, self.source, self.revision, self.file],
            [self.model, self.rewrite_prompt_hash, self.template_hash],
        )
    }
}

/// What a set's splits hold, as its manifest lists them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SplitTotals {
    /// split -> rows.
    pub rows: BTreeMap<String, u64>,
    /// split -> counted completion tokens (each clipped at `max_completion_tokens`).
    pub completion_tokens: BTreeMap<String, u64>,
    /// split -> tokens in the Megatron shards.
    pub packed_tokens: BTreeMap<String, u64>,
    pub files: Vec<FileInfo>,
}

/// Writes each split's rows (in their final order) under `set_dir` and totals them; an
/// empty split has no files.
pub fn write_splits(set_dir: &Path, splits: &[(&str, &[&Example])], packing: &Packing) -> Result<SplitTotals> {
    let mut t = SplitTotals::default();
    for (split, rows) in splits {
        if rows.is_empty() {
            continue;
        }
        let files = write_split(set_dir, split, rows, packing)?;
        t.rows.insert(split.to_string(), rows.len() as u64);
        t.completion_tokens.insert(split.to_string(), rows.iter().map(|e| packing.counted(e) as u64).sum());
        t.packed_tokens.insert(split.to_string(), files.iter().filter(|f| f.format == "parquet").map(|f| f.tokens).sum());
        t.files.extend(files);
    }
    Ok(t)
}

/// Writes `rows` (already in their final order) as the shards of `split` under `set_dir`;
/// an empty split has no files.
pub fn write_split(set_dir: &Path, split: &str, rows: &[&Example], packing: &Packing) -> Result<Vec<FileInfo>> {
    let shards = rows.len().div_ceil(packing.shard_rows);
    let mut files = Vec::new();
    for (i, chunk) in rows.chunks(packing.shard_rows).enumerate() {
        let stem = format!("{split}-{i:05}-of-{shards:05}");
        let tokens: u64 = chunk.iter().map(|e| packing.sequence_len(e) as u64).sum();
        let rows: Vec<Row> = chunk.iter().map(|e| Row::new(e, split, packing)).collect();
        let info = |path: String, format: &str| -> Result<FileInfo> {
            let full = set_dir.join(&path);
            Ok(FileInfo {
                bytes: std::fs::metadata(&full)?.len(),
                sha256: sha256_file(&full)?,
                path,
                split: split.into(),
                format: format.into(),
                rows: chunk.len() as u64,
                tokens,
            })
        };
        write_parquet(&set_dir.join(run_contract::set::DATA).join(format!("{stem}.parquet")), &rows)?;
        files.push(info(format!("data/{stem}.parquet"), "parquet")?);
        write_jsonl(&set_dir.join(run_contract::set::JSONL).join(format!("{stem}.jsonl")), &rows)?;
        files.push(info(format!("jsonl/{stem}.jsonl"), "jsonl")?);
        let mut mega = MegatronWriter::create(&set_dir.join(run_contract::set::MEGATRON).join(&stem), packing.dtype)?;
        for e in chunk {
            mega.push(&packing.sequence(e))?;
        }
        mega.finish()?;
        files.push(info(format!("megatron/{stem}.bin"), "megatron-bin")?);
        files.push(info(format!("megatron/{stem}.idx"), "megatron-idx")?);
    }
    Ok(files)
}

fn write_parquet(path: &Path, rows: &[Row]) -> Result<()> {
    let strings: Vec<([&str; 8], [&str; 3])> = rows.iter().map(Row::strings).collect();
    let before = |i: usize| -> ArrayRef { Arc::new(strings.iter().map(|s| Some(s.0[i])).collect::<StringArray>()) };
    let after = |i: usize| -> ArrayRef { Arc::new(strings.iter().map(|s| Some(s.1[i])).collect::<StringArray>()) };
    let mut cols: Vec<ArrayRef> = (0..8).map(before).collect();
    cols.push(Arc::new(rows.iter().map(|r| r.row).collect::<UInt64Array>()));
    cols.extend((0..3).map(after));
    cols.push(Arc::new(rows.iter().map(|r| r.prompt_tokens).collect::<UInt32Array>()));
    cols.push(Arc::new(rows.iter().map(|r| r.completion_tokens).collect::<UInt32Array>()));
    cols.push(Arc::new(rows.iter().map(|r| Some(r.truncated)).collect::<BooleanArray>()));
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    std::fs::create_dir_all(path.parent().expect("a shard has a folder"))?;
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = ArrowWriter::try_new(file, schema, Some(table_properties(3, 8192)))?;
    w.write(&batch)?;
    w.into_inner()?.sync_all()?;
    Ok(())
}

fn write_jsonl(path: &Path, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("a shard has a folder"))?;
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    for row in rows {
        serde_json::to_writer(&mut w, row)?;
        w.write_all(b"\n")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}
