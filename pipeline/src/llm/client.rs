//! Sending chat completions (or text completions of a raw prompt): a permit from the
//! endpoint pool, one HTTP attempt with a
//! timeout, classification of the outcome, and retries with backoff for retryable
//! classes (honouring `Retry-After`). Usage, latency, endpoint and attempts come back
//! with every answer. The API key is read from the environment and never printed; an
//! endpoint is recorded without its userinfo. An answer is read up to a cap that follows
//! from `max_tokens`: a server that sends more gets a `bad_response`, not our memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::breaker::Breaker;
use super::error::{FailureClass, LlmError};
use super::limiter::{Limiter, Pool};
use super::protocol::{ChatRequest, ChatResponse, Message, Sampling, TextRequest, TextResponse, Usage};
use crate::http_client::{body_up_to, transport_message};
use crate::origin::printable;
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
    /// Stop after this many configuration failures in a row from one endpoint (0: never).
    pub breaker_after: u32,
    /// The variable the API key came from (named in the breaker's message).
    pub api_key_env: String,
}

/// Extra fields of a request body (structured output, in the server's dialect).
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// What a request asks: a conversation (with the server's structured-output fields), or a
/// raw prompt to continue.
#[derive(Clone, Copy, Debug)]
pub enum Ask<'a> {
    Chat(&'a [Message], Option<&'a Extra>),
    Text(&'a str),
}

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

/// The most bytes an answer may take: room for the JSON around it plus 64 bytes per
/// token asked for (a token is a few bytes of text, more once escaped).
pub fn answer_cap(max_tokens: u32) -> usize {
    (64 << 10) + 64 * max_tokens as usize
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    pool: Arc<Pool>,
    /// The endpoints as they are printed and journaled (no userinfo), in pool order.
    shown: Arc<Vec<String>>,
    /// Set by [`LlmClient::stop_sending`] or the breaker: requests not yet sent fail as `Stopped`.
    stopped: Arc<AtomicBool>,
    breaker: Arc<Mutex<Breaker>>,
    /// The breaker's message, once it tripped.
    tripped: Arc<Mutex<Option<String>>>,
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
        let shown = pool.endpoints.iter().map(|(e, _)| printable(e)).collect();
        let breaker = Arc::new(Mutex::new(Breaker::new(settings.breaker_after, &settings.api_key_env)));
        Ok(LlmClient {
            http,
            pool,
            shown: Arc::new(shown),
            stopped: Arc::new(AtomicBool::new(false)),
            breaker,
            tripped: Arc::new(Mutex::new(None)),
            settings: Arc::new(settings),
        })
    }

    /// Requests in flight now, over all endpoints.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// From now on, requests that have not been sent (those waiting for room or for a
    /// retry) fail as `Stopped` instead; those already sent finish.
    pub fn stop_sending(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// The context each endpoint reports for the model (`llm::context`), in order.
    pub async fn contexts(&self) -> Vec<(String, Option<(u64, &'static str)>)> {
        let mut out = Vec::new();
        for (endpoint, _) in &self.pool.endpoints {
            let reported = super::context::server_context(&self.http, endpoint, &self.settings.model, self.settings.api_key.as_ref()).await;
            out.push((endpoint.clone(), reported));
        }
        out
    }

    /// Why the client stopped sending on its own: the circuit breaker's message.
    pub fn tripped(&self) -> Option<String> {
        self.tripped.lock().expect("breaker").clone()
    }

    /// Counts an answer (or failed attempt) from endpoint `shown` with the breaker.
    fn watch(&self, shown: &str, failure: Option<&LlmError>) {
        if let Some(message) = self.breaker.lock().expect("breaker").observe(shown, failure) {
            self.tripped.lock().expect("breaker").get_or_insert(message);
            self.stop_sending();
        }
    }

    /// Sends one conversation, retrying retryable failures.
    pub async fn complete(&self, messages: &[Message], sampling: &Sampling, extra: Option<&Extra>) -> Result<Completion, Failure> {
        self.request(Ask::Chat(messages, extra), sampling).await
    }

    /// Sends one raw prompt for the model to continue (`/completions`), retrying retryable
    /// failures.
    pub async fn continue_text(&self, prompt: &str, sampling: &Sampling) -> Result<Completion, Failure> {
        self.request(Ask::Text(prompt), sampling).await
    }

    async fn request(&self, ask: Ask<'_>, sampling: &Sampling) -> Result<Completion, Failure> {
        let backoff = &self.settings.backoff;
        let mut attempt = 1;
        loop {
            let permit = self.pool.acquire().await;
            if self.stopped.load(Ordering::SeqCst) {
                let error =
                    LlmError { class: FailureClass::Stopped, endpoint: String::new(), message: "not sent: the stage stopped".into(), retry_after: None };
                return Err(Failure { error, attempts: attempt - 1 });
            }
            let (endpoint, limiter) = &self.pool.endpoints[permit.index];
            let shown = &self.shown[permit.index];
            let started = Instant::now();
            let result = self.attempt((endpoint, shown), ask, sampling).await;
            drop(permit);
            self.watch(shown, result.as_ref().err());
            match result {
                Ok((content, finish_reason, usage)) => {
                    limiter.on_success();
                    return Ok(Completion { content, finish_reason, usage, latency: started.elapsed(), endpoint: shown.clone(), attempts: attempt });
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

    /// One attempt at `endpoint` (its URL, and how it is shown).
    async fn attempt(&self, (endpoint, shown): (&str, &str), ask: Ask<'_>, sampling: &Sampling) -> Result<(String, Option<String>, Usage), LlmError> {
        let fail = |class, message: String, retry_after| LlmError { class, endpoint: shown.to_string(), message, retry_after };
        let model = &self.settings.model;
        let (path, json) = match ask {
            Ask::Chat(messages, extra) => ("chat/completions", serde_json::to_vec(&ChatRequest { model, messages, sampling, extra })),
            Ask::Text(prompt) => ("completions", serde_json::to_vec(&TextRequest { model, prompt, sampling })),
        };
        let json = json.map_err(|e| fail(FailureClass::BadRequest, e.to_string(), None))?;
        let mut req =
            self.http.post(format!("{endpoint}/{path}")).header(reqwest::header::CONTENT_TYPE, "application/json").body(json).timeout(self.settings.timeout);
        if let Some(key) = &self.settings.api_key {
            req = req.bearer_auth(key.expose());
        }
        let resp = req.send().await.map_err(|e| fail(transport_class(&e), transport_message(e), None))?;
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let cap = answer_cap(sampling.max_tokens);
        let body = body_up_to(resp, cap).await.map_err(|e| fail(transport_class(&e), transport_message(e), None))?;
        if body.over_cap && status.is_success() {
            let message = format!("the answer is longer than {} KiB, more than max_tokens = {} can fill; not read further", cap >> 10, sampling.max_tokens);
            return Err(fail(FailureClass::BadResponse, message, None));
        }
        let bytes = body.bytes;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(400).collect();
            return Err(fail(status_class(status, &text), format!("HTTP {}: {}", status.as_u16(), text.trim()), retry_after));
        }
        let not_an_answer = |e: serde_json::Error| {
            let head: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            fail(FailureClass::BadResponse, format!("not a {} ({e}): {head}", path.replace('/', " ").trim_end_matches('s')), None)
        };
        let no_choice = || fail(FailureClass::BadResponse, "no choices in the answer".into(), None);
        match ask {
            Ask::Chat(..) => {
                let parsed: ChatResponse = serde_json::from_slice(&bytes).map_err(not_an_answer)?;
                let choice = parsed.choices.into_iter().next().ok_or_else(no_choice)?;
                Ok((choice.message.content.unwrap_or_default(), choice.finish_reason, parsed.usage.unwrap_or_default()))
            }
            Ask::Text(_) => {
                let parsed: TextResponse = serde_json::from_slice(&bytes).map_err(not_an_answer)?;
                let choice = parsed.choices.into_iter().next().ok_or_else(no_choice)?;
                Ok((choice.text.unwrap_or_default(), choice.finish_reason, parsed.usage.unwrap_or_default()))
            }
        }
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
        404 => FailureClass::NotFound,
        408 => FailureClass::Timeout,
        400 | 413 | 422 if lower.contains("context") && (lower.contains("length") || lower.contains("size") || lower.contains("exceed")) => {
            FailureClass::ContextOverflow
        }
        s if s >= 500 => FailureClass::ServerError,
        _ => FailureClass::BadRequest,
    }
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
        assert_eq!(status_class(StatusCode::NOT_FOUND, ""), FailureClass::NotFound);
        assert!(FailureClass::NotFound.retry_on_rerun() && !FailureClass::NotFound.is_retryable());
        assert!(!FailureClass::ContextOverflow.retry_on_rerun());
        assert!(FailureClass::ALL.iter().all(|c| FailureClass::from_name(c.name()) == Some(*c)));
        assert!(!FailureClass::ContextOverflow.is_retryable() && FailureClass::Timeout.is_retryable());
    }
}
