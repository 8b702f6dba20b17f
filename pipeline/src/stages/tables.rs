//! Writing a run table: parquet part files (`part-00000.parquet`, ...) of at most
//! `rows_per_part` rows each, zstd-compressed, with a checksum per part for the manifest.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::run_dir::{part_name, sha256_file};

/// A finished part, as listed in a manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartInfo {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Writer settings for run tables: zstd, one row group per part up to 128k rows.
pub fn table_properties(zstd_level: i32, row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level).unwrap_or_default()))
        .set_max_row_group_row_count(Some(row_group_rows.clamp(1, 128 * 1024)))
        .set_created_by("habits pipeline".to_string())
        .build()
}

/// Writes batches into numbered part files in `dir`.
pub struct PartWriter {
    dir: PathBuf,
    schema: Arc<Schema>,
    rows_per_part: usize,
    current: Option<(ArrowWriter<File>, PathBuf, usize)>,
    parts: Vec<PartInfo>,
}

impl PartWriter {
    pub fn new(dir: &Path, schema: Arc<Schema>, rows_per_part: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(PartWriter { dir: dir.to_path_buf(), schema, rows_per_part: rows_per_part.max(1), current: None, parts: Vec::new() })
    }

    /// Appends a batch, starting new parts as they fill.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                let path = self.dir.join(part_name(self.parts.len()));
                let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
                let props = table_properties(3, self.rows_per_part);
                let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(props))?;
                self.current = Some((writer, path, 0));
            }
            let (writer, _, rows) = self.current.as_mut().expect("a part is open");
            let take = (self.rows_per_part - *rows).min(batch.num_rows() - offset);
            writer.write(&batch.slice(offset, take))?;
            *rows += take;
            offset += take;
            if *rows == self.rows_per_part {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((writer, path, rows)) = self.current.take() {
            let file = writer.into_inner()?;
            file.sync_all()?;
            let bytes = std::fs::metadata(&path)?.len();
            self.parts.push(PartInfo {
                file: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                rows: rows as u64,
                bytes,
                sha256: sha256_file(&path)?,
            });
        }
        Ok(())
    }

    /// Closes the last part; an empty table still gets one (empty) part with its schema.
    pub fn finish(mut self) -> Result<Vec<PartInfo>> {
        if self.parts.is_empty() && self.current.is_none() {
            let empty = RecordBatch::new_empty(self.schema.clone());
            let path = self.dir.join(part_name(0));
            let file = File::create(&path)?;
            let mut writer = ArrowWriter::try_new(file, self.schema.clone(), Some(table_properties(3, 1)))?;
            writer.write(&empty)?;
            self.current = Some((writer, path, 0));
        }
        self.close_current()?;
        Ok(self.parts)
    }
}

/// The parquet files of a table: a file, or a folder's `*.parquet`, sorted. `hint` says how
/// to make the table when it is missing or empty.
/// The parts of table `dir` written by stage `stage`, refused when its manifest says the
/// stage stopped with too many failed requests (state `incomplete`).
pub fn complete_table_parts(dir: &Path, stage: &str) -> Result<Vec<PathBuf>> {
    let parts = parquet_parts(dir, &format!("run `pipeline {stage}` first"))?;
    #[derive(serde::Deserialize)]
    struct State {
        state: String,
    }
    let manifest = dir.join(run_contract::TABLE_MANIFEST);
    if let Some(State { state }) = crate::run_dir::read_json::<State>(&manifest)?.filter(|m| m.state != "complete") {
        bail!(
            "{} has state \"{state}\": `pipeline {stage}` stopped because too many of its requests failed (its manifest counts them by class); \
             fix the cause and run `pipeline {stage}` again, or raise llm.max_failed_share to accept the table",
            dir.display()
        );
    }
    Ok(parts)
}

pub fn parquet_parts(input: &Path, hint: &str) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("no table at {}: {hint}", input.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    parts.sort();
    if parts.is_empty() {
        bail!("{} holds no parquet files: {hint}", input.display());
    }
    Ok(parts)
}
