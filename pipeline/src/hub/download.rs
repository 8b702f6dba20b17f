//! Downloading repo files: bounded concurrency, resume by byte range, checksum before the
//! file takes its final name, retries with backoff for what can heal, one clear error for
//! what cannot. A file is never visible under its final name unless complete and verified.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use sha2::{Digest, Sha256};

use super::api::{HubClient, RepoFile, check_status, network};
use super::cache::{Destination, FileSlot};
use super::error::HubError;
use super::names::{is_blob_id, is_commit, repo_path_problem};

/// One file to fetch from a repo at a pinned commit.
#[derive(Clone, Debug)]
pub struct FileRequest {
    pub repo: String,
    pub commit: String,
    pub file: RepoFile,
}

/// Fetches files into a [`Destination`].
#[derive(Clone, Debug)]
pub struct Downloader {
    pub client: HubClient,
    pub destination: Destination,
}

impl Downloader {
    pub fn new(client: HubClient, destination: Destination) -> Self {
        Downloader { client, destination }
    }

    /// Downloads every request with at most `hub.concurrency` at a time; returns the
    /// visible paths in request order. All files are tried; failures are reported together.
    pub async fn download_all(&self, requests: Vec<FileRequest>, bar: &ProgressBar) -> Result<Vec<PathBuf>, anyhow::Error> {
        let total = requests.len();
        let results: Vec<(usize, Result<PathBuf, HubError>)> = futures_util::stream::iter(requests.into_iter().enumerate())
            .map(|(i, req)| async move { (i, self.download(&req, bar).await) })
            .buffer_unordered(self.client.settings.concurrency)
            .collect()
            .await;
        let mut paths = vec![PathBuf::new(); total];
        let mut failures = Vec::new();
        for (i, r) in results {
            match r {
                Ok(p) => paths[i] = p,
                Err(e) => failures.push(e.to_string()),
            }
        }
        if !failures.is_empty() {
            anyhow::bail!(
                "{} of {} files could not be downloaded (finished files are kept; rerun to resume):\n  - {}",
                failures.len(),
                total,
                failures.join("\n  - ")
            );
        }
        Ok(paths)
    }

    /// Downloads one file (or finds it done); returns the path to open.
    pub async fn download(&self, req: &FileRequest, bar: &ProgressBar) -> Result<PathBuf, HubError> {
        let etag = req.file.etag().to_string();
        check_request(req)?;
        let slot = self.destination.slot(&req.repo, &req.commit, &req.file.path, &etag);
        if slot.is_complete(&etag) {
            slot.publish(&req.commit, &etag)?;
            bar.inc(req.file.size);
            return Ok(slot.visible_path);
        }
        let _lock = lock(&slot).await?;
        if slot.is_complete(&etag) {
            slot.publish(&req.commit, &etag)?;
            bar.inc(req.file.size);
            return Ok(slot.visible_path);
        }
        let backoff = &self.client.settings.backoff;
        let mut progress = FileProgress { bar, counted: 0 };
        let mut attempt = 1;
        loop {
            progress.set(partial_len(&slot));
            match self.attempt(req, &slot, &mut progress).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && backoff.allows_another(attempt) => {
                    let now = partial_len(&slot);
                    let delay = backoff.delay_with_hint(attempt, e.retry_after());
                    tracing::warn!(
                        "{}: {e}; retry {}/{} in {:.1}s (resuming at byte {now})",
                        req.file.path,
                        attempt,
                        backoff.max_attempts - 1,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        slot.publish(&req.commit, &etag)?;
        tracing::info!("downloaded {} ({} bytes, verified)", req.file.path, req.file.size);
        Ok(slot.visible_path)
    }

    /// One request: append what the server sends after the bytes we have, then verify.
    async fn attempt(&self, req: &FileRequest, slot: &FileSlot, progress: &mut FileProgress<'_>) -> Result<(), HubError> {
        let size = req.file.size;
        let mut offset = partial_len(slot);
        if offset > size {
            truncate(slot, 0)?;
            offset = 0;
        }
        if offset < size || size == 0 {
            let url = self.client.resolve_url(&req.repo, &req.commit, &req.file.path);
            let range = (offset > 0).then(|| format!("bytes={offset}-"));
            let what = format!("file `{}` in `{}` at `{}`", req.file.path, req.repo, req.commit);
            let resp = match self.client.send_once(&url, range.as_deref(), &what).await {
                Err(HubError::Status { status: 416, .. }) => {
                    truncate(slot, 0)?;
                    return Err(HubError::Integrity { file: req.file.path.clone(), message: "server refused the resume range; restarting from byte 0".into() });
                }
                other => other?,
            };
            let resp = check_status(resp, &what).await?;
            let start = match resp.status() {
                StatusCode::PARTIAL_CONTENT => content_range_start(&resp).unwrap_or(u64::MAX),
                _ => 0,
            };
            if start != offset {
                // The server ignored or misread the range: start over rather than guess.
                truncate(slot, 0)?;
                progress.set(0);
                if start != 0 {
                    return Err(HubError::Integrity {
                        file: req.file.path.clone(),
                        message: format!("asked for bytes from {offset}, server sent from {start}"),
                    });
                }
                offset = 0;
            }
            let mut file = open_append(slot, offset)?;
            let mut stream = resp.bytes_stream().map_err(|e| network(&url, e));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if offset + chunk.len() as u64 > size {
                    truncate(slot, 0)?;
                    return Err(HubError::Integrity {
                        file: req.file.path.clone(),
                        message: format!("server sent more than the listed {size} bytes; restarting"),
                    });
                }
                file.write_all(&chunk).map_err(|e| HubError::io("cannot write the partial download", e))?;
                offset += chunk.len() as u64;
                progress.set(offset);
            }
            file.sync_all().map_err(|e| HubError::io("cannot sync the partial download", e))?;
            if offset < size {
                return Err(HubError::Network { url: crate::origin::printable(&url), message: format!("body ended at byte {offset} of {size}") });
            }
        }
        self.verify_and_commit(req, slot).await
    }

    /// Checks the checksum of the complete partial file and moves it to its final name;
    /// on a mismatch the partial file is deleted (a retry starts clean).
    async fn verify_and_commit(&self, req: &FileRequest, slot: &FileSlot) -> Result<(), HubError> {
        let path = slot.partial_path.clone();
        let is_lfs = req.file.lfs.is_some();
        let expected = req.file.etag().to_string();
        let actual = tokio::task::spawn_blocking(move || checksum(&path, is_lfs)).await.map_err(|e| HubError::io("checksum task failed", e))??;
        if actual != expected {
            let _ = std::fs::remove_file(&slot.partial_path);
            return Err(HubError::Integrity {
                file: req.file.path.clone(),
                message: format!("checksum mismatch: expected {expected}, got {actual}; the bad bytes were deleted"),
            });
        }
        if let Some(dir) = slot.final_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HubError::io("cannot create the destination folder", e))?;
        }
        std::fs::rename(&slot.partial_path, &slot.final_path).map_err(|e| HubError::io("cannot move the finished download", e))
    }
}

/// One file's share of the shared byte bar, kept equal to the bytes on disk.
struct FileProgress<'a> {
    bar: &'a ProgressBar,
    counted: u64,
}

impl FileProgress<'_> {
    fn set(&mut self, on_disk: u64) {
        if on_disk >= self.counted {
            self.bar.inc(on_disk - self.counted);
        } else {
            self.bar.set_position(self.bar.position().saturating_sub(self.counted - on_disk));
        }
        self.counted = on_disk;
    }
}

/// sha256 for LFS files; git's blob sha1 (`blob <len>\0<bytes>`) for files kept in git.
fn checksum(path: &std::path::Path, is_lfs: bool) -> Result<String, HubError> {
    let mut f = std::fs::File::open(path).map_err(|e| HubError::io("cannot open the download", e))?;
    if is_lfs {
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| HubError::io("cannot read the download", e))?;
        Ok(hex::encode(h.finalize()))
    } else {
        use sha1::Digest as _;
        let len = f.metadata().map_err(|e| HubError::io("cannot stat the download", e))?.len();
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        std::io::copy(&mut f, &mut h).map_err(|e| HubError::io("cannot read the download", e))?;
        Ok(hex::encode(h.finalize()))
    }
}

/// The names a request turns into file names (its commit, path and blob id) checked once
/// more where they are used, whatever listing or pin they came from.
fn check_request(req: &FileRequest) -> Result<(), HubError> {
    let problem = if let Some(why) = repo_path_problem(&req.file.path) {
        format!("the path {:?} cannot be used: {why}", req.file.path)
    } else if !is_commit(&req.commit) {
        format!("the commit {:?} is not 40 hex digits", req.commit)
    } else if !is_blob_id(req.file.etag()) {
        format!("the blob id {:?} is not 40 or 64 hex digits", req.file.etag())
    } else {
        return Ok(());
    };
    Err(HubError::Protocol { url: format!("dataset {}", req.repo), message: format!("{problem}; nothing was written") })
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    v.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

fn partial_len(slot: &FileSlot) -> u64 {
    std::fs::metadata(&slot.partial_path).map(|m| m.len()).unwrap_or(0)
}

fn truncate(slot: &FileSlot, len: u64) -> Result<(), HubError> {
    if let Ok(f) = OpenOptions::new().write(true).open(&slot.partial_path) {
        f.set_len(len).map_err(|e| HubError::io("cannot truncate the partial download", e))?;
    }
    Ok(())
}

fn open_append(slot: &FileSlot, offset: u64) -> Result<std::fs::File, HubError> {
    if let Some(dir) = slot.partial_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| HubError::io(&format!("cannot create {}", dir.display()), e))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&slot.partial_path)
        .map_err(|e| HubError::io(&format!("cannot open {}", slot.partial_path.display()), e))?;
    f.set_len(offset).map_err(|e| HubError::io("cannot size the partial download", e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| HubError::io("cannot seek the partial download", e))?;
    Ok(f)
}

/// An exclusive `flock` on the slot's lock file, held until dropped.
async fn lock(slot: &FileSlot) -> Result<Arc<std::fs::File>, HubError> {
    let path = slot.lock_path.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HubError::io("cannot create the lock folder", e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HubError::io(&format!("cannot open lock {}", path.display()), e))?;
        f.lock().map_err(|e| HubError::io(&format!("cannot lock {}", path.display()), e))?;
        Ok(Arc::new(f))
    })
    .await
    .map_err(|e| HubError::io("lock task failed", e))?
}
