//! The manifests of a run: each stage's `_manifest.json`, the build's `sets/_manifest.json`
//! and every set's `manifest.json`, with the files each one lists (path, rows, tokens,
//! bytes, sha256). `verify` checks those files; the catalog shows both as tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;

use crate::catalog::{SET_TABLES, STAGE_TABLES, sets_in};

/// A file a manifest lists, with what the manifest says about it.
#[derive(Clone, Debug)]
pub struct ListedFile {
    /// Relative to the run folder.
    pub path: String,
    pub split: Option<String>,
    /// `parquet`, `jsonl`, `megatron-bin`, `megatron-idx`.
    pub format: String,
    pub rows: u64,
    pub tokens: Option<u64>,
    pub bytes: u64,
    pub sha256: String,
}

/// One manifest file.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// `docs`, `labels`, `select`, `rewrites`, `sets`, `sets/rich`, `priming`,
    /// `priming/backtracking`, ...
    pub name: String,
    /// Relative to the run folder.
    pub path: String,
    pub json: Value,
    pub files: Vec<ListedFile>,
}

impl Manifest {
    /// One set's manifest (`sets/<set>`, `priming/<condition>`): shards with tokens.
    pub fn is_set(&self) -> bool {
        SET_TABLES.iter().any(|(_, folder)| self.name.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/')))
    }

    /// The index of a folder of sets (`sets`, `priming`): it lists no files of its own.
    pub fn is_set_index(&self) -> bool {
        SET_TABLES.iter().any(|(_, folder)| self.name == *folder)
    }
}

/// Every manifest of the run, in pipeline order.
pub fn find(run: &Path) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for (_, folder) in STAGE_TABLES {
        if let Some(m) = load(run, folder, &format!("{folder}/{}", run_contract::TABLE_MANIFEST))? {
            out.push(m);
        }
    }
    // The built sets and a priming run's sets: an index per folder, a manifest per set.
    for (_, folder) in SET_TABLES {
        if let Some(m) = load(run, folder, &format!("{folder}/{}", run_contract::TABLE_MANIFEST))? {
            out.push(m);
        }
        for set in sets_in(run, folder) {
            if let Some(m) = load(run, &format!("{folder}/{set}"), &format!("{folder}/{set}/{}", run_contract::set::MANIFEST))? {
                out.push(m);
            }
        }
    }
    Ok(out)
}

fn load(run: &Path, name: &str, relative: &str) -> Result<Option<Manifest>> {
    let path: PathBuf = run.join(relative);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let json: Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON: rerun the stage that wrote it", path.display()))?;
    let folder = Path::new(relative).parent().map(|p| p.display().to_string()).unwrap_or_default();
    let files = listed_in(&json, &folder).with_context(|| format!("{} lists a file that cannot be read", path.display()))?;
    Ok(Some(Manifest { name: name.to_string(), path: relative.to_string(), json, files }))
}

/// Stage manifests list `parts` (`file`, `rows`, `bytes`, `sha256`); set manifests list
/// `files` (`path`, `split`, `format`, `rows`, `tokens`, `bytes`, `sha256`). A listed
/// path must stay inside the manifest's folder (a manifest is data, not a list of places
/// to read and write).
pub fn listed_in(json: &Value, folder: &str) -> Result<Vec<ListedFile>> {
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).with_context(|| format!("`{k}` missing"));
    let path_of = |v: &Value, k: &str| {
        let path = str_of(v, k)?;
        match run_contract::relative_path_problem(&path) {
            Some(why) => bail!("the listed `{k}` {path:?} cannot be used: {why}; the manifest was damaged or edited: rebuild the stage that wrote it"),
            None => Ok(path),
        }
    };
    let u64_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).with_context(|| format!("`{k}` missing"));
    let mut out = Vec::new();
    for part in json.get("parts").and_then(Value::as_array).into_iter().flatten() {
        out.push(ListedFile {
            path: join(folder, &path_of(part, "file")?),
            split: None,
            format: "parquet".into(),
            rows: u64_of(part, "rows")?,
            tokens: None,
            bytes: u64_of(part, "bytes")?,
            sha256: str_of(part, "sha256")?,
        });
    }
    for file in json.get("files").and_then(Value::as_array).into_iter().flatten() {
        out.push(ListedFile {
            path: join(folder, &path_of(file, "path")?),
            split: str_of(file, "split").ok(),
            format: str_of(file, "format")?,
            rows: u64_of(file, "rows")?,
            tokens: file.get("tokens").and_then(Value::as_u64),
            bytes: u64_of(file, "bytes")?,
            sha256: str_of(file, "sha256")?,
        });
    }
    Ok(out)
}

fn join(folder: &str, file: &str) -> String {
    if folder.is_empty() { file.to_string() } else { format!("{folder}/{file}") }
}

/// `manifests`: name, path, stage, state, rows (what the manifest says it holds), json.
pub fn manifests_batch(found: &[Manifest]) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&Manifest) -> Option<String>| -> ArrayRef { Arc::new(found.iter().map(f).collect::<StringArray>()) };
    let schema = Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("files", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("json", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        text(&|m| Some(m.name.clone())),
        text(&|m| Some(m.path.clone())),
        text(&|m| m.json.get("stage").and_then(Value::as_str).map(str::to_string)),
        text(&|m| m.json.get("state").and_then(Value::as_str).map(str::to_string)),
        Arc::new(found.iter().map(|m| m.files.len() as u64).collect::<UInt64Array>()),
        Arc::new(found.iter().map(|m| m.files.iter().filter(|f| f.format == "parquet").map(|f| f.rows).sum::<u64>()).collect::<UInt64Array>()),
        text(&|m| Some(m.json.to_string())),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// `manifest_files`: manifest, path, split, format, rows, tokens, bytes, sha256.
pub fn files_batch(found: &[Manifest]) -> Result<RecordBatch> {
    let rows: Vec<(&Manifest, &ListedFile)> = found.iter().flat_map(|m| m.files.iter().map(move |f| (m, f))).collect();
    let text = |f: &dyn Fn(&Manifest, &ListedFile) -> Option<String>| -> ArrayRef { Arc::new(rows.iter().map(|(m, l)| f(m, l)).collect::<StringArray>()) };
    let num = |f: &dyn Fn(&ListedFile) -> Option<u64>| -> ArrayRef { Arc::new(rows.iter().map(|(_, l)| f(l)).collect::<UInt64Array>()) };
    let schema = Schema::new(vec![
        Field::new("manifest", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, true),
        Field::new("format", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("tokens", DataType::UInt64, true),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("sha256", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        text(&|m, _| Some(m.name.clone())),
        text(&|_, l| Some(l.path.clone())),
        text(&|_, l| l.split.clone()),
        text(&|_, l| Some(l.format.clone())),
        num(&|l| Some(l.rows)),
        num(&|l| l.tokens),
        num(&|l| Some(l.bytes)),
        text(&|_, l| Some(l.sha256.clone())),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
