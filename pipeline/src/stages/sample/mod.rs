//! The sample stage: a deterministic, order-independent sample of `sample.size` documents
//! over the weighted sources, written as the run's `docs` table.
//!
//! Files stream through: while one file downloads, finished ones are scanned. Each scanned
//! file leaves a candidate part in `work/sample/<key>/`, so a rerun (after a crash, a
//! `kill -9` or with another `--shard`) skips it without downloading it again. When every
//! file has its part, `merge` picks the sample and writes `docs/`.

pub mod config;
pub mod merge;
pub mod scan;
pub mod selector;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::config::SampleConfig;
use self::merge::{SourceCounts, for_each_batch, merge};
use self::scan::{ScanParams, candidate_path, scan_file};
use self::selector::{Selector, quotas};
use crate::config::LoadedConfig;
use crate::hub::cache::Destination;
use crate::hub::download::{Downloader, FileRequest};
use crate::progress::{Heartbeat, bytes_bar, count_bar, log_line};
use crate::run_dir::{RunDir, publish_table, read_json, remove_stale_temps, staging_for};
use crate::sources::{InputFile, Location, Source, SourceKind};
use crate::stages::inputs::{Inputs, resolve_inputs};
use crate::stages::stage::{Stage, StageContext};
use crate::stages::tables::PartInfo;

/// The stage's name: its table is `runs/<name>/docs/`.
pub const TABLE: &str = run_contract::tables::DOCS;

/// `docs/_manifest.json` (the leading `_` keeps parquet readers such as pyarrow from taking it for data).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocsManifest {
    pub stage: String,
    pub state: String,
    pub config_key: String,
    pub sample_size: u64,
    pub seed: u64,
    pub min_chars: u64,
    pub rows: u64,
    pub n_chars: u64,
    pub sources: Vec<SourceEntry>,
    pub inputs: Vec<InputEntry>,
    pub parts: Vec<PartInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceEntry {
    pub name: String,
    pub origin: String,
    pub revision: String,
    pub commit: String,
    pub weight: f64,
    pub quota: u64,
    pub files: u64,
    #[serde(flatten)]
    pub counts: SourceCounts,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputEntry {
    pub source: String,
    pub file: String,
    pub revision: String,
    pub size: u64,
    pub fingerprint: String,
}

/// What a call did.
#[derive(Debug)]
pub enum SampleOutcome {
    /// `docs/` already matched the config.
    UpToDate(DocsManifest),
    /// `docs/` was written.
    Written(DocsManifest),
    /// This shard is done; others still have files to scan.
    ShardDone { scanned: usize, missing: usize },
}

/// The sample stage: the documents of every source, sampled by hash into `docs/`.
pub struct Sample;

impl Stage for Sample {
    const VERB: &'static str = "sample";
    type Manifest = SampleOutcome;

    async fn run(ctx: &StageContext) -> Result<SampleOutcome> {
        run_sample(ctx).await
    }

    fn render(m: &SampleOutcome, ctx: &StageContext) -> String {
        let docs = ctx.cfg.run_path().join(TABLE);
        match m {
            SampleOutcome::UpToDate(m) => format!("docs: up to date, {} documents in {}\n", m.rows, docs.display()),
            SampleOutcome::Written(m) => {
                let mut s = format!("docs: {} documents ({} parts) in {}\n", m.rows, m.parts.len(), docs.display());
                for e in &m.sources {
                    s.push_str(&format!(
                        "  {:<16} sampled {:>8} of {:>10} rows scanned (quota {}, {} repeated texts dropped)\n",
                        e.name, e.counts.sampled, e.counts.rows_scanned, e.quota, e.counts.duplicates_removed
                    ));
                }
                s
            }
            SampleOutcome::ShardDone { scanned, missing } => {
                format!("shard {} done: {scanned} files scanned, {missing} still to scan by other shards; the last shard to finish writes docs/\n", ctx.shard)
            }
        }
    }

    fn complete(m: &SampleOutcome) -> bool {
        !matches!(m, SampleOutcome::ShardDone { .. })
    }
}

/// Runs the stage.
async fn run_sample(ctx: &StageContext) -> Result<SampleOutcome> {
    let (cfg, opts) = (&ctx.cfg, ctx);
    let run = RunDir::new(cfg.run_path());
    let inputs = resolve_inputs(cfg, opts.cache_dir.clone(), Some(&run)).await?;
    let sc = &cfg.config.sample;
    let weights: Vec<f64> = inputs.sources.iter().map(|s| s.source.weight).collect();
    let quotas = quotas(sc.size, &weights);
    let key = config_key(cfg, &inputs);
    let docs_dir = run.stage(TABLE);
    if let Some(m) = read_json::<DocsManifest>(&docs_dir.join(run_contract::TABLE_MANIFEST))? {
        if m.state == "complete" && m.config_key == key {
            tracing::info!("docs: up to date ({} documents in {})", m.rows, docs_dir.display());
            return Ok(SampleOutcome::UpToDate(m));
        }
        tracing::info!("docs: config or inputs changed since the last sample; sampling again");
    }
    let work = run.work("sample", &key);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    remove_stale_temps(&work)?;
    let files: Vec<&InputFile> = inputs.files().collect();
    let selector = Arc::new(Selector::new(quotas.clone()));
    preload(&selector, &files, &work)?;
    let todo: Vec<InputFile> =
        files.iter().filter(|f| opts.shard.owns(f.ordinal) && !candidate_path(&work, f.ordinal).is_file()).map(|f| (*f).clone()).collect();
    let done_before = files.iter().filter(|f| opts.shard.owns(f.ordinal)).count() - todo.len();
    if done_before > 0 {
        tracing::info!("sample: {done_before} files already scanned (resuming), {} to go", todo.len());
    }
    scan_all(cfg, &inputs, todo, &selector, &work).await?;

    let missing = files.iter().filter(|f| !candidate_path(&work, f.ordinal).is_file()).count();
    if missing > 0 {
        return Ok(SampleOutcome::ShardDone { scanned: files.len() - missing, missing });
    }
    let _lock = lock_merge(&work)?;
    if let Some(m) = read_json::<DocsManifest>(&docs_dir.join(run_contract::TABLE_MANIFEST))?
        && m.state == "complete"
        && m.config_key == key
    {
        return Ok(SampleOutcome::UpToDate(m));
    }
    let manifest = write_docs(cfg, &inputs, &files, &quotas, &key, &work, &docs_dir)?;
    Ok(SampleOutcome::Written(manifest))
}

/// Refills the heaps from candidate parts written by earlier runs or other shards.
fn preload(selector: &Selector, files: &[&InputFile], work: &Path) -> Result<()> {
    for f in files {
        let path = candidate_path(work, f.ordinal);
        if !path.is_file() {
            continue;
        }
        for_each_batch(&path, &["key", "row"], |b| {
            use arrow_array::cast::AsArray;
            use arrow_array::types::UInt64Type;
            let keys = b.column(0).as_primitive::<UInt64Type>();
            let rows = b.column(1).as_primitive::<UInt64Type>();
            let ranks: Vec<_> = (0..b.num_rows()).map(|i| (keys.value(i), f.ordinal as u32, rows.value(i))).collect();
            selector.offer(f.source, &ranks);
            Ok(())
        })?;
    }
    Ok(())
}

/// Downloads (hub files) and scans the files, `hub.concurrency` downloads and
/// `sample.threads` scans at a time. Every file is tried; failures are reported together.
async fn scan_all(cfg: &LoadedConfig, inputs: &Inputs, todo: Vec<InputFile>, selector: &Arc<Selector>, work: &Path) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let sc = cfg.config.sample.clone();
    let threads = if sc.threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { sc.threads };
    let hub_bytes: u64 = todo.iter().filter(|f| matches!(f.location, Location::Hub { .. })).map(|f| f.size).sum();
    let download_bar = bytes_bar(hub_bytes, "download");
    if hub_bytes == 0 {
        download_bar.finish_and_clear();
    }
    let downloader = inputs.client.clone().map(|c| Downloader::new(c.clone(), Destination::Cache(c.settings.cache_dir.clone())));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<(InputFile, PathBuf)>>(threads);
    let scanner = Scanner {
        sample: sc,
        selector: selector.clone(),
        work: work.to_path_buf(),
        bar: count_bar(todo.len() as u64, "scan"),
        heartbeat: Arc::new(Heartbeat::new(std::time::Duration::from_secs(30))),
        keep_downloads: cfg.config.hub.keep_downloads,
    };
    let arrivals = arrive(todo, downloader, cfg.config.hub.concurrency, download_bar.clone(), tx);
    let ((), failures) = tokio::join!(arrivals, scanner.scan_arrivals(rx, inputs, threads));
    let failures = failures?;
    download_bar.finish_and_clear();
    scanner.bar.finish_and_clear();
    if !failures.is_empty() {
        bail!("{} input file(s) failed (the others are done and kept; rerun to retry only these):\n  - {}", failures.len(), failures.join("\n  - "));
    }
    Ok(())
}

/// Sends each input file to `tx` as it becomes readable: a local file as it is, a hub file
/// when its download finishes (`concurrency` at a time).
async fn arrive(
    todo: Vec<InputFile>,
    downloader: Option<Downloader>,
    concurrency: usize,
    bar: indicatif::ProgressBar,
    tx: tokio::sync::mpsc::Sender<Result<(InputFile, PathBuf)>>,
) {
    futures_util::stream::iter(todo)
        .map(|f| {
            let (downloader, bar) = (downloader.clone(), bar.clone());
            async move {
                match &f.location {
                    Location::Local(p) => Ok((f.clone(), p.clone())),
                    Location::Hub { repo, commit, file } => {
                        let d = downloader.context("internal: hub file without a downloader")?;
                        let req = FileRequest { repo: repo.clone(), commit: commit.clone(), file: file.clone() };
                        let path = d.download(&req, &bar).await?;
                        Ok((f.clone(), path))
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .for_each(|r| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(r).await;
            }
        })
        .await;
}

/// Scans arrived input files into candidate files under `work`.
struct Scanner {
    sample: SampleConfig,
    selector: Arc<Selector>,
    work: PathBuf,
    bar: indicatif::ProgressBar,
    heartbeat: Arc<Heartbeat>,
    keep_downloads: bool,
}

impl Scanner {
    /// Scans files as they arrive on blocking threads, at most `threads` at a time; the
    /// failures, one line each (a failed file does not stop the others).
    async fn scan_arrivals(&self, mut rx: tokio::sync::mpsc::Receiver<Result<(InputFile, PathBuf)>>, inputs: &Inputs, threads: usize) -> Result<Vec<String>> {
        let permits = Arc::new(tokio::sync::Semaphore::new(threads));
        let mut tasks = tokio::task::JoinSet::new();
        let mut failures: Vec<String> = Vec::new();
        while let Some(item) = rx.recv().await {
            let (input, path) = match item {
                Ok(x) => x,
                Err(e) => {
                    failures.push(format!("{e:#}"));
                    self.bar.inc(1);
                    continue;
                }
            };
            let permit = permits.clone().acquire_owned().await.expect("semaphore open");
            let source = inputs.sources[input.source].source.clone();
            let scan = self.one(input, path, source);
            tasks.spawn_blocking(move || {
                let result = scan();
                drop(permit);
                result
            });
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done.context("scan task panicked")? {
                    failures.push(e);
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done.context("scan task panicked")? {
                failures.push(e);
            }
        }
        Ok(failures)
    }

    /// The scan of one file (to run on a blocking thread): its candidates written, a
    /// finished download removed unless kept, the bar moved.
    fn one(&self, input: InputFile, path: PathBuf, source: Source) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let (sc, selector, work, bar, heartbeat, keep) =
            (self.sample.clone(), self.selector.clone(), self.work.clone(), self.bar.clone(), self.heartbeat.clone(), self.keep_downloads);
        move || {
            let params = ScanParams {
                seed: sc.seed,
                min_chars: sc.min_chars,
                batch_rows: sc.batch_rows,
                text_column: &source.text_column,
                url_column: &source.url_column,
                source_name: &source.name,
            };
            let result = scan_file(&input, &path, &params, &selector, &work);
            if let (Ok(stats), Location::Hub { .. }) = (&result, &input.location) {
                if !keep {
                    remove_download(&path);
                }
                tracing::debug!("scanned {} ({} rows, {} candidates)", input.file, stats.rows, stats.candidates);
            }
            bar.inc(1);
            if heartbeat.due() {
                log_line(&bar, "sample files scanned");
            }
            result.map(|_| ()).map_err(|e| format!("{e:#}"))
        }
    }
}

/// Frees the disk of a scanned hub file: the snapshot link and the blob it points to.
fn remove_download(visible: &Path) {
    if let Ok(blob) = std::fs::canonicalize(visible) {
        let _ = std::fs::remove_file(&blob);
    }
    let _ = std::fs::remove_file(visible);
}

fn lock_merge(work: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(work.join("merge.lock"))?;
    f.lock().context("cannot lock the merge")?;
    Ok(f)
}

/// Merges into a staging folder, then swaps it in for `docs/`.
fn write_docs(cfg: &LoadedConfig, inputs: &Inputs, files: &[&InputFile], quotas: &[u64], key: &str, work: &Path, docs_dir: &Path) -> Result<DocsManifest> {
    let staging = staging_for(docs_dir)?;
    let names: Vec<String> = inputs.sources.iter().map(|s| s.source.name.clone()).collect();
    let sc = &cfg.config.sample;
    let result = merge(files, &names, quotas, work, &staging, sc.part_rows)?;
    let sources = inputs
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| SourceEntry {
            name: s.source.name.clone(),
            origin: s.source.origin(),
            revision: match &s.source.kind {
                SourceKind::Hub { revision, .. } => revision.clone(),
                SourceKind::Local { .. } => "local".into(),
            },
            commit: s.commit.clone(),
            weight: s.source.weight,
            quota: quotas[i],
            files: s.files.len() as u64,
            counts: result.counts[i].clone(),
        })
        .collect();
    let manifest = DocsManifest {
        stage: TABLE.into(),
        state: "complete".into(),
        config_key: key.to_string(),
        sample_size: sc.size,
        seed: sc.seed,
        min_chars: sc.min_chars,
        rows: result.rows,
        n_chars: result.n_chars,
        sources,
        inputs: files
            .iter()
            .map(|f| InputEntry {
                source: names[f.source].clone(),
                file: f.file.clone(),
                revision: f.revision.clone(),
                size: f.size,
                fingerprint: f.fingerprint.clone(),
            })
            .collect(),
        parts: result.parts,
    };
    publish_table(&staging, docs_dir, &manifest)?;
    Ok(manifest)
}

/// The key of everything the sample depends on: sources (pinned), files, size, seed, filters.
fn config_key(cfg: &LoadedConfig, inputs: &Inputs) -> String {
    let sc = &cfg.config.sample;
    let mut h = Sha256::new();
    h.update(format!("v1 size={} seed={} min_chars={}\n", sc.size, sc.seed, sc.min_chars));
    for s in &inputs.sources {
        h.update(format!(
            "source {} {} {} w={} text={} url={}\n",
            s.source.name,
            s.source.origin(),
            s.commit,
            s.source.weight,
            s.source.text_column,
            s.source.url_column
        ));
        for f in &s.files {
            h.update(format!("file {} {} {}\n", f.file, f.size, f.fingerprint));
        }
    }
    hex::encode(&h.finalize()[..8])
}
