//! The hub's JSON interface: pin a revision to its commit, list files (with `Link`
//! pagination), and send any request with the shared retry policy.

use std::time::Duration;

use reqwest::header::{HeaderMap, LINK, RANGE, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use super::error::HubError;
use super::glob::Includes;
use super::names::{is_blob_id, is_commit, repo_path_problem};
use super::settings::HubSettings;
use crate::retry::parse_retry_after;

/// A file in a repo at a commit, as the tree listing reports it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub size: u64,
    /// The git blob id (sha1).
    pub oid: String,
    /// Present for files stored in LFS: the content's sha256.
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct LfsInfo {
    pub oid: String,
    pub size: u64,
}

impl RepoFile {
    /// The name of the file's blob in the cache, which is also its checksum: the LFS
    /// sha256, or the git blob sha1 for small files kept in git.
    pub fn etag(&self) -> &str {
        self.lfs.as_ref().map(|l| l.oid.as_str()).unwrap_or(&self.oid)
    }
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

/// A listed file whose path or blob id would name a file outside its folder is one error
/// naming the server's entry; nothing is written.
fn check_listed(file: &RepoFile, url: &str) -> Result<(), HubError> {
    let problem = match repo_path_problem(&file.path) {
        Some(why) => format!("the listing names the path {:?}, which cannot be used: {why}", file.path),
        None if !is_blob_id(file.etag()) => format!("the listing gives {:?} the blob id {:?}, which is not 40 or 64 hex digits", file.path, file.etag()),
        None => return Ok(()),
    };
    Err(HubError::Protocol { url: redact_query(url), message: format!("{problem}; nothing was written (is HF_ENDPOINT a hub you trust?)") })
}

/// A client for one hub endpoint.
#[derive(Clone, Debug)]
pub struct HubClient {
    http: reqwest::Client,
    pub settings: HubSettings,
}

impl HubClient {
    pub fn new(settings: HubSettings) -> Result<Self, HubError> {
        let http = crate::http_client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(settings.read_timeout)
            .build()
            .map_err(|e| HubError::io("cannot build the HTTP client", e))?;
        Ok(HubClient { http, settings })
    }

    /// `{endpoint}/datasets/{repo}/resolve/{revision}/{path}`.
    pub fn resolve_url(&self, repo: &str, revision: &str, path: &str) -> String {
        format!("{}/datasets/{}/resolve/{}/{}", self.settings.endpoint, repo, encode_segment(revision), encode_path(path))
    }

    /// Pins `revision` (branch, tag or sha) to its commit sha.
    pub async fn commit_sha(&self, repo: &str, revision: &str) -> Result<String, HubError> {
        let url = format!("{}/api/datasets/{}/revision/{}", self.settings.endpoint, repo, encode_segment(revision));
        let what = format!("dataset `{repo}` at revision `{revision}`");
        let resp = self.send(&url, None, &what).await?;
        let info: RevisionInfo = json(resp, &url).await?;
        if !is_commit(&info.sha) {
            let message = format!("revision sha {:?} is not a commit id (40 hex digits); nothing was written", info.sha);
            return Err(HubError::Protocol { url, message });
        }
        Ok(info.sha)
    }

    /// Every file under the include patterns at `commit`, sorted by path.
    pub async fn list_files(&self, repo: &str, commit: &str, includes: &Includes) -> Result<Vec<RepoFile>, HubError> {
        let mut files = Vec::new();
        for root in includes.list_roots() {
            let mut url = format!("{}/api/datasets/{}/tree/{}", self.settings.endpoint, repo, commit);
            if !root.is_empty() {
                url.push('/');
                url.push_str(&encode_path(&root));
            }
            url.push_str("?recursive=true");
            let what = format!("folder `{root}` of dataset `{repo}` at `{commit}`");
            let mut next = Some(url);
            while let Some(page_url) = next.take() {
                let resp = self.send(&page_url, None, &what).await?;
                next = next_link(resp.headers());
                let entries: Vec<TreeEntry> = json(resp, &page_url).await?;
                for e in entries {
                    if e.kind == "file" && includes.matches(&e.path) {
                        let file = RepoFile { path: e.path, size: e.size, oid: e.oid, lfs: e.lfs };
                        check_listed(&file, &page_url)?;
                        files.push(file);
                    }
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        Ok(files)
    }

    /// Bytes `start..end` of a file (for parquet footers during `plan`).
    pub async fn read_range(&self, repo: &str, commit: &str, path: &str, start: u64, end: u64) -> Result<Vec<u8>, HubError> {
        let url = self.resolve_url(repo, commit, path);
        let range = format!("bytes={}-{}", start, end.saturating_sub(1));
        let resp = self.send(&url, Some(&range), &format!("file `{path}`")).await?;
        let expect = (end - start) as usize;
        let bytes = resp.bytes().await.map_err(|e| network(&url, e))?;
        if bytes.len() != expect {
            return Err(HubError::Protocol { url, message: format!("asked for {expect} bytes, got {}", bytes.len()) });
        }
        Ok(bytes.to_vec())
    }

    /// Sends a GET with retries for retryable failures; the answer has a success status.
    pub async fn send(&self, url: &str, range: Option<&str>, what: &str) -> Result<Response, HubError> {
        let backoff = &self.settings.backoff;
        let mut attempt = 1;
        loop {
            match self.send_once(url, range, what).await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_retryable() && backoff.allows_another(attempt) => {
                    let delay = backoff.delay_with_hint(attempt, e.retry_after());
                    tracing::warn!("{e}; retry {}/{} in {:.1}s", attempt, backoff.max_attempts - 1, delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One GET: a success status, or the error it maps to.
    pub async fn send_once(&self, url: &str, range: Option<&str>, what: &str) -> Result<Response, HubError> {
        let mut req = self.http.get(url);
        if let Some(token) = &self.settings.token {
            req = req.bearer_auth(token.expose());
        }
        if let Some(r) = range {
            req = req.header(RANGE, r);
        }
        let resp = req.send().await.map_err(|e| network(url, e))?;
        check_status(resp, what).await
    }
}

/// Maps an error status to a [`HubError`]; passes success through.
pub async fn check_status(resp: Response, what: &str) -> Result<Response, HubError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = redact_query(resp.url().as_str());
    Err(match status {
        StatusCode::UNAUTHORIZED => HubError::Unauthorized { url },
        StatusCode::FORBIDDEN => HubError::Forbidden { url },
        StatusCode::NOT_FOUND => HubError::NotFound { url, what: what.to_string() },
        _ => {
            let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            HubError::Status { status: status.as_u16(), url, body, retry_after }
        }
    })
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response, url: &str) -> Result<T, HubError> {
    let bytes = resp.bytes().await.map_err(|e| network(url, e))?;
    serde_json::from_slice(&bytes).map_err(|e| HubError::Protocol { url: url.to_string(), message: format!("not the expected JSON: {e}") })
}

pub(crate) fn network(url: &str, e: reqwest::Error) -> HubError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    HubError::Network { url: redact_query(url), message }
}

/// Signed CDN URLs carry credentials in their query: never print it.
pub fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_path(p: &str) -> String {
    p.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn link_header_next() {
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static("<https://hub/api/x?cursor=abc>; rel=\"next\""));
        assert_eq!(next_link(&h).as_deref(), Some("https://hub/api/x?cursor=abc"));
        h.insert(LINK, HeaderValue::from_static("<https://hub/a>; rel=\"prev\""));
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("data/train 1.parquet"), "data/train%201.parquet");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(redact_query("https://cdn/x?X-Amz-Signature=s"), "https://cdn/x?…");
    }
}
