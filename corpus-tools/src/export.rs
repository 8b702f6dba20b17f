//! `corpus-tools export`: the built sets in one format, for another trainer, each file
//! checked against the run's manifest on the way. `parquet` and `jsonl` gain a `text`
//! column (prompt + completion) for trainers that read one text field; `megatron` copies
//! the packed ids; `hf` lays both sets out as one hub dataset repo with a config per set.
//! Every set folder gets a `manifest.json` listing exactly the exported files and a
//! dataset card. The export is written to a staging folder and moved into place whole.

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchReader, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pipeline::run_dir::sha256_file;
use pipeline::stages::build::SetManifest;
use pipeline::stages::build::card::{self, Files};
use serde_json::Value;

use crate::catalog::set_names;
use crate::manifests::ListedFile;

/// The export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Jsonl,
    Megatron,
    Hf,
}

pub async fn run(run: &Path, format: ExportFormat, out: &Path, only: Option<&str>) -> Result<()> {
    let mut sets = set_names(run);
    if sets.is_empty() {
        bail!("{} has no built sets (sets/<set>/data/): run the build stage first (`pipeline build --config ...`)", run.display());
    }
    if let Some(one) = only {
        if !sets.iter().any(|s| s == one) {
            bail!("{} has no set {one:?}; it has {}", run.display(), sets.join(", "));
        }
        sets.retain(|s| s == one);
    }
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty: remove it or choose another --out (nothing was written)", out.display());
    }
    let staging = pipeline::run_dir::staging_for(out)?;
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let mut manifests = Vec::new();
    for set in &sets {
        let set_dir = run.join(run_contract::tables::SETS).join(set);
        let manifest_path = set_dir.join(run_contract::set::MANIFEST);
        let bytes = std::fs::read(&manifest_path).with_context(|| format!("cannot read {}: run the build stage again", manifest_path.display()))?;
        let json: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON: run the build stage again", manifest_path.display()))?;
        let typed: SetManifest =
            serde_json::from_value(json.clone()).with_context(|| format!("{} is not a set manifest of this version", manifest_path.display()))?;
        let target = if format == ExportFormat::Hf { staging.clone() } else { staging.join(set) };
        let files = export_set(&set_dir, &json, format, &target, set)?;
        let rows: u64 = files.iter().filter(|f| matches!(f.format.as_str(), "parquet" | "jsonl" | "megatron-idx")).map(|f| f.rows).sum();
        eprintln!("{set}: {} files, {rows} rows", files.len());
        manifests.push((set.clone(), json, typed, files));
    }
    match format {
        ExportFormat::Hf => write_hub_repo(&staging, run, &manifests)?,
        _ => {
            for (set, json, typed, files) in &manifests {
                let dir = staging.join(set);
                write_manifest(&dir.join("manifest.json"), json, files, format, run)?;
                let kinds = match format {
                    ExportFormat::Parquet => Files::Parquet,
                    ExportFormat::Jsonl => Files::Jsonl,
                    _ => Files::Megatron,
                };
                let mut readme = card::render(typed, &[kinds]);
                if format != ExportFormat::Megatron {
                    readme.push_str("| text | prompt + completion, for trainers that read one text field (added by `corpus-tools export`) |\n");
                }
                pipeline::run_dir::write_atomic(&dir.join("README.md"), readme.as_bytes())?;
            }
        }
    }
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("cannot replace the empty folder {}", out.display()))?;
    }
    std::fs::rename(&staging, out).with_context(|| format!("cannot move the export to {}", out.display()))?;
    println!("exported {} set(s) as {format:?} to {}", sets.len(), out.display());
    Ok(())
}

/// Writes one set's files of the format; returns them as the new manifest lists them
/// (paths relative to the set's folder, or to the repo for `hf`).
fn export_set(set_dir: &Path, json: &Value, format: ExportFormat, target: &Path, set: &str) -> Result<Vec<ListedFile>> {
    let listed = crate::manifests::listed_in(json, "")?;
    let wanted = |f: &ListedFile| match format {
        ExportFormat::Parquet | ExportFormat::Hf => f.format == "parquet",
        ExportFormat::Jsonl => f.format == "jsonl",
        ExportFormat::Megatron => f.format.starts_with("megatron"),
    };
    let mut out = Vec::new();
    for f in listed.iter().filter(|f| wanted(f)) {
        let relative = f.path.as_str();
        let source = set_dir.join(relative);
        let sha =
            sha256_file(&source).with_context(|| format!("the set's file {} is missing: `corpus-tools verify` lists what is damaged", source.display()))?;
        if sha != f.sha256 {
            bail!(
                "{} does not match its manifest (sha256 {sha}, listed {}): `corpus-tools verify --run ...` shows what is damaged; rebuild the sets",
                source.display(),
                f.sha256
            );
        }
        let name = Path::new(relative).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let exported = match format {
            ExportFormat::Hf => format!("{set}/{name}"),
            _ => relative.to_string(),
        };
        let dest: PathBuf = target.join(&exported);
        std::fs::create_dir_all(dest.parent().expect("a file in a folder"))?;
        match format {
            ExportFormat::Parquet | ExportFormat::Hf => with_text_parquet(&source, &dest)?,
            ExportFormat::Jsonl => with_text_jsonl(&source, &dest)?,
            ExportFormat::Megatron => {
                std::fs::copy(&source, &dest).with_context(|| format!("cannot copy {} to {}", source.display(), dest.display()))?;
            }
        }
        let bytes = std::fs::metadata(&dest)?.len();
        out.push(ListedFile { path: exported, sha256: sha256_file(&dest)?, bytes, ..f.clone() });
    }
    if out.is_empty() {
        bail!("{} lists no {format:?} files", set_dir.join(run_contract::set::MANIFEST).display());
    }
    Ok(out)
}

/// The shard's rows plus `text` = prompt + completion.
fn with_text_parquet(source: &Path, dest: &Path) -> Result<()> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(source)?).with_context(|| format!("{} is not parquet", source.display()))?.build()?;
    let schema = reader.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("text", DataType::Utf8, false));
    let out_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let file = std::fs::File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut writer = ArrowWriter::try_new(file, out_schema.clone(), Some(pipeline::stages::tables::table_properties(3, 128 * 1024)))?;
    for batch in reader {
        let batch = batch?;
        let text_of = |name: &str| -> Result<&StringArray> {
            batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).with_context(|| format!("{} has no string column {name}", source.display()))
        };
        let (prompt, completion) = (text_of("prompt")?, text_of("completion")?);
        let text: StringArray = (0..batch.num_rows()).map(|i| Some(format!("{}{}", prompt.value(i), completion.value(i)))).collect();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(text) as ArrayRef);
        debug_assert!(columns.iter().all(|c| c.len() == batch.num_rows()));
        writer.write(&RecordBatch::try_new(out_schema.clone(), columns)?)?;
    }
    writer.close()?;
    Ok(())
}

/// The shard's lines, each with `"text"` appended after its last key.
fn with_text_jsonl(source: &Path, dest: &Path) -> Result<()> {
    let reader = std::io::BufReader::new(std::fs::File::open(source)?);
    let mut w = std::io::BufWriter::new(std::fs::File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?);
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("{}:{} is not JSON", source.display(), i + 1))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).with_context(|| format!("{}:{} has no {k}", source.display(), i + 1));
        let text = format!("{}{}", field("prompt")?, field("completion")?);
        let body = line.trim_end().strip_suffix('}').with_context(|| format!("{}:{} is not a JSON object", source.display(), i + 1))?;
        writeln!(w, "{body},\"text\":{}}}", serde_json::to_string(&text)?)?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

fn files_json(files: &[ListedFile]) -> Value {
    Value::Array(
        files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "split": f.split, "format": f.format, "rows": f.rows, "tokens": f.tokens, "bytes": f.bytes, "sha256": f.sha256}))
            .collect(),
    )
}

/// The set's manifest with `files` replaced by the exported ones and an `export` note.
fn write_manifest(path: &Path, json: &Value, files: &[ListedFile], format: ExportFormat, run: &Path) -> Result<()> {
    let mut m = json.clone();
    m["files"] = files_json(files);
    m["export"] = serde_json::json!({"format": format!("{format:?}").to_lowercase(), "from_run": run.display().to_string(), "text_column": format != ExportFormat::Megatron});
    pipeline::run_dir::write_json(path, &m)
}

/// `hf`: `<set>/<split>-*.parquet` for every set, one `README.md` whose YAML header makes
/// each set a config, and `manifest.json` holding every set's manifest.
fn write_hub_repo(dir: &Path, run: &Path, sets: &[(String, Value, SetManifest, Vec<ListedFile>)]) -> Result<()> {
    let mut card = String::from("---\n");
    let first = &sets[0].2;
    let _ = writeln!(card, "license: {}", first.config.license);
    card.push_str("language:\n- en\ntask_categories:\n- text-generation\ntags:\n- math\n- reasoning\n- continued-pretraining\nconfigs:\n");
    for (set, _, m, _) in sets {
        let _ = writeln!(card, "- config_name: {set}\n  data_files:");
        for split in m.splits.rows.keys() {
            let _ = writeln!(card, "  - split: {split}\n    path: {set}/{split}-*.parquet");
        }
    }
    card.push_str("---\n\n");
    let _ = writeln!(card, "# habits sets of run `{}`\n", first.run);
    card.push_str("One config per set, token-matched by the habits build stage: `load_dataset(repo, \"rich\")`, `load_dataset(repo, \"control\")`.\n\n");
    for (set, _, m, _) in sets {
        let _ = writeln!(
            card,
            "- `{set}`: {} rows, {} completion tokens; selection rule `{}`; rewritten by `{}`.",
            m.splits.rows.values().sum::<u64>(),
            m.splits.completion_tokens.values().sum::<u64>(),
            m.selection_rule,
            m.rewrite_model
        );
    }
    card.push_str("\nColumns as in each set's card (`corpus-tools export --format parquet`), plus `text` = prompt + completion. `manifest.json` lists every file with its sha256.\n");
    pipeline::run_dir::write_atomic(&dir.join("README.md"), card.as_bytes())?;
    let mut all = serde_json::Map::new();
    for (set, json, _, files) in sets {
        let mut m = json.clone();
        m["files"] = files_json(files);
        all.insert(set.clone(), m);
    }
    pipeline::run_dir::write_json(
        &dir.join("manifest.json"),
        &serde_json::json!({"export": {"format": "hf", "from_run": run.display().to_string(), "text_column": true}, "sets": all}),
    )
}
