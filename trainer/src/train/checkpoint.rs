//! Checkpoints: `<output>/checkpoints/step-NNNNNNNN/` with the model (`model.mpk`), the
//! optimizer state (`optimizer.mpk`, moments and step counts) and `state.json` (step,
//! tokens seen, config fingerprint). A checkpoint is written to a temporary folder and
//! renamed, so a folder under its final name is complete; the newest one resumes a run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Input tokens consumed.
    pub tokens_seen: u64,
    /// sha256 of what the run depends on (model, data, training settings).
    pub fingerprint: String,
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// Saves a checkpoint and keeps only the newest `keep`.
pub fn save<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    out: &Path,
    model: &M,
    optim: &O,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let root = out.join("checkpoints");
    let dir = root.join(format!("step-{:08}", state.step));
    let tmp = root.join(format!(".step-{:08}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    recorder().record(model.clone().into_record(), tmp.join("model")).with_context(|| format!("cannot save the model into {}", tmp.display()))?;
    recorder().record(optim.to_record(), tmp.join("optimizer")).with_context(|| format!("cannot save the optimizer into {}", tmp.display()))?;
    std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))?;
    let mut all = list(&root);
    while all.len() > keep.max(1) {
        let (_, old) = all.remove(0);
        std::fs::remove_dir_all(old).ok();
    }
    Ok(dir)
}

/// Complete checkpoints, oldest first.
fn list(root: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join("state.json").is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The newest checkpoint's folder, if any.
pub fn latest(out: &Path) -> Option<PathBuf> {
    list(&out.join("checkpoints")).pop().map(|(_, p)| p)
}

/// Loads a checkpoint into a model and optimizer built the same way; refuses one made with
/// another config.
pub fn load<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    dir: &Path,
    model: M,
    optim: O,
    fingerprint: &str,
    device: &B::Device,
) -> Result<(M, O, TrainState)> {
    let state: TrainState =
        serde_json::from_slice(&std::fs::read(dir.join("state.json"))?).with_context(|| format!("{}/state.json is damaged", dir.display()))?;
    if state.fingerprint != fingerprint {
        bail!(
            "{} was made with another config (model, data or training settings changed): pass --fresh to start over, or use another output.dir",
            dir.display()
        );
    }
    let model_record = recorder().load(dir.join("model"), device).with_context(|| format!("cannot load {}/model.mpk", dir.display()))?;
    let optim_record = recorder().load(dir.join("optimizer"), device).with_context(|| format!("cannot load {}/optimizer.mpk", dir.display()))?;
    Ok((model.load_record(model_record), optim.load_record(optim_record), state))
}
