//! Diagnostics: op-by-op and model agreement between two backends (`compare`, run in full by
//! `compare_backends`, on weights from `model_source`), a model's logits for another
//! implementation to compare with (`logits`), rows of a
//! batch against themselves alone (`batch_check`), where a training step's time goes
//! (`ops_bench`), rollout-generation speed (`generate_bench`), and where the host's time
//! (`host_profile`) and the GPU's (`gpu_profile`) go during training.

pub mod batch_check;
pub mod compare;
pub mod compare_backends;
pub mod generate_bench;
pub mod generate_ids;
pub mod gpu_profile;
pub mod host_profile;
pub mod logits;
pub mod model_source;
pub mod ops_bench;
