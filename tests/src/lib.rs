//! Test support for habits' end-to-end tests: a loopback Hugging Face hub with fault
//! injection, generated shards in the exact OpenWebMath and FineMath schemas, and helpers
//! to run the binaries and the Python readers that check their outputs.

pub mod fixtures;
pub mod http;
pub mod hub_server;
pub mod llm_server;
pub mod procs;
pub mod run_config;
