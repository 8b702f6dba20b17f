//! Sending chat completions: a permit from the endpoint pool, one HTTP attempt with a
//! timeout, classification of the outcome, and retries with backoff for retryable
//! classes (honouring `Retry-After`). Usage, latency, endpoint and attempts come back
//! with every answer. The API key is read from the environment and never printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::error::{FailureClass, LlmError};
use super::limiter::{Limiter, Pool};
use super::protocol::{ChatRequest, ChatResponse, Message, Sampling, Usage};
use crate::retry::{Backoff, parse_retry_after};
use crate::secret::Secret;

/// Everything the client needs.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    /// Base URLs ending in `/v1` (e.g. `http://127.0.0.1:8000/v1`).
    pub endpoints: Vec<String>,
    pub model: String,
    pub api_key: Option<Secret>,
    /// Window bounds per endpoint.
    pub start_concurrency: usize,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    pub timeout: Duration,
    pub backoff: Backoff,
}

/// Extra fields of a request body (structured output, in the server's dialect).
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// A successful answer.
#[derive(Clone, Debug)]
pub struct Completion {
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub latency: Duration,
    pub endpoint: String,
    pub attempts: u32,
}

/// A request that failed for good, with its last error and the attempts it took.
#[derive(Clone, Debug)]
pub struct Failure {
    pub error: LlmError,
    pub attempts: u32,
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    pool: Arc<Pool>,
    pub settings: Arc<LlmSettings>,
}

impl LlmClient {
    pub fn new(settings: LlmSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(!settings.endpoints.is_empty(), "no LLM endpoint: set llm.endpoints in the config or pass --endpoint URL");
        let http = crate::http_client::builder().connect_timeout(Duration::from_secs(10)).pool_max_idle_per_host(settings.max_concurrency).build()?;
        let pool = Pool::new(
            settings
                .endpoints
                .iter()
                .map(|e| (e.trim_end_matches('/').to_string(), Limiter::new(settings.start_concurrency, settings.min_concurrency, settings.max_concurrency)))
                .collect(),
        );
        Ok(LlmClient { http, pool, settings: Arc::new(settings) })
    }

    /// Requests in flight now, over all endpoints.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// Sends one conversation, retrying retryable failures.
    pub async fn complete(&self, messages: &[Message], sampling: &Sampling, extra: Option<&Extra>) -> Result<Completion, Failure> {
        let backoff = &self.settings.backoff;
        let mut attempt = 1;
        loop {
            let permit = self.pool.acquire().await;
            let (endpoint, limiter) = &self.pool.endpoints[permit.index];
            let started = Instant::now();
            let result = self.attempt(endpoint, messages, sampling, extra).await;
            drop(permit);
            match result {
                Ok((content, finish_reason, usage)) => {
                    limiter.on_success();
                    return Ok(Completion { content, finish_reason, usage, latency: started.elapsed(), endpoint: endpoint.clone(), attempts: attempt });
                }
                Err(e) => {
                    if e.class.is_overload() {
                        limiter.on_overload();
                    }
                    if !e.class.is_retryable() || !backoff.allows_another(attempt) {
                        return Err(Failure { error: e, attempts: attempt });
                    }
                    let delay = backoff.delay_with_hint(attempt, e.retry_after);
                    tracing::debug!("{e}; retry {attempt} in {:.2}s", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        endpoint: &str,
        messages: &[Message],
        sampling: &Sampling,
        extra: Option<&Extra>,
    ) -> Result<(String, Option<String>, Usage), LlmError> {
        let fail = |class, message: String, retry_after| LlmError { class, endpoint: endpoint.to_string(), message, retry_after };
        let body = ChatRequest { model: &self.settings.model, messages, sampling, extra };
        let json = serde_json::to_vec(&body).map_err(|e| fail(FailureClass::BadRequest, e.to_string(), None))?;
        let mut req = self
            .http
            .post(format!("{endpoint}/chat/completions"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json)
            .timeout(self.settings.timeout);
        if let Some(key) = &self.settings.api_key {
            req = req.bearer_auth(key.expose());
        }
        let resp = req.send().await.map_err(|e| fail(transport_class(&e), chain(&e), None))?;
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let bytes = resp.bytes().await.map_err(|e| fail(transport_class(&e), chain(&e), None))?;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(400).collect();
            return Err(fail(status_class(status, &text), format!("HTTP {}: {}", status.as_u16(), text.trim()), retry_after));
        }
        let parsed: ChatResponse = serde_json::from_slice(&bytes).map_err(|e| {
            let head: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            fail(FailureClass::BadResponse, format!("not a chat completion ({e}): {head}"), None)
        })?;
        let choice = parsed.choices.into_iter().next().ok_or_else(|| fail(FailureClass::BadResponse, "no choices in the answer".into(), None))?;
        let content = choice.message.content.unwrap_or_default();
        Ok((content, choice.finish_reason, parsed.usage.unwrap_or_default()))
    }
}

fn transport_class(e: &reqwest::Error) -> FailureClass {
    if e.is_timeout() {
        FailureClass::Timeout
    } else if e.is_decode() {
        FailureClass::BadResponse
    } else {
        FailureClass::Connection
    }
}

fn status_class(status: StatusCode, body: &str) -> FailureClass {
    let lower = body.to_ascii_lowercase();
    match status.as_u16() {
        429 => FailureClass::RateLimited,
        503 => FailureClass::Overloaded,
        401 | 403 => FailureClass::Auth,
        408 => FailureClass::Timeout,
        400 | 413 | 422 if lower.contains("context") && (lower.contains("length") || lower.contains("size") || lower.contains("exceed")) => {
            FailureClass::ContextOverflow
        }
        s if s >= 500 => FailureClass::ServerError,
        _ => FailureClass::BadRequest,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS, ""), FailureClass::RateLimited);
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE, ""), FailureClass::Overloaded);
        assert_eq!(status_class(StatusCode::BAD_REQUEST, "This model's maximum context length is 4096 tokens"), FailureClass::ContextOverflow);
        assert_eq!(status_class(StatusCode::BAD_REQUEST, "the request exceeds the available context size"), FailureClass::ContextOverflow);
        assert_eq!(status_class(StatusCode::BAD_REQUEST, "unknown field"), FailureClass::BadRequest);
        assert_eq!(status_class(StatusCode::BAD_GATEWAY, ""), FailureClass::ServerError);
        assert!(!FailureClass::ContextOverflow.is_retryable() && FailureClass::Timeout.is_retryable());
    }
}
