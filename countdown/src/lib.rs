//! The Countdown game, the study's RL task: tasks and their prompt (`task`), an exact
//! solver (`solver`), the 24-game sets the study excluded (`game24`), our own arithmetic parser (`expr`) and the reward (`reward`).

pub mod expr;
pub mod game24;
pub mod reward;
pub mod solver;
pub mod task;
