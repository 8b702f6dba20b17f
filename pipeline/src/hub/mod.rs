//! The Hugging Face hub client: list a dataset repo's files at a pinned commit, and
//! download them into the hub's own cache layout with resume, sha256 checks and retries.
//!
//! We speak the hub's HTTP interface directly over `reqwest` instead of using the `hf-hub`
//! crate: hf-hub 1.x brings ~240 crates (hf-xet) into the build, and still lacks what this
//! stage needs most (resuming a broken download by byte range, checking the LFS sha256).
//! The reasons and numbers are in `docs/DECISIONS.md`.

pub mod api;
pub mod cache;
pub mod config;
pub mod download;
pub mod error;
pub mod glob;
pub mod names;
pub mod settings;

pub use api::{HubClient, RepoFile};
pub use error::HubError;
pub use settings::HubSettings;
