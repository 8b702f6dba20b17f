//! A loopback Hugging Face hub: the JSON API (revision lookup, tree listing with `Link`
//! pagination), `resolve` with a redirect to a separate "CDN" origin carrying
//! `X-Repo-Commit` / `X-Linked-Etag` / `X-Linked-Size`, byte ranges, an optional required
//! token, a log of every request, and faults to inject per file or endpoint. Hostile
//! modes: a listing whose next page lives on another origin, or whose next page is the
//! page itself (a listing without end), a revision answer whose commit is a path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::http::{Request, Response, Server};

/// A file in a served repo.
#[derive(Clone, Debug)]
pub struct ServedFile {
    pub path: String,
    pub bytes: Arc<Vec<u8>>,
    /// Stored in LFS (served through the CDN) or in git (served directly).
    pub lfs: bool,
}

impl ServedFile {
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&*self.bytes))
    }

    pub fn git_oid(&self) -> String {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", self.bytes.len()).as_bytes());
        h.update(&*self.bytes);
        hex::encode(h.finalize())
    }

    pub fn etag(&self) -> String {
        if self.lfs { self.sha256() } else { self.git_oid() }
    }
}

/// A dataset repo with one branch (`main`) at one commit.
#[derive(Clone, Debug)]
pub struct ServedRepo {
    pub id: String,
    pub commit: String,
    pub files: Vec<ServedFile>,
}

impl ServedRepo {
    pub fn new(id: &str, files: Vec<ServedFile>) -> Self {
        let mut h = sha1::Sha1::new();
        h.update(id.as_bytes());
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(f.etag().as_bytes());
        }
        ServedRepo { id: id.to_string(), commit: hex::encode(h.finalize()), files }
    }
}

/// A fault, applied to the next matching request(s).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the headers of the full body, then only this many bytes, then close.
    CutBody(usize),
    /// Send the right length of the wrong bytes.
    WrongBytes,
    /// 429 with `Retry-After: <seconds>`.
    TooManyRequests(u64),
    /// 500.
    ServerError,
    /// 401.
    Unauthorized,
    /// Sleep this many milliseconds before answering.
    Delay(u64),
}

/// Which requests a fault targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// CDN downloads of the file with this repo path.
    Download(String),
    /// The tree listing.
    Tree,
    /// The revision lookup.
    Revision,
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    /// `api` or `cdn`.
    pub origin: &'static str,
    pub method: String,
    pub target: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    /// The repo path of a CDN download.
    pub file: Option<String>,
}

#[derive(Default)]
struct State {
    repos: Vec<ServedRepo>,
    faults: Vec<(Target, VecDeque<Fault>)>,
    log: Vec<Logged>,
    page_size: usize,
    token: Option<String>,
    cdn_url: String,
    api_url: String,
    /// Where a listing's `Link: rel="next"` points (another origin), instead of the API.
    next_pages_at: Option<String>,
    /// Every page's `Link: rel="next"` names the page itself.
    endless_listing: bool,
    /// The `sha` the revision API answers instead of the commit.
    revision_sha: Option<String>,
}

/// The running hub: an API origin and a CDN origin.
pub struct LoopbackHub {
    state: Arc<Mutex<State>>,
    api: Server,
    cdn: Server,
}

impl LoopbackHub {
    pub fn start(repos: Vec<ServedRepo>) -> Self {
        let state = Arc::new(Mutex::new(State { repos, page_size: 50, ..Default::default() }));
        let s1 = state.clone();
        let api = Server::start(Arc::new(move |r: &Request| handle_api(&s1, r)));
        let s2 = state.clone();
        let cdn = Server::start(Arc::new(move |r: &Request| handle_cdn(&s2, r)));
        {
            let mut st = state.lock().unwrap();
            st.api_url = api.url();
            st.cdn_url = cdn.url();
        }
        LoopbackHub { state, api, cdn }
    }

    /// The value for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.api.url()
    }

    pub fn cdn_url(&self) -> String {
        self.cdn.url()
    }

    /// Entries per tree page (small values exercise pagination).
    pub fn set_page_size(&self, n: usize) {
        self.state.lock().unwrap().page_size = n.max(1);
    }

    /// Requires `Authorization: Bearer <token>` on the API (401 otherwise).
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.to_string());
    }

    /// Points every listing's next page at `base` (another server that serves the same
    /// repo), as a hostile mirror could.
    pub fn set_next_pages_at(&self, base: &str) {
        self.state.lock().unwrap().next_pages_at = Some(base.to_string());
    }

    /// Makes the revision API answer `sha` as the commit (a hostile server's path).
    pub fn set_revision_sha(&self, sha: &str) {
        self.state.lock().unwrap().revision_sha = Some(sha.to_string());
    }

    /// Makes every listing page name itself as the next page.
    pub fn set_endless_listing(&self) {
        self.state.lock().unwrap().endless_listing = true;
    }

    /// Queues faults for the next requests that hit `target`, in order.
    pub fn inject(&self, target: Target, faults: Vec<Fault>) {
        self.state.lock().unwrap().faults.push((target, faults.into()));
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// CDN GETs of one repo file.
    pub fn downloads_of(&self, path: &str) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.origin == "cdn" && l.method == "GET" && l.file.as_deref() == Some(path)).collect()
    }
}

fn next_fault(st: &mut State, target: &Target) -> Option<Fault> {
    st.faults.iter_mut().find(|(t, q)| t == target && !q.is_empty()).and_then(|(_, q)| q.pop_front())
}

fn log(st: &mut State, origin: &'static str, r: &Request, file: Option<String>) {
    st.log.push(Logged {
        origin,
        method: r.method.clone(),
        target: r.target.clone(),
        range: r.header("range").map(str::to_string),
        authorization: r.header("authorization").map(str::to_string),
        file,
    });
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, &serde_json::json!({ "error": message })).header("X-Error-Code", code).header("X-Error-Message", message)
}

/// Applies a non-body fault; returns the response to send instead, if any.
fn status_fault(f: &Fault) -> Option<Response> {
    match f {
        Fault::TooManyRequests(s) => Some(error(429, "RateLimited", "slow down").header("Retry-After", s.to_string())),
        Fault::ServerError => Some(error(500, "Internal", "injected failure")),
        Fault::Unauthorized => Some(error(401, "Unauthorized", "Invalid credentials")),
        Fault::Delay(ms) => {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
            None
        }
        _ => None,
    }
}

/// The repo `owner/name` if `rev` (percent-encoded) names its branch or commit; else the hub's 404.
fn repo_at(st: &State, owner: &str, name: &str, rev: &str) -> Result<(ServedRepo, String), Response> {
    let id = format!("{owner}/{name}");
    let repo = st.repos.iter().find(|x| x.id == id).cloned().ok_or_else(|| error(404, "RepoNotFound", "Repository not found"))?;
    let rev = percent_decode(rev);
    if rev != "main" && rev != repo.commit {
        return Err(error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}")));
    }
    Ok((repo, rev))
}

/// The injected answer for the next API request to `target`, if a fault is queued.
fn api_fault(st: &mut State, target: &Target) -> Option<Response> {
    next_fault(st, target).and_then(|f| status_fault(&f))
}

fn handle_api(state: &Arc<Mutex<State>>, r: &Request) -> Response {
    let mut st = state.lock().unwrap();
    log(&mut st, "api", r, None);
    if let Some(t) = &st.token
        && r.header("authorization") != Some(&format!("Bearer {t}"))
    {
        return error(401, "Unauthorized", "Invalid username or password.");
    }
    let path = r.path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/datasets/{o}/{n}/revision/{rev}  |  /api/datasets/{o}/{n}/tree/{rev}[/path]
    if segs.len() >= 6 && segs[0] == "api" && segs[1] == "datasets" {
        let (repo, rev) = match repo_at(&st, segs[2], segs[3], segs[5]) {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        match segs[4] {
            "revision" => {
                if let Some(resp) = api_fault(&mut st, &Target::Revision) {
                    return resp;
                }
                let siblings: Vec<_> = repo.files.iter().map(|f| serde_json::json!({ "rfilename": f.path })).collect();
                let sha = st.revision_sha.clone().unwrap_or(repo.commit);
                return Response::json(200, &serde_json::json!({ "id": repo.id, "sha": sha, "private": false, "siblings": siblings }));
            }
            "tree" => {
                if let Some(resp) = api_fault(&mut st, &Target::Tree) {
                    return resp;
                }
                let prefix = segs[6..].iter().map(|s| percent_decode(s)).collect::<Vec<_>>().join("/");
                let entries = tree_entries(&repo, &prefix);
                if entries.is_empty() && !prefix.is_empty() {
                    return error(404, "EntryNotFound", &format!("{prefix} does not exist on \"{rev}\""));
                }
                let start: usize = r.query("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                let page: Vec<_> = entries.iter().skip(start).take(st.page_size).cloned().collect();
                let mut resp = Response::json(200, &serde_json::Value::Array(page));
                if st.endless_listing {
                    return resp.header("Link", format!("<{}{}>; rel=\"next\"", st.api_url, r.target));
                }
                if start + st.page_size < entries.len() {
                    let base = r.target.split('?').next().unwrap_or("");
                    let origin = st.next_pages_at.as_deref().unwrap_or(&st.api_url);
                    resp = resp.header("Link", format!("<{origin}{base}?recursive=true&cursor={}>; rel=\"next\"", start + st.page_size));
                }
                return resp;
            }
            _ => {}
        }
    }
    // /datasets/{o}/{n}/resolve/{rev}/{path...}
    if segs.len() >= 6 && segs[0] == "datasets" && segs[3] == "resolve" {
        let (repo, rev) = match repo_at(&st, segs[1], segs[2], segs[4]) {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        let file_path = segs[5..].iter().map(|s| percent_decode(s)).collect::<Vec<_>>().join("/");
        let Some(file) = repo.files.iter().find(|f| f.path == file_path) else {
            return error(404, "EntryNotFound", &format!("{file_path} does not exist on \"{rev}\""));
        };
        let common = |resp: Response| {
            resp.header("X-Repo-Commit", repo.commit.clone()).header("ETag", format!("\"{}\"", file.git_oid())).header("Accept-Ranges", "bytes")
        };
        if file.lfs {
            let location =
                format!("{}/repos/{}/{}?path={}&X-Amz-Signature=loopback", st.cdn_url, repo.id.replace('/', "--"), file.sha256(), percent_encode(&file.path));
            return common(Response::new(302))
                .header("Location", location)
                .header("X-Linked-Etag", format!("\"{}\"", file.sha256()))
                .header("X-Linked-Size", file.bytes.len().to_string());
        }
        drop(st);
        return common(serve_bytes(r, &file.bytes));
    }
    error(404, "NotFound", "no such endpoint on the loopback hub")
}

fn handle_cdn(state: &Arc<Mutex<State>>, r: &Request) -> Response {
    let mut st = state.lock().unwrap();
    // /repos/{repo--folder}/{sha256}?path=...
    let segs: Vec<&str> = r.path().trim_start_matches('/').split('/').collect();
    let file = (segs.len() == 3 && segs[0] == "repos")
        .then(|| st.repos.iter().filter(|x| x.id.replace('/', "--") == segs[1]).flat_map(|x| x.files.iter()).find(|f| f.lfs && f.sha256() == segs[2]).cloned())
        .flatten();
    log(&mut st, "cdn", r, file.as_ref().map(|f| f.path.clone()));
    let Some(file) = file else { return Response::new(404).body("NoSuchKey") };
    let fault = if r.method == "GET" { next_fault(&mut st, &Target::Download(file.path.clone())) } else { None };
    drop(st);
    if let Some(resp) = fault.as_ref().and_then(status_fault) {
        return resp;
    }
    let mut resp = serve_bytes(r, &file.bytes).header("ETag", format!("\"{}\"", file.sha256()));
    match fault {
        Some(Fault::CutBody(n)) => resp.cut_after = Some(n),
        Some(Fault::WrongBytes) => {
            for b in resp.body.iter_mut().step_by(97) {
                *b ^= 0x5a;
            }
        }
        _ => {}
    }
    resp
}

/// 200 with the bytes, or 206 for a satisfiable `Range: bytes=a-[b]`, or 416.
fn serve_bytes(r: &Request, bytes: &[u8]) -> Response {
    let len = bytes.len();
    if let Some(range) = r.header("range").and_then(|v| v.strip_prefix("bytes=")) {
        let (a, b) = range.split_once('-').unwrap_or((range, ""));
        let start: usize = a.trim().parse().unwrap_or(usize::MAX);
        let end: usize = if b.trim().is_empty() { len.saturating_sub(1) } else { b.trim().parse().unwrap_or(0) };
        if start >= len || end < start {
            return Response::new(416).header("Content-Range", format!("bytes */{len}"));
        }
        let end = end.min(len - 1);
        return Response::new(206)
            .header("Content-Range", format!("bytes {start}-{end}/{len}"))
            .header("Accept-Ranges", "bytes")
            .body(bytes[start..=end].to_vec());
    }
    Response::new(200).header("Accept-Ranges", "bytes").body(bytes.to_vec())
}

/// The tree listing under `prefix`: folders and files, recursively, sorted by path.
fn tree_entries(repo: &ServedRepo, prefix: &str) -> Vec<serde_json::Value> {
    let under = |p: &str| prefix.is_empty() || p.starts_with(&format!("{prefix}/"));
    let mut dirs = BTreeMap::new();
    let mut out = Vec::new();
    for f in repo.files.iter().filter(|f| under(&f.path)) {
        let mut acc = String::new();
        let parts: Vec<&str> = f.path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            if under(&acc) {
                dirs.insert(acc.clone(), ());
            }
        }
        let mut e = serde_json::json!({ "type": "file", "path": f.path, "size": f.bytes.len(), "oid": f.git_oid() });
        if f.lfs {
            e["lfs"] = serde_json::json!({ "oid": f.sha256(), "size": f.bytes.len(), "pointerSize": 134 });
        }
        out.push(e);
    }
    for d in dirs.keys() {
        out.push(serde_json::json!({ "type": "directory", "path": d, "size": 0, "oid": "0000000000000000000000000000000000000000" }));
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
