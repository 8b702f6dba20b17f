//! The pipeline's stages. Each reads Arrow batches and writes parquet part files with a
//! manifest under the run directory; `inputs` holds what several stages share.

pub mod build;
pub mod classify;
pub mod fetch;
pub mod inputs;
pub mod plan;
pub mod priming;
pub mod rewrite;
pub mod sample;
pub mod select;
pub mod stage;
pub mod tables;
pub mod template;
