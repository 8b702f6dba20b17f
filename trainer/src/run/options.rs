//! How a training run (pretraining or PPO) is run: start over or resume, when to stop, and
//! which profiles to write.

use std::time::Instant;

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Ignore existing checkpoints and start over.
    pub fresh: bool,
    /// Stop after this many steps of this invocation (for tests and smoke runs).
    pub stop_after: Option<usize>,
    /// Write no checkpoints (a benchmark or a smoke run: nothing to resume from; at the 3B
    /// shape a PPO checkpoint is 77 GB).
    pub no_save: bool,
    /// Stop cleanly once this much time has passed since the invocation started (loading and
    /// priming count): the step in progress finishes, then an evaluation and a checkpoint
    /// (for a job's time limit on a cluster).
    pub time_limit: Option<std::time::Duration>,
    /// Write a sampling profile of the host over the steps after the third to this file
    /// (`host_profile`; needs the `host-profile` feature).
    pub host_profile: Option<std::path::PathBuf>,
    /// Record every GPU kernel and write where the GPU's time went to this file
    /// (`gpu_profile`; needs a CUDA build): pretraining's steps after the third, PPO's
    /// first step of the invocation.
    pub gpu_profile: Option<std::path::PathBuf>,
}

/// Steps before a host or GPU profile starts (kernel compilation and autotuning happen in the first).
pub const PROFILE_AFTER_STEPS: usize = 3;

impl RunOptions {
    /// Whether the time limit has passed since `started`.
    pub fn out_of_time(&self, started: Instant) -> bool {
        self.time_limit.is_some_and(|limit| started.elapsed() >= limit)
    }

    /// Whether another step runs: `ran` steps of this invocation so far, `done` of the
    /// run's `total`, the invocation started at `started`.
    pub fn another_step(&self, done: usize, total: usize, ran: usize, started: Instant) -> bool {
        done < total && self.stop_after.is_none_or(|n| ran < n) && !self.out_of_time(started)
    }

    /// Whether the step just finished ends the run or its time limit (an evaluation and a
    /// checkpoint follow); `stop_after` alone does not.
    pub fn ends_run(&self, done: usize, total: usize, started: Instant) -> bool {
        done == total || self.out_of_time(started)
    }
}
