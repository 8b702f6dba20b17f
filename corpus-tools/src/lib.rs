//! habits corpus-tools: every table of a run under SQL (DataFusion), the statistics report
//! with plots, one document's story, verification of checksums and lineage, and exports for
//! other trainers. The binary (`main.rs`) is a thin command line over these modules.

pub mod catalog;
pub mod export;
pub mod journal;
pub mod manifests;
pub mod output;
pub mod repl;
pub mod show;
pub mod sql;
pub mod stats;
pub mod verify;
