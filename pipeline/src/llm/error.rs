//! LLM request failures, sorted into classes: some heal with a retry; those caused by
//! the configuration (a wrong key, URL or request) are asked again on the next run, once
//! it is fixed; the rest are recorded with their reason and not asked again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The class of a failed attempt (a column of the journal, and a progress counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// 429: the server asks us to slow down.
    RateLimited,
    /// 503: the server is overloaded or starting.
    Overloaded,
    /// Other 5xx.
    ServerError,
    /// No answer within the request timeout.
    Timeout,
    /// Connection refused or reset, body cut.
    Connection,
    /// The answer is not the chat-completions JSON.
    BadResponse,
    /// The prompt does not fit the model's context.
    ContextOverflow,
    /// Any other 4xx: the request itself is wrong.
    BadRequest,
    /// 404: nothing answers at the URL (an endpoint without `/v1`, a wrong path).
    NotFound,
    /// 401/403: the key is missing or wrong.
    Auth,
    /// Not sent: the batch stopped (journal error, circuit breaker) while the request
    /// waited for room. Never journaled.
    Stopped,
}

impl FailureClass {
    /// Retryable classes; the others fail the request at once.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureClass::RateLimited
                | FailureClass::Overloaded
                | FailureClass::ServerError
                | FailureClass::Timeout
                | FailureClass::Connection
                | FailureClass::BadResponse
        )
    }

    /// Classes that a fixed configuration cures (a key, a URL, a model name, a request
    /// shape): not retried now, but asked again on the next run, and counted by the
    /// circuit breaker.
    pub fn is_configuration(self) -> bool {
        matches!(self, FailureClass::Auth | FailureClass::NotFound | FailureClass::BadRequest)
    }

    /// Whether a request that failed with this class is sent again by the next run.
    pub fn retry_on_rerun(self) -> bool {
        self.is_retryable() || self.is_configuration()
    }

    /// Every class a journal records (not `Stopped`), for messages and flags.
    pub const ALL: [FailureClass; 10] = [
        FailureClass::RateLimited,
        FailureClass::Overloaded,
        FailureClass::ServerError,
        FailureClass::Timeout,
        FailureClass::Connection,
        FailureClass::BadResponse,
        FailureClass::ContextOverflow,
        FailureClass::BadRequest,
        FailureClass::NotFound,
        FailureClass::Auth,
    ];

    /// The class of a journal's `failure` column.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Classes that mean "send less": the endpoint's concurrency is cut.
    pub fn is_overload(self) -> bool {
        matches!(self, FailureClass::RateLimited | FailureClass::Overloaded)
    }

    pub fn name(self) -> &'static str {
        match self {
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Overloaded => "overloaded",
            FailureClass::ServerError => "server_error",
            FailureClass::Timeout => "timeout",
            FailureClass::Connection => "connection",
            FailureClass::BadResponse => "bad_response",
            FailureClass::ContextOverflow => "context_overflow",
            FailureClass::BadRequest => "bad_request",
            FailureClass::NotFound => "not_found",
            FailureClass::Auth => "auth",
            FailureClass::Stopped => "stopped",
        }
    }
}

/// A failed attempt: its class, what the server said, and the delay it asked for.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{} from {endpoint}: {message}", class.name())]
pub struct LlmError {
    pub class: FailureClass,
    pub endpoint: String,
    pub message: String,
    pub retry_after: Option<Duration>,
}
