//! Countdown tasks: a target and 3 or 4 numbers that reach it with `+ - * /`, each number
//! used once. Generated from a seed (only solvable tasks are kept), or imported from the
//! TinyZero task layout (`target`, `nums`); and the prompt the model sees.

use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ListArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::game24::is_game24_set;
use crate::solver::solve;

/// One puzzle.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    pub target: i64,
    pub nums: Vec<i64>,
}

/// What tasks look like.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    pub min_numbers: usize,
    pub max_numbers: usize,
    pub min_number: i64,
    pub max_number: i64,
    pub min_target: i64,
    pub max_target: i64,
    /// Draw the target first and redraw only the numbers until they reach it (the study's
    /// way: every target equally likely); else draw both again until solvable.
    pub target_first: bool,
    /// Solvable only through integers (a division must be exact), as the study's search.
    pub integer_only: bool,
    /// Draw again when four numbers are one of the 24-game sets (`game24`), as the study did.
    pub exclude_game24: bool,
}

impl Default for TaskSpec {
    /// The study's priming generator: a target in 10..=25, then 3 or 4 numbers in 1..=24
    /// redrawn until an integer-only search reaches it, the 24-game sets excluded.
    fn default() -> Self {
        TaskSpec {
            min_numbers: 3,
            max_numbers: 4,
            min_number: 1,
            max_number: 24,
            min_target: 10,
            max_target: 25,
            target_first: true,
            integer_only: true,
            exclude_game24: true,
        }
    }
}

/// A solvable task and one solution, drawn from `rng`.
pub fn generate(rng: &mut fastrand::Rng, spec: &TaskSpec) -> (Task, String) {
    let mut target = rng.i64(spec.min_target..=spec.max_target);
    loop {
        let n = rng.usize(spec.min_numbers..=spec.max_numbers);
        let nums: Vec<i64> = (0..n).map(|_| rng.i64(spec.min_number..=spec.max_number)).collect();
        let excluded = spec.exclude_game24 && is_game24_set(&nums);
        if !excluded && let Some(solution) = solve(&nums, target, spec.integer_only) {
            return (Task { target, nums }, solution);
        }
        if !spec.target_first {
            target = rng.i64(spec.min_target..=spec.max_target);
        }
    }
}

/// Reads tasks in the TinyZero layout (`Jiayi-Pan/Countdown-Tasks-3to4`): a parquet file
/// with `target` (int64) and `nums` (list of int64); `range` picks rows (the study: the
/// first 327,680 for training, the next 1,024 for testing).
pub fn read_tasks(path: &Path, range: std::ops::Range<usize>) -> Result<Vec<Task>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is not a parquet file", path.display()))?.build()?;
    let mut out = Vec::new();
    let mut row = 0usize;
    for batch in reader {
        let batch = batch?;
        let targets = batch
            .column_by_name("target")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .with_context(|| format!("{}: no int64 `target` column", path.display()))?;
        let nums = batch
            .column_by_name("nums")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .with_context(|| format!("{}: no list `nums` column", path.display()))?;
        for i in 0..batch.num_rows() {
            if range.contains(&row) {
                let values = nums.value(i);
                let values = values.as_primitive_opt::<Int64Type>().with_context(|| format!("{}: `nums` is not a list of int64", path.display()))?;
                if targets.is_null(i) || nums.is_null(i) || values.null_count() > 0 {
                    bail!("{}: row {row} has a missing target or number", path.display());
                }
                out.push(Task { target: targets.value(i), nums: values.values().to_vec() });
            }
            row += 1;
        }
    }
    Ok(out)
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
    use crate::expr::evaluate;

    #[test]
    fn tinyzero_tasks_are_read_by_row_range() {
        use arrow_array::builder::{Int64Builder, ListBuilder};
        use arrow_array::{ArrayRef, Int64Array, RecordBatch};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        let mut nums = ListBuilder::new(Int64Builder::new());
        for row in [vec![25, 30, 3, 4], vec![1, 2, 3], vec![44, 19, 35]] {
            nums.values().append_slice(&row);
            nums.append(true);
        }
        let batch =
            RecordBatch::try_from_iter([("target", Arc::new(Int64Array::from(vec![32, 6, 98])) as ArrayRef), ("nums", Arc::new(nums.finish()) as ArrayRef)])
                .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let tasks = read_tasks(&path, 1..3).unwrap();
        assert_eq!(tasks, vec![Task { target: 6, nums: vec![1, 2, 3] }, Task { target: 98, nums: vec![44, 19, 35] }]);
        let err = read_tasks(&dir.path().join("none.parquet"), 0..1).unwrap_err().to_string();
        assert!(err.contains("cannot open"), "{err}");
    }

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

    #[test]
    fn the_24_game_sets_are_drawn_again() {
        let game24_draws = |exclude_game24| {
            let spec = TaskSpec { min_numbers: 4, max_number: 13, exclude_game24, ..TaskSpec::default() };
            let mut rng = fastrand::Rng::with_seed(7);
            (0..3000).filter(|_| crate::game24::is_game24_set(&generate(&mut rng, &spec).0.nums)).count()
        };
        assert!(game24_draws(false) > 0);
        assert_eq!(game24_draws(true), 0);
    }
}
