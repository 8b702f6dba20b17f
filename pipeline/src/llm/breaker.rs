//! The circuit breaker of a client: when one endpoint answers `breaker_after` requests in
//! a row with a failure that only a configuration fix cures (401/403, 404, a request the
//! server rejects), the client sends nothing more and the stage stops with one message
//! that names the endpoint, the status and the fix. It watches answers as they arrive, so
//! at most the requests already in flight are sent after it trips. The failed requests
//! are journaled as "ask again on the next run".

use std::collections::HashMap;

use super::error::{FailureClass, LlmError};

/// Consecutive configuration failures per endpoint.
pub struct Breaker {
    after: u32,
    /// The variable the API key is read from (named in the fix for 401/403).
    api_key_env: String,
    runs: HashMap<String, u32>,
}

impl Breaker {
    /// A breaker that trips after `after` failures in a row from one endpoint (0: never).
    pub fn new(after: u32, api_key_env: &str) -> Self {
        Breaker { after, api_key_env: api_key_env.to_string(), runs: HashMap::new() }
    }

    /// Counts an answer from `endpoint` (as it is shown): `None` for a success, else the
    /// failed attempt; the message to stop with when the breaker trips.
    pub fn observe(&mut self, endpoint: &str, failure: Option<&LlmError>) -> Option<String> {
        let run = self.runs.entry(endpoint.to_string()).or_default();
        let Some(error) = failure.filter(|e| e.class.is_configuration()) else {
            *run = 0;
            return None;
        };
        *run += 1;
        (self.after > 0 && *run == self.after).then(|| self.message(endpoint, error))
    }

    fn message(&self, endpoint: &str, error: &LlmError) -> String {
        let class = error.class;
        let said = error.message.chars().take(200).collect::<String>();
        let fix = match class {
            FailureClass::Auth => {
                format!("the API key is missing or wrong: set the variable ${} (llm.api_key_env) to a key this server accepts", self.api_key_env)
            }
            FailureClass::NotFound => format!(
                "nothing answers at {endpoint}/chat/completions: an endpoint is the server's base URL ending in /v1 (e.g. http://127.0.0.1:8000/v1)"
            ),
            _ => "the server rejects the request itself: check llm.model (the served model's name), llm.structured_output (the server's kind) and the sampling settings".to_string(),
        };
        format!(
            "stopped after {} requests in a row to {endpoint} failed with {} ({said}); {fix}. \
             The failed requests are asked again when the stage runs next; answers already journaled are kept",
            self.after,
            class.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(class: FailureClass) -> LlmError {
        LlmError { class, endpoint: String::new(), message: "HTTP 401: bad key".into(), retry_after: None }
    }

    #[test]
    fn trips_on_a_run_of_configuration_failures_from_one_endpoint() {
        let mut b = Breaker::new(3, "MY_KEY");
        let auth = failed(FailureClass::Auth);
        assert!(b.observe("http://a/v1", Some(&auth)).is_none());
        assert!(b.observe("http://b/v1", Some(&auth)).is_none());
        assert!(b.observe("http://a/v1", None).is_none(), "an answer resets the run");
        assert!(b.observe("http://a/v1", Some(&auth)).is_none());
        assert!(b.observe("http://a/v1", Some(&failed(FailureClass::Timeout))).is_none(), "a retryable class resets it too");
        for _ in 0..2 {
            assert!(b.observe("http://a/v1", Some(&auth)).is_none());
        }
        let message = b.observe("http://a/v1", Some(&auth)).unwrap();
        assert!(message.contains("http://a/v1") && message.contains("$MY_KEY") && message.contains("401"), "{message}");
        let mut never = Breaker::new(0, "K");
        assert!((0..100).all(|_| never.observe("http://a/v1", Some(&failed(FailureClass::NotFound))).is_none()));
    }
}
