//! Reading documents from an input file in batches: parquet (only the text and url
//! columns are decoded) or JSONL (one JSON object per line). Problems name the file,
//! the row or line, and the fix.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::{Array, ArrayRef, LargeStringArray, StringArray, StringViewArray};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::Format;

/// The columns to read and how many rows at a time.
#[derive(Clone, Debug)]
pub struct ReadSpec<'a> {
    pub text_column: &'a str,
    pub url_column: &'a str,
    pub batch_rows: usize,
    /// Shown in errors: which config entry to fix.
    pub source_name: &'a str,
}

/// A batch of documents: rows `first_row .. first_row + len()` of the file.
pub enum DocBatch {
    Arrow { first_row: u64, text: ArrayRef, url: Option<ArrayRef> },
    Owned { first_row: u64, text: Vec<Option<String>>, url: Vec<Option<String>> },
}

impl DocBatch {
    pub fn first_row(&self) -> u64 {
        match self {
            DocBatch::Arrow { first_row, .. } | DocBatch::Owned { first_row, .. } => *first_row,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            DocBatch::Arrow { text, .. } => text.len(),
            DocBatch::Owned { text, .. } => text.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of row `i` of the batch (None when null).
    pub fn text(&self, i: usize) -> Option<&str> {
        match self {
            DocBatch::Arrow { text, .. } => str_at(text, i),
            DocBatch::Owned { text, .. } => text[i].as_deref(),
        }
    }

    /// The url of row `i` of the batch (None when null or absent).
    pub fn url(&self, i: usize) -> Option<&str> {
        match self {
            DocBatch::Arrow { url, .. } => url.as_ref().and_then(|u| str_at(u, i)),
            DocBatch::Owned { url, .. } => url[i].as_deref(),
        }
    }
}

fn str_at(array: &ArrayRef, i: usize) -> Option<&str> {
    if array.is_null(i) {
        return None;
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        Some(a.value(i))
    } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        Some(a.value(i))
    } else {
        any.downcast_ref::<StringViewArray>().map(|a| a.value(i))
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Calls `each` for every batch of the file; returns the number of rows read.
pub fn read_docs(path: &Path, format: Format, spec: &ReadSpec, mut each: impl FnMut(DocBatch) -> Result<()>) -> Result<u64> {
    match format {
        Format::Parquet => read_parquet(path, spec, &mut each),
        Format::Jsonl => read_jsonl(path, spec, &mut each),
    }
}

fn read_parquet(path: &Path, spec: &ReadSpec, each: &mut dyn FnMut(DocBatch) -> Result<()>) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        anyhow!(
            "{} is not a readable parquet file ({e}); delete it (a hub file is then fetched again) or fix or remove it in source `{}`",
            path.display(),
            spec.source_name
        )
    })?;
    let schema = builder.schema().clone();
    let find = |name: &str| schema.fields().iter().position(|f| f.name() == name);
    let Some(text_idx) = find(spec.text_column) else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        bail!(
            "{} has no column `{}` (its columns: {}); set text_column on source `{}` to the column that holds the document text",
            path.display(),
            spec.text_column,
            names.join(", "),
            spec.source_name
        );
    };
    if !is_string(schema.field(text_idx).data_type()) {
        bail!(
            "{}: column `{}` is {}, not a string; set text_column on source `{}` to a string column",
            path.display(),
            spec.text_column,
            schema.field(text_idx).data_type(),
            spec.source_name
        );
    }
    let url_idx = find(spec.url_column).filter(|&i| is_string(schema.field(i).data_type()));
    let mut roots = vec![text_idx];
    roots.extend(url_idx);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder.with_projection(mask).with_batch_size(spec.batch_rows).build().with_context(|| format!("cannot read {}", path.display()))?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| anyhow!("{} is corrupt near row {row} ({e}); delete it (a hub file is then fetched again) or fix it", path.display()))?;
        let text = batch.column_by_name(spec.text_column).cloned().context("projected text column missing")?;
        let url = url_idx.and_then(|_| batch.column_by_name(spec.url_column).cloned());
        let n = batch.num_rows() as u64;
        each(DocBatch::Arrow { first_row: row, text, url })?;
        row += n;
    }
    Ok(row)
}

fn read_jsonl(path: &Path, spec: &ReadSpec, each: &mut dyn FnMut(DocBatch) -> Result<()>) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let (mut text, mut url) = (Vec::new(), Vec::new());
    let mut first_row = 0u64;
    let mut row = 0u64;
    for (line_no, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read the line (is it UTF-8?)", path.display(), line_no + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: not a JSON object; each line must be one JSON object", path.display(), line_no + 1))?;
        let obj = value.as_object().ok_or_else(|| anyhow!("{}:{}: a JSON line must be an object", path.display(), line_no + 1))?;
        let t = match obj.get(spec.text_column) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) => None,
            Some(other) => bail!("{}:{}: `{}` is {}, not a string", path.display(), line_no + 1, spec.text_column, kind_of(other)),
            None => bail!(
                "{}:{}: no key `{}`; set text_column on source `{}` to the key that holds the document text",
                path.display(),
                line_no + 1,
                spec.text_column,
                spec.source_name
            ),
        };
        text.push(t);
        url.push(obj.get(spec.url_column).and_then(|u| u.as_str()).map(str::to_string));
        row += 1;
        if text.len() == spec.batch_rows {
            each(DocBatch::Owned { first_row, text: std::mem::take(&mut text), url: std::mem::take(&mut url) })?;
            first_row = row;
        }
    }
    if !text.is_empty() {
        each(DocBatch::Owned { first_row, text, url })?;
    }
    Ok(row)
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
        _ => "something else",
    }
}
