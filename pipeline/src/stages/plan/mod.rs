//! `pipeline plan`: the dry run. Lists every input file (no download: parquet footers are
//! read with byte ranges), counts rows and text bytes, and estimates what the later stages
//! will cost: documents sampled, LLM requests and prompt tokens.

pub mod config;

use std::path::Path;

use anyhow::{Context, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde::Serialize;

use crate::config::LoadedConfig;
use crate::hub::HubClient;
use crate::hub::cache::Destination;
use crate::sources::{Format, InputFile, Location};
use crate::stages::inputs::resolve_inputs;
use crate::stages::plan::config::PlanConfig;
use crate::stages::sample::selector::quotas;

/// The plan of one source.
#[derive(Clone, Debug, Serialize)]
pub struct SourcePlan {
    pub name: String,
    pub origin: String,
    pub commit: String,
    pub files: u64,
    pub bytes: u64,
    pub bytes_to_download: u64,
    pub rows: u64,
    pub text_bytes: u64,
    pub quota: u64,
    pub sampled: u64,
}

/// What an LLM stage's largest request takes: prompt (template + document cut) and answer.
#[derive(Clone, Debug, Serialize)]
pub struct StageContextPlan {
    pub stage: String,
    pub template_tokens: u64,
    pub document_tokens: u64,
    pub max_tokens: u64,
    pub needed: u64,
    /// Where the stage's servers are configured.
    pub servers: String,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub run_dir: String,
    pub sources: Vec<SourcePlan>,
    pub sample_size: u64,
    pub sampled: u64,
    pub mean_doc_tokens: f64,
    pub classify_requests: u64,
    pub classify_prompt_tokens: u64,
    pub rewrite_requests: u64,
    pub rewrite_prompt_tokens: u64,
    /// Documents are cut to this for classification (`classify.max_doc_tokens`).
    pub max_doc_tokens: u64,
    /// The server context each LLM stage needs for its largest request.
    pub contexts: Vec<StageContextPlan>,
    pub assumptions: PlanConfig,
}

pub async fn plan(cfg: &LoadedConfig, cache_dir: Option<std::path::PathBuf>) -> Result<Plan> {
    let inputs = resolve_inputs(cfg, cache_dir, None).await?;
    let weights: Vec<f64> = inputs.sources.iter().map(|s| s.source.weight).collect();
    let quotas = quotas(cfg.config.sample.size, &weights);
    let cache = inputs.client.as_ref().map(|c| Destination::Cache(c.settings.cache_dir.clone()));
    let mut sources = Vec::new();
    for (s, quota) in inputs.sources.iter().zip(&quotas) {
        let (mut rows, mut text_bytes, mut to_download) = (0u64, 0u64, 0u64);
        for f in &s.files {
            let (r, t) = count_file(f, inputs.client.as_ref(), &s.source.text_column).await?;
            rows += r;
            text_bytes += t;
            if let (Location::Hub { repo, commit, file }, Some(dest)) = (&f.location, &cache)
                && !dest.slot(repo, commit, &file.path, file.etag()).is_complete(file.etag())
            {
                to_download += f.size;
            }
        }
        sources.push(SourcePlan {
            name: s.source.name.clone(),
            origin: s.source.origin(),
            commit: s.commit.clone(),
            files: s.files.len() as u64,
            bytes: s.files.iter().map(|f| f.size).sum(),
            bytes_to_download: to_download,
            rows,
            text_bytes,
            quota: *quota,
            sampled: rows.min(*quota),
        });
    }
    let p = &cfg.config.plan;
    let sampled: u64 = sources.iter().map(|s| s.sampled).sum();
    let rows: u64 = sources.iter().map(|s| s.rows).sum();
    let text: u64 = sources.iter().map(|s| s.text_bytes).sum();
    let mean_doc_tokens = if rows == 0 { 0.0 } else { text as f64 / rows as f64 / p.bytes_per_token };
    let (c, r) = (&cfg.config.classify, &cfg.config.rewrite);
    let doc_tokens = mean_doc_tokens.min(c.max_doc_tokens as f64);
    let classify_requests = sampled * c.tasks.len() as u64;
    let rewrite_requests = (sampled as f64 * p.rewrite_share).round() as u64;
    Ok(Plan {
        run_dir: cfg.run_path().display().to_string(),
        sources,
        sample_size: cfg.config.sample.size,
        sampled,
        mean_doc_tokens,
        classify_requests,
        classify_prompt_tokens: (classify_requests as f64 * (p.template_tokens as f64 + doc_tokens)).round() as u64,
        rewrite_requests,
        rewrite_prompt_tokens: (rewrite_requests as f64 * (p.template_tokens as f64 + mean_doc_tokens.min(r.max_doc_tokens as f64))).round() as u64,
        max_doc_tokens: c.max_doc_tokens as u64,
        contexts: [("classify", c.max_doc_tokens, c.max_tokens), ("rewrite", r.max_doc_tokens, r.max_tokens)]
            .into_iter()
            .map(|(stage, document, answer)| {
                let servers = match cfg.config.llm.stage_server(stage) {
                    Some(s) if !s.endpoints.is_empty() => format!("[llm.{stage}] endpoints"),
                    _ => "llm.endpoints".to_string(),
                };
                let (document, max_tokens) = (document as u64, u64::from(answer));
                StageContextPlan {
                    stage: stage.into(),
                    template_tokens: p.template_tokens,
                    document_tokens: document,
                    max_tokens,
                    needed: p.template_tokens + document + max_tokens,
                    servers,
                }
            })
            .collect(),
        assumptions: p.clone(),
    })
}

/// Rows and text bytes of a file: from the parquet footer (for hub files, fetched with
/// two range requests), or by reading a JSONL file's lines.
async fn count_file(f: &InputFile, client: Option<&HubClient>, text_column: &str) -> Result<(u64, u64)> {
    match (&f.location, f.format) {
        (Location::Local(path), Format::Parquet) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let meta = ParquetMetaDataReader::new().parse_and_finish(&file).with_context(|| format!("{} is not a readable parquet file", path.display()))?;
            Ok(footer_counts(&meta, text_column))
        }
        (Location::Local(path), Format::Jsonl) => count_jsonl(path),
        (Location::Hub { repo, commit, file }, Format::Parquet) => {
            let client = client.context("hub client")?;
            let size = file.size;
            anyhow::ensure!(size >= 12, "{} is too small to be parquet", file.path);
            let tail = client.read_range(repo, commit, &file.path, size - 8, size).await?;
            anyhow::ensure!(&tail[4..] == b"PAR1", "{} does not end like a parquet file", file.path);
            let footer_len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
            anyhow::ensure!(footer_len + 8 <= size, "{}: bad parquet footer length", file.path);
            let footer = client.read_range(repo, commit, &file.path, size - 8 - footer_len, size - 8).await?;
            let meta = ParquetMetaDataReader::decode_metadata(&footer).with_context(|| format!("{}: unreadable parquet footer", file.path))?;
            Ok(footer_counts(&meta, text_column))
        }
        (Location::Hub { file, .. }, Format::Jsonl) => {
            // Unknown without downloading: estimate one document per 4 KB.
            Ok((file.size / 4096, file.size))
        }
    }
}

fn footer_counts(meta: &ParquetMetaData, text_column: &str) -> (u64, u64) {
    let rows = meta.file_metadata().num_rows().max(0) as u64;
    let mut text = 0u64;
    for rg in meta.row_groups() {
        for col in rg.columns() {
            if col.column_path().string() == text_column {
                text += col.uncompressed_size().max(0) as u64;
            }
        }
    }
    (rows, text)
}

fn count_jsonl(path: &Path) -> Result<(u64, u64)> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            rows += 1;
            bytes += line.len() as u64;
        }
    }
    Ok((rows, bytes))
}

/// A human-readable rendering of the plan.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    out.push_str(&format!("plan for {}\n\n", plan.run_dir));
    out.push_str(&format!(
        "{:<16} {:>6} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}\n",
        "source", "files", "bytes", "to fetch", "rows", "text bytes", "quota", "sampled"
    ));
    for s in &plan.sources {
        out.push_str(&format!(
            "{:<16} {:>6} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}\n",
            s.name,
            s.files,
            human_bytes(s.bytes),
            human_bytes(s.bytes_to_download),
            s.rows,
            human_bytes(s.text_bytes),
            s.quota,
            s.sampled
        ));
    }
    out.push_str(&format!("\nsample: {} of {} documents asked for\n", plan.sampled, plan.sample_size));
    out.push_str(&format!(
        "mean document: ~{:.0} tokens ({} bytes/token assumed; cut at {} for classification)\n",
        plan.mean_doc_tokens, plan.assumptions.bytes_per_token, plan.max_doc_tokens
    ));
    out.push_str(&format!(
        "classify: {} requests, ~{} prompt tokens\nrewrite:  ~{} requests ({}% of the sample), ~{} prompt tokens\n",
        plan.classify_requests,
        plan.classify_prompt_tokens,
        plan.rewrite_requests,
        (plan.assumptions.rewrite_share * 100.0).round(),
        plan.rewrite_prompt_tokens
    ));
    for s in &plan.contexts {
        out.push_str(&format!(
            "{:<9} needs a server context of {} tokens for its largest request (~{} prompt + {} document cut + {} max_tokens; servers: {})\n",
            format!("{}:", s.stage),
            s.needed,
            s.template_tokens,
            s.document_tokens,
            s.max_tokens,
            s.servers
        ));
    }
    out
}

/// `1.2 GB`-style sizes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
