//! Where the weights of a checked or benchmarked model come from: a Hugging Face folder, or
//! a shape (`config.json`) with seeded random weights or a trainer checkpoint's.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::ModelBackend;
use crate::model::Llama;
use crate::model::config::ModelConfig;

pub enum ModelSource {
    /// A Hugging Face folder.
    Folder(PathBuf),
    /// A shape: seeded random weights, or a trainer checkpoint's.
    Shape { config: PathBuf, record: Option<PathBuf> },
}

impl ModelSource {
    /// From a command line's `--model DIR`, or `--config CONFIG.json` with an optional
    /// `--record`.
    pub fn new(model: Option<PathBuf>, config: Option<PathBuf>, record: Option<PathBuf>) -> Result<Self> {
        match (model, config) {
            (Some(dir), _) => Ok(ModelSource::Folder(dir)),
            (None, Some(config)) => Ok(ModelSource::Shape { config, record }),
            (None, None) => bail!("give --model DIR or --config CONFIG.json"),
        }
    }

    pub fn load<B: ModelBackend>(&self, device: &B::Device) -> Result<Llama<B>> {
        match self {
            ModelSource::Folder(dir) => crate::weights::load_model::<B>(dir, device),
            ModelSource::Shape { config, record } => {
                let config = ModelConfig::from_file(config)?;
                match record {
                    // A trainer checkpoint (record, checkpoint or run folder), shapes checked.
                    Some(path) => crate::weights::load_weights::<B>(&config, path, device),
                    None => {
                        B::seed(device, 17);
                        Ok(Llama::<B>::random(&config, device))
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Folder(dir) => write!(f, "{}", dir.display()),
            ModelSource::Shape { config, record: None } => write!(f, "{} (random weights)", config.display()),
            ModelSource::Shape { config, record: Some(r) } => write!(f, "{} ({})", config.display(), r.display()),
        }
    }
}
