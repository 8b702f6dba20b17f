//! Continued pretraining / SFT: the config (`config`), AdamW in one pass per parameter
//! (`adamw`, its CUDA kernel in `adamw_kernel`), the learning-rate schedule
//! (`schedule`), global gradient-norm clipping (`clip`), checkpoints that resume exactly
//! (`checkpoint`), trainer checkpoints as starting weights (`start_from`), metrics
//! (`metrics`) and the loop (`run`).

pub mod adamw;
#[cfg(feature = "cuda")]
mod adamw_kernel;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod squared_norms;
#[cfg(feature = "cuda")]
mod squared_norms_cublas;
pub mod start_from;
