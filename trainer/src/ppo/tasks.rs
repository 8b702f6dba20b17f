//! The Countdown tasks of a PPO run: the held-out evaluation tasks, and for each PPO step
//! its prompts, a deterministic function of (seed, step) so that a resumed run sees the
//! same tasks. Generated tasks come from two disjoint seeded streams (evaluation tasks are
//! never trained on); TinyZero parquet tasks come from the configured row ranges, the
//! training rows in a seeded order.

use std::collections::HashSet;

use anyhow::{Result, bail};

use super::config::TaskSection;
use crate::countdown::task::{Task, TaskSpec, generate, read_tasks};

/// Where training tasks come from.
enum Train {
    Rows(Vec<Task>),
    Generated(TaskSpec),
}

pub struct Tasks {
    train: Train,
    seed: u64,
    pub eval: Vec<Task>,
    held_out: HashSet<Task>,
}

impl Tasks {
    pub fn load(c: &TaskSection) -> Result<Self> {
        let (train, eval) = match &c.parquet {
            Some(path) => {
                let [a, b] = c.eval_rows;
                let mut eval = read_tasks(path, a..b)?;
                eval.truncate(c.eval_tasks);
                let [a, b] = c.train_rows;
                let mut rows = read_tasks(path, a..b)?;
                if rows.is_empty() || eval.is_empty() {
                    bail!("{}: rows {:?} (train) and {:?} (eval) must both hold tasks", path.display(), c.train_rows, c.eval_rows);
                }
                fastrand::Rng::with_seed(c.seed).shuffle(&mut rows);
                (Train::Rows(rows), eval)
            }
            None => {
                let mut rng = fastrand::Rng::with_seed(c.seed ^ 0x6576_616c);
                let mut eval = Vec::new();
                let mut seen = HashSet::new();
                while eval.len() < c.eval_tasks {
                    let (task, _) = generate(&mut rng, &c.generate);
                    if seen.insert(task.clone()) {
                        eval.push(task);
                    }
                }
                (Train::Generated(c.generate.clone()), eval)
            }
        };
        let held_out = eval.iter().cloned().collect();
        Ok(Tasks { train, seed: c.seed, eval, held_out })
    }

    /// The `n` training tasks of PPO step `step` (1-based), with a solution where the
    /// generator made one.
    pub fn for_step(&self, step: usize, n: usize) -> Vec<(Task, Option<String>)> {
        match &self.train {
            Train::Rows(rows) => (0..n).map(|i| (rows[((step - 1) * n + i) % rows.len()].clone(), None)).collect(),
            Train::Generated(spec) => {
                let mut rng = fastrand::Rng::with_seed(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(step as u64));
                let mut out = Vec::with_capacity(n);
                while out.len() < n {
                    let (task, solution) = generate(&mut rng, spec);
                    if !self.held_out.contains(&task) {
                        out.push((task, Some(solution)));
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_reproducible_and_never_hold_evaluation_tasks() {
        let section: TaskSection = toml::from_str("eval_tasks = 40\n[generate]\nmin_numbers = 3\nmax_numbers = 3\nmax_number = 9").unwrap();
        let tasks = Tasks::load(&section).unwrap();
        assert_eq!(tasks.eval.len(), 40);
        let step3 = tasks.for_step(3, 50);
        assert_eq!(step3, Tasks::load(&section).unwrap().for_step(3, 50), "the same step, the same tasks");
        assert_ne!(step3, tasks.for_step(4, 50));
        for step in 1..40 {
            for (task, solution) in tasks.for_step(step, 20) {
                assert!(!tasks.eval.contains(&task), "{task:?} is an evaluation task");
                assert!(solution.is_some());
            }
        }
    }
}
