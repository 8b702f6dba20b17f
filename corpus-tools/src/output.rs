//! Query results out: an aligned text table (long cells cut, newlines shown as `\n`), CSV,
//! JSON (one array), JSON lines or parquet; to stdout or, written whole under a temporary
//! name and then renamed, to a file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::writer::{JsonArray, LineDelimited, WriterBuilder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::DataFrame;
use futures_util::StreamExt;

/// How results are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Jsonl,
    Parquet,
}

/// Runs the query behind `df` and writes its rows; returns the row count.
pub async fn write(df: DataFrame, format: Format, out: Option<&Path>, max_width: usize) -> Result<u64> {
    match out {
        Some(path) => {
            let tmp = pipeline::run_dir::temp_sibling(path);
            let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            let result = write_to(df, format, std::io::BufWriter::new(file), max_width).await;
            match result {
                Ok(rows) => {
                    pipeline::run_dir::commit_temp(&tmp, path)?;
                    Ok(rows)
                }
                Err(e) => {
                    std::fs::remove_file(&tmp).ok();
                    Err(e)
                }
            }
        }
        None if format == Format::Parquet => bail!("parquet is binary: give --out FILE.parquet"),
        None => write_to(df, format, std::io::BufWriter::new(std::io::stdout()), max_width).await,
    }
}

async fn write_to<W: Write + Send>(df: DataFrame, format: Format, mut w: W, max_width: usize) -> Result<u64> {
    let schema: SchemaRef = std::sync::Arc::new(df.schema().as_arrow().clone());
    if format == Format::Table {
        let batches = df.collect().await?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        w.write_all(render_table(&schema, &batches, max_width)?.as_bytes())?;
        w.flush()?;
        return Ok(rows);
    }
    let mut stream = df.execute_stream().await?;
    let mut rows = 0u64;
    match format {
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut w);
            let mut wrote_any = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
                wrote_any = true;
            }
            if !wrote_any {
                writer.write(&RecordBatch::new_empty(schema))?;
            }
        }
        Format::Json => {
            let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(&mut w);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
            drop(writer);
            w.write_all(b"\n")?;
        }
        Format::Jsonl => {
            let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(&mut w);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
        }
        Format::Parquet => {
            let mut writer = ArrowWriter::try_new(&mut w, schema, Some(pipeline::stages::tables::table_properties(3, 128 * 1024)))?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.close()?;
        }
        Format::Table => unreachable!("handled above"),
    }
    w.flush()?;
    Ok(rows)
}

/// An aligned table: a header, a rule, the rows, and the row count. Cells longer than
/// `max_width` characters (0 = no limit) are cut with `…`.
pub fn render_table(schema: &SchemaRef, batches: &[RecordBatch], max_width: usize) -> Result<String> {
    let options = FormatOptions::new().with_null("NULL");
    let headers: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in batches {
        let formatters = batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| cell(&f.value(i).to_string(), max_width)).collect());
        }
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!(" {c}{} ", " ".repeat(w - c.chars().count()))).collect();
        padded.join("|").trim_end().to_string() + "\n"
    };
    let mut s = line(&headers);
    s.push_str(&widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
    s.push('\n');
    for row in &rows {
        s.push_str(&line(row));
    }
    s.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    Ok(s)
}

fn cell(value: &str, max_width: usize) -> String {
    let flat = value.replace('\n', "\\n").replace('\t', "\\t").replace('\r', "\\r");
    if max_width == 0 || flat.chars().count() <= max_width {
        return flat;
    }
    let mut cut: String = flat.chars().take(max_width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn a_table_aligns_cuts_long_cells_and_shows_nulls_and_newlines() {
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true), Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![Some("a\nb"), None, Some("a very long value")])), Arc::new(Int64Array::from(vec![1, 22, 333]))],
        )
        .unwrap();
        let text = render_table(&schema, &[batch], 8).unwrap();
        assert_eq!(text, " name     | n\n----------+-----\n a\\nb     | 1\n NULL     | 22\n a very … | 333\n(3 rows)\n");
    }
}
