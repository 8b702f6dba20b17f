//! A run's tables under SQL names: every table the pipeline wrote (parquet parts, the
//! request journals, the built sets) registered lazily in one DataFusion session, plus the
//! manifests flattened into two small tables. The names and columns are documented in the
//! README ("Querying a run"); a table whose files do not exist yet is simply absent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::*;

use run_contract::tables;

use crate::journal;
use crate::manifests;

/// The parquet run tables: SQL name, folder under the run. `rollouts` is a PPO run's
/// (`trainer ppo` with `[track]`): the responses that behavior tracking classifies.
pub const STAGE_TABLES: [(&str, &str); 5] =
    [("docs", tables::DOCS), ("labels", tables::LABELS), ("selection", tables::SELECT), ("rewrites", tables::REWRITES), ("rollouts", tables::ROLLOUTS)];

/// The request journals: SQL name, stage (file `journal/<stage>.jsonl`); `priming` is
/// `pipeline prime`'s.
pub const JOURNALS: [(&str, &str); 3] = [("classify_requests", "classify"), ("rewrite_requests", "rewrite"), ("priming_requests", "priming")];

/// Folders of sets in the layout of a built set (`<folder>/<name>/data/*.parquet`): SQL
/// name, folder under the run. `priming` holds `pipeline prime`'s sets, one per condition.
pub const SET_TABLES: [(&str, &str); 2] = [("sets", tables::SETS), ("priming_sets", tables::PRIMING)];

/// One registered table, for listings and error messages.
#[derive(Clone, Debug)]
pub struct TableInfo {
    pub name: String,
    /// Where its rows come from, relative to the run.
    pub origin: String,
    pub schema: SchemaRef,
}

/// A run's tables in one session.
pub struct Catalog {
    pub run: PathBuf,
    pub ctx: SessionContext,
    pub tables: Vec<TableInfo>,
    /// Things worth a line on stderr (a torn journal line, ...).
    pub warnings: Vec<String>,
}

impl Catalog {
    /// Registers every table the run has; fails only when the folder is not a run.
    pub async fn open(run: &Path) -> Result<Self> {
        if !run.is_dir() {
            bail!("no run at {}: give the run's folder, e.g. --run runs/demo", run.display());
        }
        let config = SessionConfig::new().with_information_schema(true).with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
        let mut catalog = Catalog { run: run.to_path_buf(), ctx: SessionContext::new_with_config(config), tables: Vec::new(), warnings: Vec::new() };
        for (name, folder) in STAGE_TABLES {
            let parts = parquet_files(&run.join(folder))?;
            if !parts.is_empty() {
                catalog.register_parquet(name, &format!("{folder}/*.parquet"), parts).await?;
            }
        }
        for (name, folder) in SET_TABLES {
            let parts: Vec<PathBuf> =
                sets_in(run, folder).iter().flat_map(|s| parquet_files(&run.join(folder).join(s).join(run_contract::set::DATA)).unwrap_or_default()).collect();
            if !parts.is_empty() {
                catalog.register_parquet(name, &format!("{folder}/*/data/*.parquet"), parts).await?;
            }
        }
        catalog.register_journals().await?;
        catalog.register_manifests()?;
        if catalog.tables.is_empty() {
            bail!(
                "{} holds no run tables (docs/, labels/, select/, rewrites/, sets/, priming/, journal/, rollouts/): is it a run folder? `pipeline run` makes one, `pipeline prime` too, and `trainer ppo` with [track]",
                run.display()
            );
        }
        Ok(catalog)
    }

    async fn register_parquet(&mut self, name: &str, origin: &str, files: Vec<PathBuf>) -> Result<()> {
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        let df = self.ctx.read_parquet(paths, ParquetReadOptions::default()).await.with_context(|| format!("cannot read the {name} table ({origin})"))?;
        self.add(name, origin, df)
    }

    fn add(&mut self, name: &str, origin: &str, df: DataFrame) -> Result<()> {
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        self.ctx.register_table(name, df.into_view())?;
        self.tables.push(TableInfo { name: name.to_string(), origin: origin.to_string(), schema });
        Ok(())
    }

    /// One table per journal (`classify_requests`, ...), and `requests` (all of them, with a
    /// `stage` column).
    async fn register_journals(&mut self) -> Result<()> {
        let mut all: Option<DataFrame> = None;
        for (name, stage) in JOURNALS {
            let Some(df) = journal::read(&self.ctx, &self.run, stage, &mut self.warnings).await? else { continue };
            let origin = format!("journal/{stage}.jsonl");
            self.add(name, &origin, df.clone())?;
            let mut columns = vec![lit(stage).alias("stage")];
            columns.extend(journal::schema().fields().iter().map(|f| col(f.name())));
            let tagged = df.select(columns)?;
            all = Some(match all {
                None => tagged,
                Some(prev) => prev.union(tagged)?,
            });
        }
        if let Some(df) = all {
            self.add("requests", "journal/*.jsonl", df)?;
        }
        Ok(())
    }

    /// `manifests` (one row per manifest file) and `manifest_files` (one row per part or
    /// shard a manifest lists).
    fn register_manifests(&mut self) -> Result<()> {
        let found = manifests::find(&self.run)?;
        if found.is_empty() {
            return Ok(());
        }
        for (name, batch) in [("manifests", manifests::manifests_batch(&found)?), ("manifest_files", manifests::files_batch(&found)?)] {
            let schema = batch.schema();
            let table = MemTable::try_new(schema.clone(), vec![vec![batch]])?;
            self.ctx.register_table(name, Arc::new(table))?;
            self.tables.push(TableInfo { name: name.into(), origin: "*/_manifest.json, sets/*/manifest.json".into(), schema });
        }
        Ok(())
    }

    /// Runs one SQL statement.
    pub async fn sql(&self, query: &str) -> Result<DataFrame, datafusion::error::DataFusionError> {
        self.ctx.sql(query).await
    }

    /// The tables and their columns, one per line (for `\d` and for SQL errors).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for t in &self.tables {
            let cols: Vec<String> = t.schema.fields().iter().map(|f| format!("{} {}", f.name(), type_name(f))).collect();
            s.push_str(&format!("  {} ({}): {}\n", t.name, t.origin, cols.join(", ")));
        }
        s
    }
}

fn type_name(f: &Field) -> String {
    match f.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".to_string(),
        other => other.to_string().to_lowercase(),
    }
}

/// The built sets (`sets/<set>/` folders with a `data/` folder), sorted.
pub fn set_names(run: &Path) -> Vec<String> {
    sets_in(run, "sets")
}

/// The sets under `<run>/<folder>/` (folders holding a `data/` folder), sorted.
pub fn sets_in(run: &Path, folder: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run.join(folder)) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.flatten().filter(|e| e.path().join(run_contract::set::DATA).is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The `*.parquet` files directly in `dir`, sorted; none when the folder is missing.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "parquet")).collect();
    files.sort();
    Ok(files)
}

impl Catalog {
    /// Runs a query and returns its rows as JSON objects (for reports and checks over small
    /// results).
    pub async fn rows(&self, query: &str) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let df = self.sql(query).await.with_context(|| format!("query failed: {query}"))?;
        json_rows(df).await
    }

    /// Whether a table is registered.
    pub fn has(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t.name == name)
    }

    /// Whether a table has a column.
    pub fn has_column(&self, table: &str, column: &str) -> bool {
        self.tables.iter().any(|t| t.name == table && t.schema.field_with_name(column).is_ok())
    }
}

/// A query's rows as JSON objects (every column present, nulls included).
pub async fn json_rows(df: DataFrame) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let batches = df.collect().await?;
    let mut writer = datafusion::arrow::json::WriterBuilder::new().with_explicit_nulls(true).build::<_, datafusion::arrow::json::writer::JsonArray>(Vec::new());
    for b in &batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&bytes)?)
}
