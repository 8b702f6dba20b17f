//! habits pipeline: turns raw math web text into behavior-enriched pretraining sets.
//!
//! The stages (`stages/`: plan, fetch, sample, classify, select, rewrite, build, priming)
//! read and write parquet tables under a run directory (`run_dir`); the hub client
//! (`hub/`), the LLM client (`llm/`), the request journal (`journal`) and retries
//! (`retry`) are shared by them. docs/ARCHITECTURE.md and the README give the contracts.

pub mod cli;
pub mod config;
pub mod hashing;
pub mod http_client;
pub mod hub;
pub mod journal;
pub mod llm;
pub mod origin;
pub mod progress;
pub mod retry;
pub mod run_dir;
pub mod secret;
pub mod shard;
pub mod sources;
pub mod stage_lock;
pub mod stages;
