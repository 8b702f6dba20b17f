//! PPO on Countdown: advantages (`gae`), the clipped losses with the KL penalty and entropy
//! bonus (`loss`), the critic (`critic`), packed rows (`batch`), rollout batches
//! (`rollout`), the mini-batch update (`update`), the run's tasks (`tasks`), priming on solver traces (`prime`), the
//! config (`config`) and the run itself (`run`).

pub mod batch;
pub mod config;
pub mod critic;
pub mod gae;
pub mod loss;
pub mod memory_plan;
pub mod prime;
pub mod rollout;
pub mod run;
pub mod tasks;
pub mod track;
pub mod update;
