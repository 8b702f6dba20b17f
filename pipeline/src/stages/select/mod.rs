//! The select stage: which classified documents go into the habit-rich set, which into the
//! control set, and why the others are in neither. Rules are expressions over the `labels`
//! columns (see `expr`), recorded in the manifest. Defaults (`[select]` in the README):
//! both sets need a problem and a solution; rich = backtracking >= 1; control = all four
//! counts known and zero. A document whose rule is unknown (a missing count) is in neither;
//! with `select.sources`, a document of another source is in neither either.

pub mod config;
pub mod expr;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use self::expr::{Rule, Type, Value};
use crate::config::LoadedConfig;
use crate::run_dir::{RunDir, publish_table, staging_for};
use crate::stages::select::config::SelectConfig;
use crate::stages::stage::{Stage, StageContext};
use crate::stages::tables::{PartInfo, PartWriter, complete_table_parts, parquet_parts};

/// The stage's table: `runs/<name>/select/`.
pub const TABLE: &str = run_contract::tables::SELECT;

/// The label columns a rule may name.
const NAMES: [&str; 6] = ["backtracking", "verification", "subgoal_setting", "backward_chaining", "has_problem", "has_solution"];
const TYPES: [Type; 6] = [Type::Int, Type::Int, Type::Int, Type::Int, Type::Bool, Type::Bool];

/// Why documents are where they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SelectCounts {
    pub documents: u64,
    pub rich: u64,
    pub control: u64,
    /// `require` is false.
    pub not_required: u64,
    /// `require`, `rich` or `control` could not be decided (a label is missing).
    pub unknown: u64,
    /// Both rules hold: the rules overlap; such documents go into neither set.
    pub both: u64,
    /// From a source that `select.sources` leaves out.
    #[serde(default)]
    pub other_source: u64,
    /// Required and decided, but neither rule holds.
    pub neither: u64,
}

/// `select/_manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SelectManifest {
    pub stage: String,
    pub state: String,
    pub rules: SelectConfig,
    pub counts: SelectCounts,
    pub parts: Vec<PartInfo>,
}

/// Runs the stage over the run's labels.
/// The select stage: the `[select]` rules applied to the labels.
pub struct Select;

impl Stage for Select {
    const VERB: &'static str = "select";
    type Manifest = SelectManifest;

    async fn run(ctx: &StageContext) -> Result<SelectManifest> {
        run_select(&ctx.cfg)
    }

    fn render(m: &SelectManifest, ctx: &StageContext) -> String {
        format!("{}select: {}\n", render(m), ctx.cfg.run_path().join(TABLE).display())
    }
}

fn run_select(cfg: &LoadedConfig) -> Result<SelectManifest> {
    let rules = &cfg.config.select;
    let parse = |name: &str, text: &str| Rule::parse(text, &NAMES, &TYPES).with_context(|| format!("select.{name} = \"{text}\" is not a valid rule"));
    let (require, rich, control) = (parse("require", &rules.require)?, parse("rich", &rules.rich)?, parse("control", &rules.control)?);
    let run = RunDir::new(cfg.run_path());
    let labels = run.stage(crate::stages::classify::TABLE);
    let parts = complete_table_parts(&labels, "classify")?;
    let out = run.stage(TABLE);
    let staging = staging_for(&out)?;
    let schema = Arc::new(Schema::new(vec![Field::new("doc_id", DataType::Utf8, false), Field::new("set", DataType::Utf8, false)]));
    let mut writer = PartWriter::new(&staging, schema.clone(), cfg.config.sample.part_rows)?;
    let mut counts = SelectCounts::default();
    let allowed = docs_of_sources(&run, &rules.sources)?;
    for part in &parts {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(part)?)
            .with_context(|| format!("{} is not a readable parquet file", part.display()))?
            .with_batch_size(8192)
            .build()?;
        for batch in reader {
            let batch = batch?;
            let columns = rule_columns(&batch, part, [&require, &rich, &control])?;
            let ids = batch.column_by_name("doc_id").context("labels has no doc_id")?.as_string::<i32>().clone();
            let (mut id_out, mut set_out) = (StringBuilder::new(), StringBuilder::new());
            for row in 0..batch.num_rows() {
                let vars: Vec<Value> = columns.iter().map(|c| value_at(c.as_ref(), row)).collect();
                counts.documents += 1;
                if allowed.as_ref().is_some_and(|a| !a.contains(ids.value(row))) {
                    counts.other_source += 1;
                    continue;
                }
                let set = match (require.eval(&vars), rich.eval(&vars), control.eval(&vars)) {
                    (Some(false), _, _) => {
                        counts.not_required += 1;
                        continue;
                    }
                    (None, _, _) | (_, None, _) | (_, _, None) => {
                        counts.unknown += 1;
                        continue;
                    }
                    (Some(true), Some(true), Some(true)) => {
                        counts.both += 1;
                        continue;
                    }
                    (Some(true), Some(true), Some(false)) => {
                        counts.rich += 1;
                        "rich"
                    }
                    (Some(true), Some(false), Some(true)) => {
                        counts.control += 1;
                        "control"
                    }
                    (Some(true), Some(false), Some(false)) => {
                        counts.neither += 1;
                        continue;
                    }
                };
                id_out.append_value(ids.value(row));
                set_out.append_value(set);
            }
            let cols: Vec<ArrayRef> = vec![Arc::new(id_out.finish()), Arc::new(set_out.finish())];
            writer.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
        }
    }
    let manifest = SelectManifest { stage: TABLE.into(), state: "complete".into(), rules: rules.clone(), counts, parts: writer.finish()? };
    publish_table(&staging, &out, &manifest)?;
    Ok(manifest)
}

/// The ids of the sampled documents of `sources` (`None`: every source is allowed).
fn docs_of_sources(run: &RunDir, sources: &[String]) -> Result<Option<HashSet<String>>> {
    if sources.is_empty() {
        return Ok(None);
    }
    let mut ids = HashSet::new();
    for part in parquet_parts(&run.stage(crate::stages::sample::TABLE), "run `pipeline sample` first")? {
        let file = std::fs::File::open(&part)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is not a readable parquet file", part.display()))?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["doc_id", "source"]);
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let column =
                |name| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).with_context(|| format!("{}: no `{name}` column", part.display()));
            let (doc_ids, names) = (column("doc_id")?, column("source")?);
            for row in 0..batch.num_rows() {
                if sources.iter().any(|s| s == names.value(row)) {
                    ids.insert(doc_ids.value(row).to_string());
                }
            }
        }
    }
    Ok(Some(ids))
}

/// The columns the rules read, by name index; a column the labels lack is an error.
fn rule_columns(batch: &RecordBatch, part: &Path, rules: [&Rule; 3]) -> Result<Vec<Option<ArrayRef>>> {
    let used: Vec<usize> = rules.iter().flat_map(|r| r.uses.iter().copied()).collect();
    NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| match batch.column_by_name(name) {
            Some(c) => Ok(Some(c.clone())),
            None if used.contains(&i) => {
                bail!("{}: the select rules use `{name}`, which the labels lack; add its task to classify.tasks (or change the rules)", part.display())
            }
            None => Ok(None),
        })
        .collect()
}

fn value_at(column: Option<&ArrayRef>, row: usize) -> Value {
    let Some(c) = column else { return Value::Int(None) };
    match c.data_type() {
        DataType::Boolean => {
            let a = c.as_boolean();
            Value::Bool((!a.is_null(row)).then(|| a.value(row)))
        }
        _ => {
            let a = c.as_primitive::<Int32Type>();
            Value::Int((!a.is_null(row)).then(|| a.value(row) as i64))
        }
    }
}

/// A readable summary.
pub fn render(m: &SelectManifest) -> String {
    let c = &m.counts;
    format!(
        "select: {} documents -> rich {} ({}), control {} ({}); not required {}, unknown (missing labels) {}, neither {}, both (rules overlap) {}{}\n",
        c.documents,
        c.rich,
        m.rules.rich,
        c.control,
        m.rules.control,
        c.not_required,
        c.unknown,
        c.neither,
        c.both,
        if m.rules.sources.is_empty() { String::new() } else { format!(", other sources {} (select.sources = {:?})", c.other_source, m.rules.sources) }
    )
}
