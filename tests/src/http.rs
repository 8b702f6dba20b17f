//! A minimal HTTP/1.1 server core over std's `TcpListener`: enough of the protocol for the
//! loopback servers (one request per connection, `Connection: close`), and full control of
//! what goes on the wire, which fault injection needs (cut bodies, wrong bytes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A parsed request head.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Lower-cased header names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self, key: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| v.to_string())
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// A response; `cut_after` sends only that many body bytes, then closes; status 0 closes
/// the connection without answering; `filler` follows the body with bytes made as they
/// are sent (a huge answer that costs the server no memory).
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub cut_after: Option<usize>,
    pub filler: Option<Filler>,
}

/// `count` copies of `byte`, then `tail`, sent after a response's body.
#[derive(Clone, Debug, Default)]
pub struct Filler {
    pub count: u64,
    pub byte: u8,
    pub tail: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, ..Default::default() }
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        Response::new(status).header("Content-Type", "application/json").body(serde_json::to_vec(v).expect("json"))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A running server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `handler` on a free loopback port.
    pub fn start(handler: Arc<dyn Fn(&Request) -> Response + Send + Sync>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &*handler));
            }
        });
        Server { addr, stop, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes a filler in 64 KiB pieces; stops when the client hangs up.
fn send_filler(out: &mut TcpStream, f: &Filler) -> std::io::Result<()> {
    let piece = vec![f.byte; 64 << 10];
    let mut left = f.count;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        out.write_all(&piece[..n])?;
        left -= n as u64;
    }
    out.write_all(&f.tail)
}

fn serve(stream: TcpStream, handler: &(dyn Fn(&Request) -> Response + Send + Sync)) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return };
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
        return;
    }
    let req = Request { method: method.to_string(), target: target.to_string(), headers, body };
    let resp = handler(&req);
    if resp.status == 0 {
        // Status 0: reset the connection without an answer.
        return;
    }
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let has_len = resp.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        let filled = resp.filler.as_ref().map_or(0, |f| f.count + f.tail.len() as u64);
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len() as u64 + filled));
    }
    head.push_str("Connection: close\r\n\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    if req.method != "HEAD" {
        let n = resp.cut_after.unwrap_or(resp.body.len()).min(resp.body.len());
        let _ = out.write_all(&resp.body[..n]);
        if let Some(f) = &resp.filler {
            let _ = send_filler(&mut out, f);
        }
    }
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}
