//! The run directory's contract, declared once for the crates that write and read it
//! (`pipeline` writes it; `corpus-tools` and `trainer` read it):
//!
//! ```text
//! runs/<name>/
//!   docs/ labels/ select/ rewrites/     a table: part-NNNNN.parquet + _manifest.json
//!   sets/<set>/                         a built set: data/ jsonl/ megatron/ manifest.json README.md
//!   sets/_manifest.json                 the build as a whole
//!   priming/<condition>/                a priming set (the same layout as a built set)
//!   journal/<stage>.jsonl               one `Record` per finished LLM request
//!   rollouts/step-N.parquet             a PPO run's tracked rollouts
//!   work/                               scratch state that makes stages resumable
//! ```
//!
//! The README ("Output files") specifies every column; this crate names the places.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The folders of the run's tables and sets.
pub mod tables {
    /// The sampled documents (`pipeline sample`).
    pub const DOCS: &str = "docs";
    /// The behavior labels (`pipeline classify`).
    pub const LABELS: &str = "labels";
    /// Set membership (`pipeline select`).
    pub const SELECT: &str = "select";
    /// Question / thoughts / answer rewrites (`pipeline rewrite`).
    pub const REWRITES: &str = "rewrites";
    /// The built training sets (`pipeline build`), one folder per set.
    pub const SETS: &str = "sets";
    /// The priming sets (`pipeline prime`), one folder per condition.
    pub const PRIMING: &str = "priming";
    /// A PPO run's tracked rollouts (`trainer ppo` with `[track]`).
    pub const ROLLOUTS: &str = "rollouts";
}

/// A table's (or a build's) manifest, beside its parts; the leading `_` keeps parquet
/// readers such as pyarrow from taking it for data.
pub const TABLE_MANIFEST: &str = "_manifest.json";

/// The file name of a table's part `index`.
pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// A built (or priming) set's folders and files, and the parts of its manifest that
/// readers other than the pipeline rely on.
pub mod set {
    use serde::{Deserialize, Serialize};

    /// The layout's version, in every set's manifest; bumped when a file layout changes.
    pub const FORMAT_VERSION: u32 = 1;

    /// The tokenizer a set was counted and packed with (the manifest's `tokenizer`). The
    /// pipeline writes every field; a reader needs `sha256`, `vocab_size` and `bos`, so a set
    /// made by another tool may leave the others out.
    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
    pub struct TokenizerInfo {
        #[serde(default)]
        pub path: String,
        pub sha256: String,
        pub vocab_size: usize,
        pub bos: Option<u32>,
        #[serde(default)]
        pub eos: Option<u32>,
        /// Megatron dtype of the packed ids.
        #[serde(default)]
        pub dtype: String,
    }

    /// A written file, as the manifest's `files` list it. The pipeline writes every field;
    /// a reader needs `path`, `split` and `format`, so a set made by another tool may leave
    /// the counts and checksum out.
    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
    pub struct FileInfo {
        /// Relative to the set's folder.
        pub path: String,
        pub split: String,
        /// `parquet`, `jsonl`, `megatron-bin` or `megatron-idx`.
        pub format: String,
        #[serde(default)]
        pub rows: u64,
        /// Tokens packed in this shard (the same for all three formats of a shard).
        #[serde(default)]
        pub tokens: u64,
        #[serde(default)]
        pub bytes: u64,
        #[serde(default)]
        pub sha256: String,
    }

    /// Parquet shards (`prompt`, `completion`, `text`, ids).
    pub const DATA: &str = "data";
    /// JSON lines shards (with `prompt_tokens`).
    pub const JSONL: &str = "jsonl";
    /// Megatron packed token ids (`<split>-NNNNN.bin` + `.idx`).
    pub const MEGATRON: &str = "megatron";
    /// The set's manifest: rows, tokens, files with their sha256, the tokenizer.
    pub const MANIFEST: &str = "manifest.json";
    /// The dataset card.
    pub const CARD: &str = "README.md";
}

/// The request journals' folder under the run.
pub const JOURNAL_DIR: &str = "journal";

/// The journal of LLM stage `stage` (`classify`, `rewrite`, `priming`) under `run`.
pub fn journal_path(run: &Path, stage: &str) -> PathBuf {
    run.join(JOURNAL_DIR).join(format!("{stage}.jsonl"))
}

/// One finished request: a line of a journal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The request's key (model, prompt hash, sampling, document hash).
    pub key: String,
    pub doc_id: String,
    /// The prompt's name, e.g. `backtracking`.
    pub task: String,
    pub prompt_hash: String,
    pub model: String,
    /// `ok` (an answer came back) or `failed` (with `failure` and `reason`).
    pub status: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Whether a rerun may try again (a failure of a retryable class).
    #[serde(default)]
    pub retry_on_rerun: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    pub endpoint: String,
    pub attempts: u32,
    /// Seconds since the Unix epoch.
    pub finished_at: u64,
}

/// What a journal column holds, for readers that type it (SQL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Integer,
    Flag,
}

/// A journal line's columns in the order `Record` writes them: name, kind, nullable.
pub const JOURNAL_COLUMNS: [(&str, ColumnKind, bool); 17] = [
    ("key", ColumnKind::Text, false),
    ("doc_id", ColumnKind::Text, false),
    ("task", ColumnKind::Text, false),
    ("prompt_hash", ColumnKind::Text, false),
    ("model", ColumnKind::Text, false),
    ("status", ColumnKind::Text, false),
    ("content", ColumnKind::Text, true),
    ("finish_reason", ColumnKind::Text, true),
    ("failure", ColumnKind::Text, true),
    ("reason", ColumnKind::Text, true),
    ("retry_on_rerun", ColumnKind::Flag, true),
    ("prompt_tokens", ColumnKind::Integer, true),
    ("completion_tokens", ColumnKind::Integer, true),
    ("latency_ms", ColumnKind::Integer, true),
    ("endpoint", ColumnKind::Text, true),
    ("attempts", ColumnKind::Integer, true),
    ("finished_at", ColumnKind::Integer, true),
];

/// Why a path that a listing names inside its folder (a hub listing, a manifest's `files`
/// and `parts`) cannot be used: it must be relative, its components non-empty and neither
/// `.` nor `..`, with no backslash, NUL or drive prefix; then it cannot leave the folder.
pub fn relative_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    if path.starts_with('/') {
        return Some("it is absolute");
    }
    if path.contains('\\') || path.contains('\0') {
        return Some("it holds a backslash or a NUL byte");
    }
    if path.split('/').next().is_some_and(|first| first.len() >= 2 && first.ends_with(':')) {
        return Some("it starts with a drive prefix");
    }
    for part in path.split('/') {
        match part {
            "" => return Some("it has an empty component"),
            "." | ".." => return Some("it has a `.` or `..` component"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_paths_that_leave_their_folder_are_refused() {
        for ok in ["data/train-00000-of-00001.parquet", "a", "finemath-4plus/train-00001-of-00064.parquet", "dir/file..parquet"] {
            assert_eq!(relative_path_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "/home/user/abs.parquet",
            "data/../../../../home/user/victim.parquet",
            "..",
            "./data/x.parquet",
            "data//x.parquet",
            "data/x.parquet/",
            "data\\..\\x.parquet",
            "data/x\0.parquet",
            "C:/x.parquet",
        ] {
            assert!(relative_path_problem(bad).is_some(), "{bad:?} must be refused");
        }
    }

    /// The column list is the record's fields, in the order serde writes them.
    #[test]
    fn journal_columns_are_the_records_fields_in_order() {
        let written = r#"{"finished_at":4,"attempts":1,"endpoint":"e","latency_ms":3,"completion_tokens":2,"prompt_tokens":1,
            "retry_on_rerun":false,"status":"ok","content":"c","model":"m","prompt_hash":"h","task":"t","doc_id":"d","key":"k"}"#;
        let r: Record = serde_json::from_str(written).unwrap();
        let line = serde_json::to_string(&r).unwrap();
        let mut at = 0;
        for (name, _, _) in JOURNAL_COLUMNS {
            let found = line[at..].find(&format!("\"{name}\":")).unwrap_or_else(|| panic!("{name} missing or out of order in {line}"));
            at += found + name.len();
        }
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value.as_object().unwrap().len(), JOURNAL_COLUMNS.len(), "no field beyond the columns");
    }

    #[test]
    fn paths_are_where_the_readme_says() {
        assert_eq!(part_name(7), "part-00007.parquet");
        assert_eq!(journal_path(Path::new("runs/demo"), "classify"), Path::new("runs/demo/journal/classify.jsonl"));
    }
}
