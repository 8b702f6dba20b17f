//! Countdown tasks: a target and 3 or 4 numbers that reach it with `+ - * /`, each number
//! used once. Generated from a seed (only solvable tasks are kept), or imported from the
//! TinyZero task layout (`target`, `nums`); and the prompt the model sees.

use serde::{Deserialize, Serialize};

use super::solver::solve;

/// One puzzle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub target: i64,
    pub nums: Vec<i64>,
}

/// What tasks look like.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskSpec {
    pub min_numbers: usize,
    pub max_numbers: usize,
    pub min_number: i64,
    pub max_number: i64,
    pub min_target: i64,
    pub max_target: i64,
}

impl Default for TaskSpec {
    /// The study's priming generator: 3 or 4 numbers, targets 10..=25.
    fn default() -> Self {
        TaskSpec { min_numbers: 3, max_numbers: 4, min_number: 1, max_number: 99, min_target: 10, max_target: 25 }
    }
}

/// A solvable task and one solution, drawn from `rng`.
pub fn generate(rng: &mut fastrand::Rng, spec: &TaskSpec) -> (Task, String) {
    loop {
        let n = rng.usize(spec.min_numbers..=spec.max_numbers);
        let nums: Vec<i64> = (0..n).map(|_| rng.i64(spec.min_number..=spec.max_number)).collect();
        let target = rng.i64(spec.min_target..=spec.max_target);
        if let Some(solution) = solve(&nums, target) {
            return (Task { target, nums }, solution);
        }
    }
}

/// The prompt of a task: a User/Assistant conversation that asks for the reasoning inside
/// `<think>` and the equation alone inside `<answer>`, ending where the model continues.
pub fn prompt(task: &Task) -> String {
    let nums: Vec<String> = task.nums.iter().map(i64::to_string).collect();
    format!(
        "A conversation between a User and an Assistant. The User gives a puzzle; the Assistant reasons about it inside <think> </think> tags and then gives only the final equation inside <answer> </answer> tags.\n\
         User: Use each of the numbers {} exactly once, with + - * / and parentheses, to write an equation whose value is {}. Reason inside <think> </think>, then put the equation alone inside <answer> </answer>, for example <answer> (8 - 2) * 3 </answer>.\n\
         Assistant: Let me solve this step by step.\n<think>",
        nums.join(", "),
        task.target
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::countdown::expr::evaluate;

    #[test]
    fn generated_tasks_are_solvable_and_seeded() {
        let spec = TaskSpec::default();
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..50).map(|_| generate(&mut rng, &spec)).collect::<Vec<_>>()
        };
        let tasks = draw(1);
        assert_eq!(tasks, draw(1));
        assert_ne!(tasks, draw(2));
        for (task, solution) in &tasks {
            assert!((3..=4).contains(&task.nums.len()) && (10..=25).contains(&task.target));
            assert!((evaluate(solution).unwrap().to_f64() - task.target as f64).abs() < 1e-5, "{task:?}: {solution}");
        }
        let p = prompt(&tasks[0].0);
        assert!(p.ends_with("Assistant: Let me solve this step by step.\n<think>"));
    }
}
