//! PPO building blocks for the Countdown runs: advantages (`gae`) and the clipped losses
//! with the KL penalty and entropy bonus (`loss`). The rollout loop builds on these.

pub mod gae;
pub mod loss;
