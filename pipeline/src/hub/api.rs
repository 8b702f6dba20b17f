//! The hub's JSON interface: pin a revision to its commit, list files (with `Link`
//! pagination, a page limit, and the token kept to the endpoint's origin), and send any
//! request with the shared retry policy. Bodies are read up to a cap: a listing page, an
//! error body, a range read by its length.

use std::time::Duration;

use reqwest::header::{HeaderMap, LINK, RANGE, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use super::error::HubError;
use super::glob::Includes;
use super::names::{is_blob_id, is_commit, repo_path_problem};
use super::settings::HubSettings;
use crate::http_client::body_up_to;
use crate::origin::{printable, same_origin};
use crate::retry::parse_retry_after;

/// The most one JSON answer (a revision, a listing page) may hold; the hub's pages are
/// well under a megabyte.
const MAX_JSON_BYTES: usize = 64 << 20;
/// The most of an error body kept for the message.
const MAX_ERROR_BODY_BYTES: usize = 4 << 10;

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
    Err(HubError::Protocol { url: printable(url), message: format!("{problem}; nothing was written (is HF_ENDPOINT a hub you trust?)") })
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
            return Err(HubError::Protocol { url: printable(&url), message });
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
            let mut pages = Vec::new();
            while let Some(page_url) = next.take() {
                self.check_next_page(&pages, &page_url)?;
                let resp = self.send(&page_url, None, &what).await?;
                next = next_link(resp.headers()).map(|link| resolve_link(&page_url, &link));
                let entries: Vec<TreeEntry> = json(resp, &page_url).await?;
                for e in entries {
                    if e.kind == "file" && includes.matches(&e.path) {
                        let file = RepoFile { path: e.path, size: e.size, oid: e.oid, lfs: e.lfs };
                        check_listed(&file, &page_url)?;
                        files.push(file);
                    }
                }
                pages.push(page_url);
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        Ok(files)
    }

    /// A listing's next page is followed while the listing stays under the page limit and
    /// does not come back to a page it listed (a server that never ends); the token goes
    /// only to the endpoint's origin, so a page elsewhere is fetched without it.
    fn check_next_page(&self, listed: &[String], next: &str) -> Result<(), HubError> {
        let limit = self.settings.max_listing_pages as usize;
        let message = if listed.len() >= limit {
            format!("the listing has more than {limit} pages (hub.max_listing_pages); raise it if the repo is that large")
        } else if listed.iter().any(|p| p == next) {
            "the listing's next page is a page it already listed (a loop)".to_string()
        } else {
            if !listed.is_empty() && !same_origin(next, &self.settings.endpoint) && self.settings.token.is_some() {
                tracing::warn!(
                    "the listing continues at {}, another origin than {}: fetched without the token",
                    printable(next),
                    printable(&self.settings.endpoint)
                );
            }
            return Ok(());
        };
        Err(HubError::Protocol { url: printable(next), message })
    }

    /// Bytes `start..end` of a file (for parquet footers during `plan`): a server that
    /// sends more than asked is an error after `end - start + 1` bytes, not a buffer.
    pub async fn read_range(&self, repo: &str, commit: &str, path: &str, start: u64, end: u64) -> Result<Vec<u8>, HubError> {
        let url = self.resolve_url(repo, commit, path);
        let range = format!("bytes={}-{}", start, end.saturating_sub(1));
        let resp = self.send(&url, Some(&range), &format!("file `{path}`")).await?;
        let expect = (end - start) as usize;
        let body = body_up_to(resp, expect).await.map_err(|e| network(&url, e))?;
        if body.over_cap || body.bytes.len() != expect {
            let got = if body.over_cap { "more".to_string() } else { body.bytes.len().to_string() };
            return Err(HubError::Protocol { url: printable(&url), message: format!("asked for {expect} bytes, got {got}") });
        }
        Ok(body.bytes)
    }

    /// Sends a GET with retries for retryable failures; the answer has a success status.
    pub async fn send(&self, url: &str, range: Option<&str>, what: &str) -> Result<Response, HubError> {
        let backoff = &self.settings.backoff;
        let deadline = self.settings.request_deadline;
        let mut attempt = 1;
        loop {
            let once = tokio::time::timeout(deadline, self.send_once(url, range, what)).await.unwrap_or_else(|_| {
                Err(HubError::Network { url: printable(url), message: format!("no complete answer within {}s (hub.request_deadline_s)", deadline.as_secs()) })
            });
            match once {
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

    /// One GET: a success status, or the error it maps to. The token is sent only to the
    /// endpoint's own origin. API requests (all but downloads, which `send_once` alone
    /// serves) have an overall deadline.
    pub async fn send_once(&self, url: &str, range: Option<&str>, what: &str) -> Result<Response, HubError> {
        let mut req = self.http.get(url);
        if let Some(token) = self.settings.token.as_ref().filter(|_| same_origin(url, &self.settings.endpoint)) {
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
    let url = printable(resp.url().as_str());
    Err(match status {
        StatusCode::UNAUTHORIZED => HubError::Unauthorized { url },
        StatusCode::FORBIDDEN => HubError::Forbidden { url },
        StatusCode::NOT_FOUND => HubError::NotFound { url, what: what.to_string() },
        _ => {
            let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            let body = body_up_to(resp, MAX_ERROR_BODY_BYTES).await.map(|b| b.bytes).unwrap_or_default();
            let body: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            HubError::Status { status: status.as_u16(), url, body, retry_after }
        }
    })
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response, url: &str) -> Result<T, HubError> {
    let body = body_up_to(resp, MAX_JSON_BYTES).await.map_err(|e| network(url, e))?;
    if body.over_cap {
        return Err(HubError::Protocol { url: printable(url), message: format!("the answer is larger than {} MiB", MAX_JSON_BYTES >> 20) });
    }
    serde_json::from_slice(&body.bytes).map_err(|e| HubError::Protocol { url: printable(url), message: format!("not the expected JSON: {e}") })
}

pub(crate) fn network(url: &str, e: reqwest::Error) -> HubError {
    HubError::Network { url: printable(url), message: crate::http_client::transport_message(e) }
}

/// A `Link` target made absolute against the page it came with.
fn resolve_link(page: &str, link: &str) -> String {
    reqwest::Url::parse(page).and_then(|base| base.join(link)).map(String::from).unwrap_or_else(|_| link.to_string())
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
        assert_eq!(resolve_link("http://hub/api/x?recursive=true", "/api/x?cursor=2"), "http://hub/api/x?cursor=2");
        assert_eq!(resolve_link("http://hub/api/x", "https://other/y"), "https://other/y");
    }
}
