//! Continued pretraining / SFT: the config (`config`), the learning-rate schedule
//! (`schedule`) and the loop (`run`). What it shares with PPO is in `crate::run`.

pub mod config;
pub mod run;
pub mod schedule;
