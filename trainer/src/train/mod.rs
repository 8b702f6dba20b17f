//! Continued pretraining / SFT: the config (`config`), the learning-rate schedule
//! (`schedule`), global gradient-norm clipping (`clip`), checkpoints that resume exactly
//! (`checkpoint`), trainer checkpoints as starting weights (`start_from`), metrics
//! (`metrics`) and the loop (`run`).

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod start_from;
