//! Scanning one input file: hash every document, offer its rank to the selector, and
//! write the candidates (with their text) to the file's candidate part, atomically.
//! A finished candidate part means the file never has to be read (or downloaded) again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;

use super::selector::{Rank, Selector};
use crate::hashing::{doc_hash, doc_id, sample_key};
use crate::run_dir::{commit_temp, temp_sibling};
use crate::sources::InputFile;
use crate::sources::read::{ReadSpec, read_docs};
use crate::stages::tables::table_properties;

/// Counts of one scanned file, stored in its candidate part's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub rows: u64,
    pub skipped: u64,
    pub text_bytes: u64,
    pub candidates: u64,
}

pub const META_ROWS: &str = "habits.rows_scanned";
pub const META_SKIPPED: &str = "habits.rows_skipped";
pub const META_TEXT_BYTES: &str = "habits.text_bytes";

/// The schema of a candidate part.
pub fn candidate_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::UInt64, false),
        Field::new("row", DataType::UInt64, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
    ]))
}

/// `cand-00042.parquet` for the input file with ordinal 42.
pub fn candidate_path(work: &Path, ordinal: usize) -> PathBuf {
    work.join(format!("cand-{ordinal:05}.parquet"))
}

/// What a scan needs besides the file.
pub struct ScanParams<'a> {
    pub seed: u64,
    pub min_chars: u64,
    pub batch_rows: usize,
    pub text_column: &'a str,
    pub url_column: &'a str,
    pub source_name: &'a str,
}

/// Candidate parts are scratch: LZ4 costs a fraction of zstd's CPU on the hot path.
fn scratch_properties() -> parquet::file::properties::WriterProperties {
    table_properties(1, 64 * 1024).into_builder().set_compression(parquet::basic::Compression::LZ4_RAW).build()
}

/// Scans `input` (its bytes at `path`) and writes its candidate part into `work`.
pub fn scan_file(input: &InputFile, path: &Path, params: &ScanParams, selector: &Selector, work: &Path) -> Result<ScanStats> {
    let out = candidate_path(work, input.ordinal);
    let tmp = temp_sibling(&out);
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let schema = candidate_schema();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(scratch_properties()))?;
    let mut stats = ScanStats::default();
    let spec = ReadSpec { text_column: params.text_column, url_column: params.url_column, batch_rows: params.batch_rows, source_name: params.source_name };
    let ordinal = u32::try_from(input.ordinal).context("more than 4 billion input files")?;
    let mut ranks: Vec<Rank> = Vec::with_capacity(params.batch_rows);
    let mut hashes: Vec<(usize, u128)> = Vec::with_capacity(params.batch_rows);
    let rows = read_docs(path, input.format, &spec, |batch| {
        ranks.clear();
        hashes.clear();
        for i in 0..batch.len() {
            let Some(text) = batch.text(i).filter(|t| keeps(t, params.min_chars)) else {
                stats.skipped += 1;
                continue;
            };
            stats.text_bytes += text.len() as u64;
            let h = doc_hash(text);
            ranks.push((sample_key(params.seed, h), ordinal, batch.first_row() + i as u64));
            hashes.push((i, h));
        }
        let chosen = selector.offer(input.source, &ranks);
        let n = chosen.iter().filter(|c| **c).count();
        if n == 0 {
            return Ok(());
        }
        let mut key = UInt64Builder::with_capacity(n);
        let mut row = UInt64Builder::with_capacity(n);
        let mut id = StringBuilder::with_capacity(n, n * 32);
        let mut url = StringBuilder::new();
        let mut text = StringBuilder::new();
        for ((rank, (i, h)), c) in ranks.iter().zip(&hashes).zip(&chosen) {
            if !c {
                continue;
            }
            key.append_value(rank.0);
            row.append_value(rank.2);
            id.append_value(doc_id(*h));
            url.append_option(batch.url(*i));
            text.append_value(batch.text(*i).unwrap_or_default());
        }
        stats.candidates += n as u64;
        let columns: Vec<ArrayRef> =
            vec![Arc::new(key.finish()), Arc::new(row.finish()), Arc::new(id.finish()), Arc::new(url.finish()), Arc::new(text.finish())];
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
        Ok(())
    });
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            drop(writer);
            let _ = std::fs::remove_file(&tmp);
            return Err(e.context(format!("source `{}`, file `{}`", params.source_name, input.file)));
        }
    };
    stats.rows = rows;
    for (k, v) in [(META_ROWS, stats.rows), (META_SKIPPED, stats.skipped), (META_TEXT_BYTES, stats.text_bytes)] {
        writer.append_key_value_metadata(KeyValue::new(k.to_string(), v.to_string()));
    }
    let file = writer.into_inner()?;
    file.sync_all()?;
    commit_temp(&tmp, &out)?;
    Ok(stats)
}

/// Empty and null texts never count; shorter than `min_chars` characters are skipped.
fn keeps(text: &str, min_chars: u64) -> bool {
    if text.is_empty() {
        return false;
    }
    let min = min_chars as usize;
    min == 0 || text.len() >= 4 * min || text.chars().count() >= min
}
