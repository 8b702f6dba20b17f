//! A request journal (`journal/<stage>.jsonl`) as a table with a fixed schema (the
//! pipeline's `journal::Record`). A run killed mid-write can leave a torn last line; such a
//! journal is read up to its last complete line, with a warning, instead of failing every
//! query. Parsing JSON is most of the time of a query over a million-line journal, so the
//! parsed rows are kept as parquet in `work/corpus-tools/` (rebuilt when the journal's size
//! or modification time changes; skipped, with a warning, when the run is read-only).

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::datasource::MemTable;
use datafusion::prelude::*;
use run_contract::{ColumnKind, JOURNAL_COLUMNS};

/// The columns of a journal line, in the order the pipeline writes them
/// (`run_contract::JOURNAL_COLUMNS`).
pub fn schema() -> SchemaRef {
    let field = |&(name, kind, nullable): &(&str, ColumnKind, bool)| {
        let t = match kind {
            ColumnKind::Text => DataType::Utf8,
            ColumnKind::Integer => DataType::Int64,
            ColumnKind::Flag => DataType::Boolean,
        };
        Field::new(name, t, nullable)
    };
    Arc::new(Schema::new(JOURNAL_COLUMNS.iter().map(field).collect::<Vec<_>>()))
}

/// The journal of `stage` in `run` as a table (from its parquet copy when that is current),
/// or `None` when the run has no such journal.
pub async fn read(ctx: &SessionContext, run: &Path, stage: &str, warnings: &mut Vec<String>) -> Result<Option<DataFrame>> {
    let path = run_contract::journal_path(run, stage);
    let Ok(meta) = std::fs::metadata(&path) else { return read_json(ctx, &path, warnings).await };
    if meta.len() > 0 && !ends_with_newline(&path)? {
        // Torn by a kill: read what is complete, say so, and keep no copy.
        return read_json(ctx, &path, warnings).await;
    }
    let stamp = format!("{} {:?}", meta.len(), meta.modified().ok());
    let cache = run.join("work").join("corpus-tools").join(format!("journal-{stage}.parquet"));
    let stamp_path = cache.with_extension("stamp");
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) && cache.is_file() {
        return Ok(Some(ctx.read_parquet(cache.display().to_string(), ParquetReadOptions::default()).await?));
    }
    let Some(df) = read_json(ctx, &path, warnings).await? else { return Ok(None) };
    match write_cache(df.clone(), &cache).await {
        Ok(()) => {
            pipeline::run_dir::write_atomic(&stamp_path, stamp.as_bytes())?;
            Ok(Some(ctx.read_parquet(cache.display().to_string(), ParquetReadOptions::default()).await?))
        }
        Err(e) => {
            warnings.push(format!("cannot keep a parquet copy of {} ({e:#}); queries parse the JSON each time", path.display()));
            Ok(Some(df))
        }
    }
}

/// Writes the journal's rows to `cache` (under a temporary name, then renamed).
async fn write_cache(df: DataFrame, cache: &Path) -> Result<()> {
    use futures_util::StreamExt;
    if let Some(dir) = cache.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = pipeline::run_dir::temp_sibling(cache);
    let schema = schema();
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let props = pipeline::stages::tables::table_properties(1, 128 * 1024);
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?;
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch?)?;
    }
    writer.close()?;
    pipeline::run_dir::commit_temp(&tmp, cache)
}

/// The journal at `path` parsed as JSON lines, or `None` when the file does not exist.
async fn read_json(ctx: &SessionContext, path: &Path, warnings: &mut Vec<String>) -> Result<Option<DataFrame>> {
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
