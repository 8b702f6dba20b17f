//! `pipeline fetch REPO`: download a dataset repo's files (all, or those matching
//! `--include`) into the hub cache or a plain folder, as the hub's own CLI does.

use std::path::PathBuf;

use anyhow::Result;

use crate::hub::cache::Destination;
use crate::hub::config::HubConfig;
use crate::hub::download::{Downloader, FileRequest};
use crate::hub::glob::Includes;
use crate::hub::{HubClient, HubSettings};
use crate::progress::bytes_bar;

/// What to fetch.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub repo: String,
    pub revision: String,
    pub include: Vec<String>,
    pub local_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub hub: HubConfig,
}

/// What was fetched: the folder to open (snapshot or local dir) and the files.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub commit: String,
    pub folder: PathBuf,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

pub async fn fetch(req: &FetchRequest) -> Result<Fetched> {
    let client = HubClient::new(HubSettings::resolve(&req.hub, req.cache_dir.clone()))?;
    let includes = Includes::new(&req.include)?;
    let commit = client.commit_sha(&req.repo, &req.revision).await?;
    let listed = client.list_files(&req.repo, &commit, &includes).await?;
    if listed.is_empty() {
        anyhow::bail!("no file of `{}` at `{}` matches {:?}; check the include patterns", req.repo, req.revision, req.include);
    }
    let destination = match &req.local_dir {
        Some(dir) => Destination::LocalDir(dir.clone()),
        None => Destination::Cache(client.settings.cache_dir.clone()),
    };
    let bytes: u64 = listed.iter().map(|f| f.size).sum();
    tracing::info!("{}: {} files, {} bytes at commit {}", req.repo, listed.len(), bytes, commit);
    let downloader = Downloader::new(client, destination.clone());
    let requests = listed.into_iter().map(|file| FileRequest { repo: req.repo.clone(), commit: commit.clone(), file }).collect();
    let bar = bytes_bar(bytes, "download");
    let files = downloader.download_all(requests, &bar).await;
    bar.finish_and_clear();
    let files = files?;
    destination.record_ref(&req.repo, &req.revision, &commit)?;
    let folder = match &destination {
        Destination::LocalDir(d) => d.clone(),
        Destination::Cache(root) => root.join(crate::hub::cache::repo_folder(&req.repo)).join("snapshots").join(&commit),
    };
    Ok(Fetched { commit, folder, files, bytes })
}
