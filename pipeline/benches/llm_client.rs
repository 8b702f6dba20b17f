//! `make bench`: the LLM client's own overhead. A keep-alive OpenAI-compatible server in
//! the same process answers at once (or after a fixed latency); the client sends N
//! requests through its pool, windows and retry loop. Reports requests/s, and with a
//! fixed latency the achieved throughput over the ideal `concurrency / latency`, where
//! `latency` is what one request alone takes (the server's sleep rounds up to the timer's
//! millisecond) and the request count is a multiple of the concurrency (no partial round).
//! Knobs: `HABITS_BENCH_REQUESTS` (default 40000), `HABITS_BENCH_LATENCY_MS` (default 50).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pipeline::llm::protocol::{Message, Sampling};
use pipeline::llm::{LlmClient, LlmSettings};
use pipeline::retry::Backoff;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ANSWER: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Thoughts: none.\n<count>0</count>"},"finish_reason":"stop"}],"usage":{"prompt_tokens":900,"completion_tokens":12}}"#;

/// Serves chat completions over keep-alive connections, after `latency`.
async fn serve(listener: tokio::net::TcpListener, latency: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            loop {
                let mut len = 0usize;
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let h = line.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}", ANSWER.len(), ANSWER);
                if w.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn client(endpoint: String, concurrency: usize) -> LlmClient {
    LlmClient::new(LlmSettings {
        endpoints: vec![endpoint],
        model: "bench".into(),
        api_key: None,
        start_concurrency: concurrency,
        min_concurrency: 1,
        max_concurrency: concurrency,
        timeout: Duration::from_secs(30),
        backoff: Backoff { max_attempts: 3, base: Duration::from_millis(10), max: Duration::from_secs(1) },
        breaker_after: 0,
        api_key_env: String::new(),
    })
    .unwrap()
}

async fn drive(client: &LlmClient, n: usize, concurrency: usize) -> Duration {
    let prompt = "x".repeat(3000);
    let messages = Arc::new(vec![Message::user(prompt)]);
    let sampling = Sampling { temperature: 0.0, max_tokens: 1024, top_p: None, seed: None };
    let t = Instant::now();
    let ok = futures_util::stream::iter(0..n)
        .map(|_| {
            let (client, messages, sampling) = (client.clone(), messages.clone(), sampling.clone());
            async move { client.complete(&messages, &sampling, None).await.is_ok() }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| futures_util::future::ready(*ok))
        .count()
        .await;
    assert_eq!(ok, n, "every request must succeed");
    t.elapsed()
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("llm_client: bench");
        return;
    }
    let n: usize = std::env::var("HABITS_BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000);
    let latency_ms: u64 = std::env::var("HABITS_BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for (label, latency, concurrency, requests) in [
            ("zero latency, 64 in flight", Duration::ZERO, 64usize, n),
            ("fixed latency, 256 in flight", Duration::from_millis(latency_ms), 256, (n / 4).div_ceil(256) * 256),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/v1", listener.local_addr().unwrap());
            let server = tokio::spawn(serve(listener, latency));
            let c = client(url, concurrency);
            drive(&c, concurrency * 4, concurrency).await; // warm the connections
            let alone = drive(&c, 20, 1).await / 20;
            let before = rss_mb();
            let elapsed = drive(&c, requests, concurrency).await;
            let rate = requests as f64 / elapsed.as_secs_f64();
            let ideal = if latency.is_zero() { f64::NAN } else { concurrency as f64 / alone.as_secs_f64() };
            println!(
                "{label:<30} {requests:>7} requests in {:>6.2} s: {rate:>9.0} req/s{}  rss {before:.0} -> {:.0} MB",
                elapsed.as_secs_f64(),
                if ideal.is_nan() {
                    String::new()
                } else {
                    format!(" ({:.3} of ideal {ideal:.0}/s; one request alone {:.1} ms)", rate / ideal, alone.as_secs_f64() * 1e3)
                },
                rss_mb()
            );
            server.abort();
        }
    });
}
