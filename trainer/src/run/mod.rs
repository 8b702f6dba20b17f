//! What pretraining and PPO share: how a run is run (`options`), the backward pass with
//! recomputed layers and the step's gradient sums (`backward`), what a run will hold in the
//! card's memory (`memory_plan`), checkpoints that resume
//! exactly (`checkpoint`), trainer checkpoints as starting weights (`start_from`), per-step
//! metrics (`metrics`), global gradient-norm clipping (`clip`), the progress line
//! (`progress`) and the profiles a run was asked for (`profiles`).

pub mod backward;
pub mod checkpoint;
pub mod clip;
pub mod memory_plan;
pub mod metrics;
pub mod options;
pub mod profiles;
pub mod progress;
pub mod start_from;
