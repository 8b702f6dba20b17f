//! The file checks: each listed file's size, sha256, rows and tokens recomputed from the
//! bytes; files beside them that no manifest lists; per set, the split totals against the
//! shards.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt32Type;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pipeline::stages::build::megatron::Index;
use serde_json::Value;

use super::Check;
use crate::manifests::{ListedFile, Manifest};

/// One check per manifest (its files), plus one per set for the totals.
pub fn check(run: &Path, found: &[Manifest]) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for m in found {
        let mut c = Check::new(format!("{}: {} listed files (size, sha256, rows{})", m.path, m.files.len(), if m.is_set() { ", tokens" } else { "" }));
        let extra = special_tokens(&m.json);
        for f in &m.files {
            if let Err(e) = check_file(run, f, extra) {
                c.fail(format!("{}: {e:#}", f.path));
            }
        }
        for stray in unlisted(run, m) {
            c.fail(format!("{stray}: on disk but not in the manifest (a leftover of another run? move it away)"));
        }
        checks.push(c);
        if m.is_set() {
            checks.push(totals(m));
        }
    }
    Ok(checks)
}

/// Special tokens packed around each row besides prompt and completion (bos, eos).
fn special_tokens(json: &Value) -> u64 {
    let tokenizer = json.get("tokenizer");
    ["bos", "eos"].iter().filter(|k| tokenizer.and_then(|t| t.get(**k)).is_some_and(|v| !v.is_null())).count() as u64
}

fn check_file(run: &Path, f: &ListedFile, extra: u64) -> Result<()> {
    let path = run.join(&f.path);
    let meta = std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("missing ({e})"))?;
    if meta.len() != f.bytes {
        anyhow::bail!("{} bytes on disk, the manifest says {}", meta.len(), f.bytes);
    }
    let sha = pipeline::run_dir::sha256_file(&path)?;
    if sha != f.sha256 {
        anyhow::bail!("sha256 {sha}, the manifest says {}", f.sha256);
    }
    let (rows, tokens) = match f.format.as_str() {
        "parquet" => parquet_counts(&path, f.tokens.is_some(), extra)?,
        "jsonl" => jsonl_counts(&path, extra)?,
        "megatron-idx" => {
            let index = Index::read(&path)?;
            (index.lengths.len() as u64, Some(index.tokens()))
        }
        "megatron-bin" => {
            let index = Index::read(&path.with_extension("idx"))?;
            let expected = index.tokens() * index.dtype.bytes() as u64;
            if meta.len() != expected {
                anyhow::bail!("{} bytes, but its index describes {} tokens of {} bytes ({expected} bytes)", meta.len(), index.tokens(), index.dtype.bytes());
            }
            (index.lengths.len() as u64, Some(index.tokens()))
        }
        other => anyhow::bail!("unknown format {other:?} in the manifest"),
    };
    if rows != f.rows {
        anyhow::bail!("{rows} rows, the manifest says {}", f.rows);
    }
    if let (Some(expected), Some(found)) = (f.tokens, tokens)
        && expected != found
    {
        anyhow::bail!("{found} tokens, the manifest says {expected}");
    }
    Ok(())
}

/// Rows from the footer; with `tokens`, the packed tokens: prompt + completion + specials per row.
fn parquet_counts(path: &Path, tokens: bool, extra: u64) -> Result<(u64, Option<u64>)> {
    let file = std::fs::File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).context("not a parquet file")?;
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    if !tokens {
        return Ok((rows, None));
    }
    let schema = builder.parquet_schema();
    let wanted: Vec<usize> = (0..schema.num_columns()).filter(|&i| matches!(schema.column(i).name(), "prompt_tokens" | "completion_tokens")).collect();
    if wanted.len() != 2 {
        anyhow::bail!("no prompt_tokens / completion_tokens columns");
    }
    let mask = ProjectionMask::leaves(schema, wanted);
    let mut sum = 0u64;
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        for col in batch.columns() {
            let values = col.as_primitive_opt::<UInt32Type>().context("token counts are not uint32")?;
            sum += values.iter().flatten().map(u64::from).sum::<u64>();
        }
        sum += extra * batch.num_rows() as u64;
    }
    Ok((rows, Some(sum)))
}

fn jsonl_counts(path: &Path, extra: u64) -> Result<(u64, Option<u64>)> {
    let reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let (mut rows, mut tokens) = (0u64, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("line {} is not JSON", i + 1))?;
        let count = |k: &str| v.get(k).and_then(Value::as_u64).with_context(|| format!("line {}: no {k}", i + 1));
        tokens += count("prompt_tokens")? + count("completion_tokens")? + extra;
        rows += 1;
    }
    Ok((rows, Some(tokens)))
}

/// Files in the folders a manifest covers that it does not list.
fn unlisted(run: &Path, m: &Manifest) -> Vec<String> {
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    let folders: Vec<String> = if m.is_set() {
        [run_contract::set::DATA, run_contract::set::JSONL, run_contract::set::MEGATRON].iter().map(|d| format!("{}/{d}", m.name)).collect()
    } else if m.is_set_index() {
        Vec::new()
    } else {
        vec![m.name.clone()]
    };
    let mut out = Vec::new();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(run.join(&folder)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let rel = format!("{folder}/{name}");
            if !listed.contains(rel.as_str()) {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// A set's `rows` and `packed_tokens` per split against the sum of its shards.
fn totals(m: &Manifest) -> Check {
    let mut c = Check::new(format!("{}: rows and packed tokens per split = the sum of the shards", m.path));
    for format in ["parquet", "jsonl", "megatron-idx"] {
        let mut rows: BTreeMap<String, u64> = BTreeMap::new();
        let mut tokens: BTreeMap<String, u64> = BTreeMap::new();
        for f in m.files.iter().filter(|f| f.format == format) {
            let split = f.split.clone().unwrap_or_default();
            *rows.entry(split.clone()).or_default() += f.rows;
            *tokens.entry(split).or_default() += f.tokens.unwrap_or(0);
        }
        for (field, sums) in [("rows", &rows), ("packed_tokens", &tokens)] {
            let stated: BTreeMap<String, u64> = m
                .json
                .get(field)
                .and_then(Value::as_object)
                .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
                .unwrap_or_default();
            if &stated != sums {
                c.fail(format!("`{field}` says {stated:?}, the {format} shards hold {sums:?}"));
            }
        }
    }
    c
}
