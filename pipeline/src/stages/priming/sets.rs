//! One priming condition's SFT set on disk: the build's shard layout (`data/`, `jsonl/`,
//! `megatron/`, one row per trace, the `set` column naming the condition), a
//! `manifest.json` the trainer reads like a built set's, and a dataset card.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::run_dir::{write_atomic, write_json};
use crate::stages::build::card::yaml_header;
use crate::stages::build::examples::Example;
use crate::stages::build::shards::{Packing, SplitTotals, write_splits};
use crate::stages::build::{FORMAT_VERSION, TokenizerInfo};

/// `priming/<condition>/manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrimingSetManifest {
    pub format_version: u32,
    /// The condition.
    pub set: String,
    pub run: String,
    pub model: String,
    /// How the condition's puzzles fared (status -> puzzles).
    pub statuses: BTreeMap<String, u64>,
    pub tokenizer: TokenizerInfo,
    /// Rows, tokens and files per split.
    #[serde(flatten)]
    pub splits: SplitTotals,
}

/// What a set records besides its rows.
pub struct SetRows<'a> {
    pub name: &'a str,
    pub run: &'a str,
    pub model: &'a str,
    /// Named in the dataset card (`build.license`).
    pub license: &'a str,
    pub statuses: BTreeMap<String, u64>,
}

/// Writes a condition's splits (rows in their order; an empty split has no files), its
/// manifest and its card under `dir`.
pub fn write_condition(dir: &Path, info: &SetRows, splits: &[(&str, &[&Example])], packing: &Packing, tokenizer: &TokenizerInfo) -> Result<PrimingSetManifest> {
    std::fs::create_dir_all(dir)?;
    let m = PrimingSetManifest {
        format_version: FORMAT_VERSION,
        set: info.name.into(),
        run: info.run.into(),
        model: info.model.into(),
        statuses: info.statuses.clone(),
        tokenizer: tokenizer.clone(),
        splits: write_splits(dir, splits, packing)?,
    };
    write_atomic(&dir.join(run_contract::set::CARD), card(&m, info.license).as_bytes())?;
    write_json(&dir.join(run_contract::set::MANIFEST), &m)?;
    Ok(m)
}

/// The dataset card: the YAML header `datasets.load_dataset` reads, then what the set is.
fn card(m: &PrimingSetManifest, license: &str) -> String {
    let pretty_name = format!("habits priming set {} ({})", m.set, m.run);
    let mut s = yaml_header(license, &pretty_name, &["math", "reasoning", "countdown"], &m.splits.rows, Some("data/{split}-*.parquet"));
    let _ = writeln!(s, "# Priming set `{}`\n", m.set);
    let _ = writeln!(
        s,
        "Countdown traces for supervised priming before PPO (the study's priming condition `{}`), written by `{}` with habits' prompt for the condition and checked with the study's reward. `prompt` is the Countdown prompt (ending in `<think>`); `completion` is the reasoning, `</think>` and the equation inside `<answer> </answer>` on the last line. Files, columns and the Megatron layout are those of a habits training set (see the habits README, \"Training sets\").\n",
        m.set, m.model
    );
    s.push_str("| split | rows | completion tokens |\n| --- | ---: | ---: |\n");
    for (split, rows) in &m.splits.rows {
        let _ = writeln!(s, "| {split} | {rows} | {} |", m.splits.completion_tokens.get(split).copied().unwrap_or(0));
    }
    let statuses: Vec<String> = m.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "\nPuzzles by outcome: {}.", statuses.join(", "));
    s
}
