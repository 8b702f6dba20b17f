//! The final step of sampling: from all candidate parts, take each source's `quota`
//! smallest ranks, drop repeated texts (same `doc_id`, first source in config order wins),
//! and write the `docs` table in (file ordinal, row) order with its manifest.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::scan::{META_ROWS, META_SKIPPED, META_TEXT_BYTES, candidate_path};
use super::selector::Rank;
use crate::sources::InputFile;
use crate::stages::tables::{PartInfo, PartWriter};

/// The `docs` table's schema (documented in the README).
pub fn docs_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("revision", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("row", DataType::UInt64, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
        Field::new("n_chars", DataType::UInt64, false),
    ]))
}

/// Per-source totals for the manifest.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SourceCounts {
    pub rows_scanned: u64,
    pub rows_skipped: u64,
    pub text_bytes: u64,
    pub candidates: u64,
    pub sampled: u64,
    pub duplicates_removed: u64,
}

/// What the merge wrote.
pub struct MergeResult {
    pub parts: Vec<PartInfo>,
    pub counts: Vec<SourceCounts>,
    pub rows: u64,
    pub n_chars: u64,
}

/// Selects the sample from the candidate parts in `work` and writes the docs parts into `out`.
pub fn merge(files: &[&InputFile], source_names: &[String], quotas: &[u64], work: &Path, out: &Path, part_rows: usize) -> Result<MergeResult> {
    let mut counts = vec![SourceCounts::default(); quotas.len()];
    // Pass 1: ranks and ids of every candidate.
    let mut ranked: Vec<Vec<(Rank, u128)>> = vec![Vec::new(); quotas.len()];
    for f in files {
        let path = candidate_path(work, f.ordinal);
        let c = &mut counts[f.source];
        let meta = read_meta(&path)?;
        c.rows_scanned += meta.0;
        c.rows_skipped += meta.1;
        c.text_bytes += meta.2;
        for_each_batch(&path, &["key", "row", "doc_id"], |batch| {
            let keys = batch.column(0).as_primitive::<UInt64Type>();
            let rows = batch.column(1).as_primitive::<UInt64Type>();
            let ids = batch.column(2).as_string::<i32>();
            for i in 0..batch.num_rows() {
                let id = u128::from_str_radix(ids.value(i), 16).with_context(|| format!("{}: bad doc_id", path.display()))?;
                ranked[f.source].push(((keys.value(i), f.ordinal as u32, rows.value(i)), id));
            }
            c.candidates += batch.num_rows() as u64;
            Ok(())
        })?;
    }
    // The quota smallest ranks per source, then one row per text.
    let mut keep: BTreeMap<u32, HashSet<u64>> = BTreeMap::new();
    let mut seen: HashSet<u128> = HashSet::new();
    for (s, list) in ranked.iter_mut().enumerate() {
        list.sort_unstable();
        list.truncate(quotas[s] as usize);
        for ((_, ordinal, row), id) in list.iter() {
            if seen.insert(*id) {
                keep.entry(*ordinal).or_default().insert(*row);
            } else {
                counts[s].duplicates_removed += 1;
            }
        }
    }
    drop(ranked);
    // Pass 2: copy the kept rows, in file and row order.
    let schema = docs_schema();
    let mut writer = PartWriter::new(out, schema.clone(), part_rows)?;
    let (mut total, mut n_chars_total) = (0u64, 0u64);
    for f in files {
        let Some(rows_kept) = keep.get(&(f.ordinal as u32)) else { continue };
        let path = candidate_path(work, f.ordinal);
        let source = &source_names[f.source];
        for_each_batch(&path, &["row", "doc_id", "url", "text"], |batch| {
            let rows = batch.column(0).as_primitive::<UInt64Type>();
            let ids = batch.column(1).as_string::<i32>();
            let urls = batch.column(2).as_string::<i32>();
            let texts = batch.column(3).as_string::<i32>();
            let mut b = DocsBuilder::default();
            for i in 0..batch.num_rows() {
                if !rows_kept.contains(&rows.value(i)) {
                    continue;
                }
                let text = texts.value(i);
                let n_chars = text.chars().count() as u64;
                n_chars_total += n_chars;
                b.id.append_value(ids.value(i));
                b.source.append_value(source);
                b.revision.append_value(&f.revision);
                b.file.append_value(&f.file);
                b.row.append_value(rows.value(i));
                b.url.append_option((!urls.is_null(i)).then(|| urls.value(i)));
                b.text.append_value(text);
                b.n_chars.append_value(n_chars);
                counts[f.source].sampled += 1;
                total += 1;
            }
            writer.write(&b.finish(&schema)?)
        })?;
    }
    Ok(MergeResult { parts: writer.finish()?, counts, rows: total, n_chars: n_chars_total })
}

#[derive(Default)]
struct DocsBuilder {
    id: StringBuilder,
    source: StringBuilder,
    revision: StringBuilder,
    file: StringBuilder,
    row: UInt64Builder,
    url: StringBuilder,
    text: StringBuilder,
    n_chars: UInt64Builder,
}

impl DocsBuilder {
    fn finish(mut self, schema: &Arc<Schema>) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.revision.finish()),
            Arc::new(self.file.finish()),
            Arc::new(self.row.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.text.finish()),
            Arc::new(self.n_chars.finish()),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// The (rows, skipped, text bytes) a scan recorded in a candidate part.
fn read_meta(path: &Path) -> Result<(u64, u64, u64)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is damaged; delete it to rescan its input file", path.display()))?;
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.as_deref()).and_then(|v| v.parse().ok());
    match (get(META_ROWS), get(META_SKIPPED), get(META_TEXT_BYTES)) {
        (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
        _ => bail!("{} lacks its scan counts; delete it to rescan its input file", path.display()),
    }
}

/// Calls `each` with batches of the named columns of a candidate part, in the order asked.
pub fn for_each_batch(path: &Path, names: &[&str], mut each: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is damaged; delete it to rescan its input file", path.display()))?;
    let schema = builder.schema().clone();
    let indices: Vec<usize> = names.iter().map(|n| schema.index_of(n)).collect::<Result<_, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
    let reader = builder.with_projection(mask).with_batch_size(8192).build()?;
    for batch in reader {
        let batch = batch.with_context(|| format!("{} is damaged; delete it to rescan its input file", path.display()))?;
        // The projection keeps file order; reorder to the order asked.
        let cols: Vec<ArrayRef> = names.iter().map(|n| batch.column_by_name(n).cloned().expect("projected")).collect();
        let fields: Vec<Field> = names.iter().map(|n| batch.schema().field_with_name(n).expect("projected").clone()).collect();
        each(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)?;
    }
    Ok(())
}
