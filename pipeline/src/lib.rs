//! habits pipeline: turns raw math web text into behavior-enriched pretraining sets.
//!
//! The stages (fetch, sample, and later classify, select, rewrite, build) read and write
//! parquet tables under a run directory; see `DESIGN.md` and the README for the contracts.

pub mod cli;
pub mod config;
pub mod hashing;
pub mod http_client;
pub mod hub;
pub mod journal;
pub mod llm;
pub mod progress;
pub mod retry;
pub mod run_dir;
pub mod secret;
pub mod shard;
pub mod sources;
pub mod stages;
