//! A model's logits for given token ids, written as a NumPy `.npy` file (f32, `[rows,
//! seq, vocab]`), so that another implementation on the same weights (transformers, on the
//! GPU machine) can be compared with ours: `trainer logits --model DIR --ids IDS.json --out
//! LOGITS.npy`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use crate::ModelBackend;
use crate::diag::model_source::ModelSource;
use crate::model::precision::Compute;
use crate::ops::kernels::Kernels;

/// What to run.
pub struct LogitsJob {
    pub source: ModelSource,
    /// A JSON file of equally long rows of token ids, `[[1, 2, 3], [4, 5, 6]]`.
    pub ids: PathBuf,
    pub out: PathBuf,
    pub compute: Compute,
    pub kernels: Kernels,
}

/// Reads rows of token ids: a JSON array of non-empty arrays, such as `[[1, 2, 3], [4, 5]]`.
pub fn read_rows(path: &Path) -> Result<Vec<Vec<i64>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rows: Vec<Vec<i64>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON array of rows of token ids, such as [[1, 2, 3], [4, 5, 6]]", path.display()))?;
    if rows.is_empty() || rows.iter().any(Vec::is_empty) {
        bail!("{}: give at least one row, and no empty rows", path.display());
    }
    Ok(rows)
}

/// Reads the rows of token ids: a JSON array of equally long, non-empty arrays.
pub fn read_ids(path: &Path) -> Result<(Vec<i64>, [usize; 2])> {
    let rows = read_rows(path)?;
    let len = rows[0].len();
    if rows.iter().any(|r| r.len() != len) {
        bail!("{}: the rows must be of one length (pad them yourself)", path.display());
    }
    Ok((rows.concat(), [rows.len(), len]))
}

/// Runs the model on the rows and writes its logits; returns their shape.
pub fn write_logits<B: ModelBackend>(job: &LogitsJob, device: &B::Device) -> Result<[usize; 3]> {
    let (ids, shape) = read_ids(&job.ids)?;
    let model = job.source.load::<B>(device)?.with_compute(job.compute).with_kernels(job.kernels);
    let vocab = model.config.vocab_size;
    if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
        bail!("{}: token id {bad} is outside the model's vocabulary of {vocab}", job.ids.display());
    }
    let logits = model.forward(Tensor::from_data(TensorData::new(ids, shape), device));
    let dims = logits.dims();
    let values = logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    write_npy(&job.out, &values, &dims)?;
    Ok(dims)
}

/// Writes `values` as a little-endian f32 `.npy` array of `shape` (format version 1.0).
pub fn write_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    // Magic (6) + version (2) + length (2) + header + newline: a multiple of 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
    file.write_all(b"\x93NUMPY\x01\x00")?;
    file.write_all(&(header.len() as u16).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    for v in values {
        file.write_all(&v.to_le_bytes())?;
    }
    file.flush().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
