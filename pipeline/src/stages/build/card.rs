//! The dataset card (`README.md`) of a built set: the YAML header the hub and
//! `datasets.load_dataset` read (license, size, splits -> parquet shards), then what the
//! set is, how it was made and what each column means.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::SetManifest;

/// The hub's size bucket for a row count.
fn size_category(rows: u64) -> &'static str {
    match rows {
        0..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        _ => "1M<n<10M",
    }
}

/// The file kinds a set folder can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Files {
    Parquet,
    Jsonl,
    Megatron,
}

/// What the build writes: all three.
pub const ALL_FILES: [Files; 3] = [Files::Parquet, Files::Jsonl, Files::Megatron];

/// The YAML header the hub and `datasets.load_dataset` read: license, name, size, tags, and
/// each split's files (`data`: a path pattern with `{split}`), then the closing `---`.
pub fn yaml_header(license: &str, pretty_name: &str, tags: &[&str], rows: &BTreeMap<String, u64>, data: Option<&str>) -> String {
    let mut s = String::from("---\n");
    let _ = writeln!(s, "license: {license}");
    s.push_str("language:\n- en\n");
    let _ = writeln!(s, "pretty_name: {pretty_name}");
    let _ = writeln!(s, "size_categories:\n- {}", size_category(rows.values().sum()));
    s.push_str("task_categories:\n- text-generation\n");
    s.push_str("tags:\n");
    for tag in tags {
        let _ = writeln!(s, "- {tag}");
    }
    if let Some(pattern) = data {
        s.push_str("configs:\n- config_name: default\n  data_files:\n");
        for split in rows.keys() {
            let _ = writeln!(s, "  - split: {split}\n    path: {}", pattern.replace("{split}", split));
        }
    }
    s.push_str("---\n\n");
    s
}

/// Renders the card of a set folder holding `files`.
pub fn render(m: &SetManifest, files: &[Files]) -> String {
    let data = if files.contains(&Files::Parquet) {
        Some("data/{split}-*.parquet")
    } else if files.contains(&Files::Jsonl) {
        Some("jsonl/{split}-*.jsonl")
    } else {
        None
    };
    let pretty_name = format!("habits {} set ({})", m.set, m.run);
    let mut s = yaml_header(&m.config.license, &pretty_name, &["math", "reasoning", "continued-pretraining"], &m.splits.rows, data);
    let _ = writeln!(s, "# habits: the {} set of run `{}`\n", m.set, m.run);
    let what = if m.set == "rich" {
        "math documents whose authors show reasoning habits (backtracking, verification, subgoal setting, backward chaining), rewritten into question / thoughts / answer with those habits kept"
    } else {
        "math documents that show none of the four reasoning habits, rewritten into question / thoughts / answer as plain step-by-step solutions"
    };
    let _ = writeln!(s, "Continued-pretraining examples made by the habits pipeline from {what}.\n");
    let _ = writeln!(s, "- Selection rule: `{}` (every document also needs `{}`).", m.selection_rule, m.require_rule);
    let _ = writeln!(s, "- Rewritten by `{}` with prompt sha256 `{}`.", m.rewrite_model, m.rewrite_prompt_hash);
    let _ = writeln!(
        s,
        "- Budget: {} completion tokens under the tokenizer with sha256 `{}` (completions counted up to {} tokens each); this set holds {}.",
        m.target_tokens,
        m.tokenizer.sha256,
        m.config.max_completion_tokens,
        m.splits.completion_tokens.values().sum::<u64>()
    );
    let _ =
        writeln!(s, "- Completion lengths matched to the other set: {}.", if m.config.match_lengths { "yes (paired within length quantiles)" } else { "no" });
    for (split, n) in &m.splits.rows {
        let _ = writeln!(s, "- Split `{split}`: {n} rows, {} completion tokens.", m.splits.completion_tokens.get(split).copied().unwrap_or(0));
    }
    s.push_str("\n## Files\n\n");
    if files.contains(&Files::Parquet) {
        s.push_str("- `data/<split>-NNNNN-of-MMMMM.parquet`: the rows (zstd).\n");
    }
    if files.contains(&Files::Jsonl) {
        s.push_str("- `jsonl/<split>-NNNNN-of-MMMMM.jsonl`: the rows, one JSON object per line.\n");
    }
    if files.contains(&Files::Megatron) {
        let _ = writeln!(
            s,
            "- `megatron/<split>-NNNNN-of-MMMMM.{{bin,idx}}`: the same rows as packed token ids in Megatron's indexed-dataset layout ({}, one sequence and one document per row: {}prompt + completion{}).",
            m.tokenizer.dtype,
            if m.tokenizer.bos.is_some() { "bos + " } else { "" },
            if m.tokenizer.eos.is_some() { " + eos" } else { "" }
        );
    }
    s.push_str("- `manifest.json`: rows, tokens and sha256 of every file, the tokenizer, the config, length quantiles.\n");
    s.push_str("\n## Columns\n\n| column | meaning |\n| --- | --- |\n");
    for (c, meaning) in [
        ("prompt", "the conversation template around the question"),
        ("completion", "`<think>{thoughts}</think>\\n<answer>{answer}</answer>`"),
        ("doc_id", "XXH3-128 of the source document's text (hex)"),
        ("set / split", "this set; train or test"),
        ("source, revision, file, row", "where the document came from: source name, dataset commit, file, row in that file"),
        ("model, rewrite_prompt_hash", "the model that rewrote it and the sha256 of the rewrite instructions"),
        ("template_hash", "sha256 of the conversation template"),
        ("prompt_tokens, completion_tokens", "token counts (completion counted up to the clip)"),
        ("truncated", "the completion is longer than the clip (the packed ids stop there)"),
    ] {
        let _ = writeln!(s, "| {c} | {meaning} |");
    }
    s
}
