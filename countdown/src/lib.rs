//! The Countdown game, the study's RL task: tasks and their prompt (`task`), an exact
//! solver (`solver`), our own arithmetic parser (`expr`) and the reward (`reward`).

pub mod expr;
pub mod reward;
pub mod solver;
pub mod task;
