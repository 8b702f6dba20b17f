//! The OpenAI wire formats: chat completions (a conversation) and text completions (a
//! raw prompt the model continues, for sampling a base model): the requests we send and
//! the parts of the answers we read. Everything in an answer is checked; nothing in it is
//! trusted further.

use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Message { role: "system".into(), content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message { role: "user".into(), content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message { role: "assistant".into(), content: content.into() }
    }
}

/// Sampling parameters; part of every result's key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// The request body of `POST {base}/chat/completions`.
#[derive(Clone, Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [Message],
    #[serde(flatten)]
    pub sampling: &'a Sampling,
    /// Structured output, as the server kind expects it (already shaped).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// The request body of `POST {base}/completions`: a prompt the model continues as is.
#[derive(Clone, Debug, Serialize)]
pub struct TextRequest<'a> {
    pub model: &'a str,
    pub prompt: &'a str,
    #[serde(flatten)]
    pub sampling: &'a Sampling,
}

#[derive(Debug, Deserialize)]
pub struct TextResponse {
    pub choices: Vec<TextChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub struct TextChoice {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatResponse {
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub struct Choice {
    pub message: ChoiceMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChoiceMessage {
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}
