//! Checkpoints: `<output>/checkpoints/step-NNNNNNNN/` with the model (`model.mpk`), the
//! optimizer state (`optimizer.mpk`, moments and step counts) and `state.json` (step,
//! tokens seen, config fingerprint). A checkpoint is written to a temporary folder and
//! renamed, so a folder under its final name is complete; the newest one resumes a run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
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

/// Saves a checkpoint of one model and its optimizer (`model.mpk`, `optimizer.mpk`) and
/// keeps only the newest `keep`.
pub fn save<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    out: &Path,
    model: &M,
    optim: &O,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    save_with(out, state, keep, |dir| {
        write_module(&dir.join("model"), model)?;
        write_optimizer(&dir.join("optimizer"), optim)
    })
}

/// Saves a checkpoint whose records `write` puts into the folder it is given (a temporary
/// one, renamed when complete); keeps only the newest `keep`.
pub fn save_with(out: &Path, state: &TrainState, keep: usize, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let root = out.join("checkpoints");
    let dir = root.join(format!("step-{:08}", state.step));
    let tmp = root.join(format!(".step-{:08}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    write(&tmp)?;
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

/// Writes a module's parameters to `<path>.mpk`.
pub fn write_module<B: Backend, M: Module<B>>(path: &Path, module: &M) -> Result<()> {
    recorder().record(module.clone().into_record(), path.to_path_buf()).with_context(|| format!("cannot save {}.mpk", path.display()))
}

/// Writes an optimizer's state to `<path>.mpk`.
pub fn write_optimizer<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(path: &Path, optim: &O) -> Result<()> {
    recorder().record(optim.to_record(), path.to_path_buf()).with_context(|| format!("cannot save {}.mpk", path.display()))
}

/// Reads `<path>.mpk` into a module built the same way.
pub fn read_module<B: Backend, M: Module<B>>(path: &Path, module: M, device: &B::Device) -> Result<M> {
    Ok(module.load_record(read_record(path, device)?))
}

/// Reads `<path>.mpk` as a module's record, to be checked before it is loaded.
pub fn read_record<B: Backend, R: burn::record::Record<B>>(path: &Path, device: &B::Device) -> Result<R> {
    recorder().load(path.to_path_buf(), device).with_context(|| format!("cannot load {}.mpk", path.display()))
}

/// Reads `<path>.mpk` into an optimizer.
pub fn read_optimizer<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(path: &Path, optim: O, device: &B::Device) -> Result<O> {
    let record = recorder().load(path.to_path_buf(), device).with_context(|| format!("cannot load {}.mpk", path.display()))?;
    Ok(optim.load_record(record))
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

/// The state of a checkpoint; refuses one made with another config.
pub fn read_state(dir: &Path, fingerprint: &str) -> Result<TrainState> {
    let state: TrainState =
        serde_json::from_slice(&std::fs::read(dir.join("state.json"))?).with_context(|| format!("{}/state.json is damaged", dir.display()))?;
    if state.fingerprint != fingerprint {
        bail!(
            "{} was made with another config (model, data or training settings changed): pass --fresh to start over, or use another output.dir",
            dir.display()
        );
    }
    Ok(state)
}

/// Loads a checkpoint of [`save`] into a model and optimizer built the same way.
pub fn load<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    dir: &Path,
    model: M,
    optim: O,
    fingerprint: &str,
    device: &B::Device,
) -> Result<(M, O, TrainState)> {
    let state = read_state(dir, fingerprint)?;
    Ok((read_module(&dir.join("model"), model, device)?, read_optimizer(&dir.join("optimizer"), optim, device)?, state))
}
