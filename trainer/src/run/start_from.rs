//! Trainer checkpoints as starting weights (`model.weights` of `trainer pretrain` and
//! `trainer ppo`): a module record (`.../model.mpk`, `.../actor.mpk`), a checkpoint folder
//! (`.../checkpoints/step-NNNNNNNN`: its `model.mpk`, or a PPO checkpoint's `actor.mpk`) or
//! a run folder (its newest checkpoint). So the study's recipe chains: SFT on a priming set
//! with `trainer pretrain`, then PPO from that run. The record must have the config's
//! shapes: every parameter is checked, and a mismatch is one error naming it.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

use crate::ModelBackend;
use crate::model::config::ModelConfig;
use crate::model::{Llama, LlamaRecord};
use crate::run::checkpoint::{latest, read_record};

/// The record (path without `.mpk`) that `path` names when it is a trainer checkpoint;
/// `None` when it is something else (Hugging Face safetensors).
pub fn trainer_record(path: &Path) -> Result<Option<PathBuf>> {
    if path.extension().is_some_and(|e| e == "mpk") {
        return Ok(Some(path.with_extension("")));
    }
    if !path.is_dir() {
        return Ok(None);
    }
    let dir = if path.join("checkpoints").is_dir() {
        match latest(path) {
            Some(dir) => dir,
            None => bail!("{} is a run folder without a complete checkpoint: point model.weights at a checkpoint, or finish the run", path.display()),
        }
    } else {
        path.to_path_buf()
    };
    Ok(["model", "actor"].iter().map(|name| dir.join(name)).find(|record| record.with_extension("mpk").is_file()))
}

/// Loads a trainer record into a model of `config`, checking every parameter's shape.
pub fn read_model<B: ModelBackend>(config: &ModelConfig, record: &Path, device: &B::Device) -> Result<Llama<B>> {
    let empty = Llama::<B>::random(config, device);
    let expected = shapes(&empty);
    let loaded: LlamaRecord<B> = read_record(record, device)?;
    // burn panics on a layer count that differs: check it first.
    if loaded.layers.len() != config.num_layers {
        bail!(
            "{}.mpk has {} layers where model.config asks for {}: it was trained with another model config",
            record.display(),
            loaded.layers.len(),
            config.num_layers
        );
    }
    let model = empty.load_record(loaded);
    let found = shapes(&model);
    if found.len() != expected.len() {
        bail!(
            "{}.mpk has {} parameter tensors where model.config asks for {}: it was trained with another model config",
            record.display(),
            found.len(),
            expected.len()
        );
    }
    if let Some((i, (want, got))) = expected.iter().zip(&found).enumerate().find(|(_, (w, g))| w != g) {
        bail!("{}.mpk: parameter {i} has shape {got:?} where model.config asks for {want:?}: it was trained with another model config", record.display());
    }
    Ok(model)
}

/// Every float parameter's shape, in module order.
fn shapes<B: Backend>(model: &Llama<B>) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().dims().to_vec());
        }
    }
    let mut visitor = Shapes(Vec::new());
    model.visit(&mut visitor);
    visitor.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::checkpoint::{TrainState, save_with, write_module};

    type B = crate::Cpu;

    fn logits(model: &Llama<B>) -> Vec<f32> {
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 3], [1, 4]), &Default::default());
        model.forward(ids).into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn a_record_a_checkpoint_and_a_run_folder_all_load_the_same_weights() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::model::tests::tiny_config();
        <B as Backend>::seed(&Default::default(), 3);
        let trained = Llama::<B>::random(&config, &Default::default());
        let state = TrainState { step: 7, ..Default::default() };
        let checkpoint = save_with(dir.path(), &state, 2, |d| write_module(&d.join("model"), &trained)).unwrap();
        let want = logits(&trained);
        for path in [checkpoint.join("model.mpk"), checkpoint.clone(), dir.path().to_path_buf()] {
            let record = trainer_record(&path).unwrap().unwrap_or_else(|| panic!("{} is a trainer checkpoint", path.display()));
            assert_eq!(logits(&read_model::<B>(&config, &record, &Default::default()).unwrap()), want, "{}", path.display());
        }
        // A PPO checkpoint names its model `actor`.
        let ppo = dir.path().join("ppo-step");
        std::fs::create_dir_all(&ppo).unwrap();
        write_module(&ppo.join("actor"), &trained).unwrap();
        assert_eq!(trainer_record(&ppo).unwrap(), Some(ppo.join("actor")));
    }

    #[test]
    fn safetensors_are_not_trainer_checkpoints_and_an_empty_run_is_an_error() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
        assert_eq!(trainer_record(&fixture).unwrap(), None);
        assert_eq!(trainer_record(&fixture.join("model.safetensors")).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("checkpoints")).unwrap();
        let err = trainer_record(dir.path()).unwrap_err().to_string();
        assert!(err.contains("without a complete checkpoint"), "{err}");
    }

    #[test]
    fn a_record_of_another_shape_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::model::tests::tiny_config();
        let mut wider = config.clone();
        wider.intermediate_size *= 2;
        write_module(&dir.path().join("model"), &Llama::<B>::random(&wider, &Default::default())).unwrap();
        let err = read_model::<B>(&config, &dir.path().join("model"), &Default::default()).unwrap_err().to_string();
        assert!(err.contains("where model.config asks for") && err.contains("another model config"), "{err}");
        let mut deeper = config.clone();
        deeper.num_layers += 1;
        write_module(&dir.path().join("deeper"), &Llama::<B>::random(&deeper, &Default::default())).unwrap();
        let err = read_model::<B>(&config, &dir.path().join("deeper"), &Default::default()).unwrap_err().to_string();
        assert!(err.contains("layers where model.config asks for"), "{err}");
    }
}
