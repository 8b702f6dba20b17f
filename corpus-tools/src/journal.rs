//! A request journal (`journal/<stage>.jsonl`) as a table with a fixed schema (the
//! pipeline's `journal::Record`). A run killed mid-write can leave a torn last line; such a
//! journal is read up to its last complete line, with a warning, instead of failing every
//! query.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::datasource::MemTable;
use datafusion::prelude::*;

/// The columns of a journal line, in the order the pipeline writes them.
pub fn schema() -> SchemaRef {
    let s = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
    let i = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        s("key", false),
        s("doc_id", false),
        s("task", false),
        s("prompt_hash", false),
        s("model", false),
        s("status", false),
        s("content", true),
        s("finish_reason", true),
        s("failure", true),
        s("reason", true),
        Field::new("retry_on_rerun", DataType::Boolean, true),
        i("prompt_tokens"),
        i("completion_tokens"),
        i("latency_ms"),
        s("endpoint", true),
        i("attempts"),
        i("finished_at"),
    ]))
}

/// The journal at `path` as a lazy table, or `None` when the file does not exist.
pub async fn read(ctx: &SessionContext, path: &Path, warnings: &mut Vec<String>) -> Result<Option<DataFrame>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let schema = schema();
    if meta.len() == 0 || ends_with_newline(path)? {
        let options = JsonReadOptions::default().schema(&schema).file_extension(".jsonl");
        let df = ctx.read_json(path.display().to_string(), options).await.with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(Some(df));
    }
    // A torn last line: read the complete lines into memory.
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    warnings.push(format!(
        "{}: the last line is incomplete ({} bytes, an interrupted write); it is left out. The next `pipeline run` cuts it.",
        path.display(),
        bytes.len() - complete
    ));
    let reader = ReaderBuilder::new(schema.clone()).build(Cursor::new(&bytes[..complete]))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().with_context(|| format!("{} is not a request journal", path.display()))?;
    let table = MemTable::try_new(schema, vec![batches])?;
    Ok(Some(ctx.read_table(Arc::new(table))?))
}

fn ends_with_newline(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}
