//! Reading a set built by the pipeline (`runs/<name>/sets/<set>/`): the packed token ids
//! of a split from its Megatron shards (`megatron/<split>-*.{bin,idx}`), and the prompt
//! length of each row from the JSONL shards (`prompt_tokens`), so SFT can skip the prompt.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use run_contract::set::{FORMAT_VERSION, FileInfo, TokenizerInfo};
use serde::Deserialize;

/// One training sequence: `[bos] + prompt + completion + [eos]` token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub ids: Vec<u32>,
    /// Leading tokens that are not trained on in SFT (bos + prompt).
    pub prompt_len: usize,
}

/// What the set says about its tokens.
#[derive(Clone, Debug)]
pub struct SetInfo {
    pub vocab_size: usize,
    pub tokenizer_sha256: String,
    pub dir: PathBuf,
}

/// What the trainer reads of a set's manifest (the pipeline writes more).
#[derive(Deserialize)]
struct Manifest {
    format_version: u32,
    tokenizer: TokenizerInfo,
    files: Vec<FileInfo>,
}

#[derive(Deserialize)]
struct Row {
    prompt_tokens: usize,
}

/// Reads the `split` (`train` or `test`) of the set in `dir`; a missing split is empty.
pub fn read_split(dir: &Path, split: &str) -> Result<(Vec<Sequence>, SetInfo)> {
    let manifest_path = dir.join(run_contract::set::MANIFEST);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("{} is not a built set (no manifest.json): run `make corpus` (or `pipeline build`) first", dir.display()))?;
    let m: Manifest = serde_json::from_str(&text).with_context(|| format!("{} is not a set manifest this trainer reads", manifest_path.display()))?;
    if m.format_version != FORMAT_VERSION {
        bail!("{}: set format {} is not supported (this trainer reads format {FORMAT_VERSION})", manifest_path.display(), m.format_version);
    }
    let bos = usize::from(m.tokenizer.bos.is_some());
    let mut out = Vec::new();
    let mut idx: Vec<&FileInfo> = m.files.iter().filter(|f| f.split == split && f.format == "megatron-idx").collect();
    idx.sort_by(|a, b| a.path.cmp(&b.path));
    for f in idx {
        let prefix = dir.join(f.path.trim_end_matches(".idx"));
        let sequences = read_megatron(&prefix)?;
        let (megatron, jsonl) = (format!("{}/", run_contract::set::MEGATRON), format!("{}/", run_contract::set::JSONL));
        let jsonl = dir.join(f.path.replace(&megatron, &jsonl).replace(".idx", ".jsonl"));
        let rows = std::fs::read_to_string(&jsonl).with_context(|| format!("cannot read {}", jsonl.display()))?;
        let prompts: Vec<usize> = rows
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str::<Row>(l).map(|r| r.prompt_tokens).with_context(|| format!("{} line {}: no prompt_tokens", jsonl.display(), i + 1))
            })
            .collect::<Result<_>>()?;
        if prompts.len() != sequences.len() {
            bail!("{} has {} rows but {} has {} sequences: the set is damaged; rebuild it", jsonl.display(), prompts.len(), prefix.display(), sequences.len());
        }
        out.extend(sequences.into_iter().zip(prompts).map(|(ids, p)| Sequence { prompt_len: (p + bos).min(ids.len()), ids }));
    }
    Ok((out, SetInfo { vocab_size: m.tokenizer.vocab_size, tokenizer_sha256: m.tokenizer.sha256, dir: dir.to_path_buf() }))
}

/// Reads a Megatron `.idx` + `.bin` pair (the layout the pipeline writes; see the README).
pub fn read_megatron(prefix: &Path) -> Result<Vec<Vec<u32>>> {
    let (idx_path, bin_path) = (prefix.with_extension("idx"), prefix.with_extension("bin"));
    let idx = std::fs::read(&idx_path).with_context(|| format!("cannot read {}", idx_path.display()))?;
    let bin = std::fs::read(&bin_path).with_context(|| format!("cannot read {}", bin_path.display()))?;
    let bad = || anyhow::anyhow!("{} is not a Megatron index (version 1): the set is damaged; rebuild it", idx_path.display());
    if idx.len() < 34 || &idx[..9] != b"MMIDIDX\x00\x00" || u64::from_le_bytes(idx[9..17].try_into()?) != 1 {
        return Err(bad());
    }
    let width = match idx[17] {
        8 => 2,
        4 => 4,
        code => bail!("{}: token dtype code {code} is not uint16 (8) or int32 (4)", idx_path.display()),
    };
    let n = u64::from_le_bytes(idx[18..26].try_into()?) as usize;
    if idx.len() < 34 + 12 * n {
        return Err(bad());
    }
    let length = |i: usize| i32::from_le_bytes(idx[34 + 4 * i..38 + 4 * i].try_into().expect("4 bytes")) as usize;
    let offset = |i: usize| i64::from_le_bytes(idx[34 + 4 * n + 8 * i..42 + 4 * n + 8 * i].try_into().expect("8 bytes")) as usize;
    (0..n)
        .map(|i| {
            let (start, len) = (offset(i), length(i));
            let bytes = bin.get(start..start + len * width).with_context(|| format!("{}: sequence {i} runs past the end", bin_path.display()))?;
            Ok(match width {
                2 => bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect(),
                _ => bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32).collect(),
            })
        })
        .collect()
}
