//! The LLM client: OpenAI-compatible chat completions (vLLM, SGLang, llama.cpp
//! `llama-server`, hosted APIs) over several load-balanced endpoints, with concurrency
//! that adapts to overload, retries for what can heal, and a reason for what cannot.

pub mod batch;
pub mod breaker;
pub mod client;
pub mod config;
pub mod context;
pub mod error;
pub mod limiter;
pub mod local_server;
pub mod protocol;
pub mod setup;
pub mod stage;

pub use client::{Completion, LlmClient, LlmSettings};
pub use error::{FailureClass, LlmError};
