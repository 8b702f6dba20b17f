//! What pretraining and PPO share: how a run is run (`options`), checkpoints that resume
//! exactly (`checkpoint`), trainer checkpoints as starting weights (`start_from`), per-step
//! metrics (`metrics`), global gradient-norm clipping (`clip`), the progress line
//! (`progress`) and the profiles a run was asked for (`profiles`).

pub mod checkpoint;
pub mod clip;
pub mod metrics;
pub mod options;
pub mod profiles;
pub mod progress;
pub mod start_from;
