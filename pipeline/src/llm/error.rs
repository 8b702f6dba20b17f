//! LLM request failures, sorted into classes: some heal with a retry, the others are
//! recorded with their reason and never retried.

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
    /// 401/403: the key is missing or wrong.
    Auth,
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
            FailureClass::Auth => "auth",
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
