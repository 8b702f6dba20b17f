//! PPO building blocks for the Countdown runs: advantages (`gae`), the clipped losses with
//! the KL penalty and entropy bonus (`loss`), and the critic (`critic`). The rollout loop
//! builds on these.

pub mod critic;
pub mod gae;
pub mod loss;
pub mod rollout;
pub mod update;
