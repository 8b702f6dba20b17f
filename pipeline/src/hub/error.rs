//! Hub failures, sorted into the ones worth retrying and the ones that need the user.

use std::time::Duration;

/// What went wrong talking to the hub; the message always says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "401 Unauthorized for {url}: the repo is private or gated, or does not exist. Set HF_TOKEN to a token that can read it (a wrong token also gives 401)"
    )]
    Unauthorized { url: String },
    #[error("403 Forbidden for {url}: the token cannot read this repo. For a gated dataset, accept its terms on the hub page with the token's account")]
    Forbidden { url: String },
    #[error("404 Not Found for {url}: {what} does not exist. Check the repo name, the revision and the include patterns")]
    NotFound { url: String, what: String },
    #[error("HTTP {status} from {url}: {body}")]
    Status { status: u16, url: String, body: String, retry_after: Option<Duration> },
    #[error("network error for {url}: {message}")]
    Network { url: String, message: String },
    #[error("{file}: {message}")]
    Integrity { file: String, message: String },
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
    #[error("local file error: {0}")]
    Io(String),
}

impl HubError {
    /// Retryable: rate limits, server errors, timeouts, broken connections, short or
    /// corrupt bodies. Never: auth, missing things, bad answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            HubError::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            HubError::Network { .. } | HubError::Integrity { .. } => true,
            _ => false,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HubError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn io(context: &str, e: impl std::fmt::Display) -> Self {
        HubError::Io(format!("{context}: {e}"))
    }
}
