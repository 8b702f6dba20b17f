//! Behavior tracking during PPO (the study's Figure 1, middle): what is tracked and when,
//! and the parts written. By default (`source = "test_set"`, the study's way) the model
//! before PPO and after every `track.every`-th step answers `track.samples` held-out tasks
//! drawn at random, sampled at `track.temperature` (1.0); with `source = "rollouts"` the
//! first `track.samples` responses of step 1's and every `every`-th step's training batch
//! are kept instead. Each tracked step becomes
//! `<output.dir>/rollouts/step-NNNNNNNN.parquet`, the input of the pipeline's classifier
//! (`pipeline classify --input <run>/rollouts --run <run>`, Countdown prompts in
//! `configs/prompts/track/`) and a table that `corpus-tools sql` joins with the labels.
//!
//! Columns: `doc_id` (hex, stable: the same step and response give the same id), `step`,
//! `sample` (index in the step's batch), `target`, `nums` (as text), `score` (the study's
//! reward), `response_tokens`, `response` (the decoded response) and `text` (what the
//! classifier reads: the puzzle, then the response). A part is written whole (temporary
//! file, then rename), so a resumed run rewrites it identically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::countdown::task::Task;

/// `[track]`: which responses to keep for classification.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackSection {
    /// Track every N-th step (the study tracked every 10).
    #[serde(default = "default_every")]
    pub every: usize,
    /// Responses kept per tracked step (the study: 200).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Where the responses come from.
    #[serde(default)]
    pub source: TrackSource,
    /// Sampling temperature of the test-set generations (the study: 1.0).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

/// Where tracked responses come from (`track.source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// Generations on held-out tasks drawn at random, before PPO and after every `every`-th
    /// step (the study's way).
    #[default]
    TestSet,
    /// The first responses of the training batch of step 1 and every `every`-th step
    /// (no extra generation).
    Rollouts,
}

impl TrackSection {
    /// Whether the test set is generated after step `step` (0: before PPO).
    pub fn tracks_after(&self, step: usize) -> bool {
        self.source == TrackSource::TestSet && step.is_multiple_of(self.every)
    }

    /// Whether step `step`'s training batch is kept.
    pub fn keeps_batch_of(&self, step: usize) -> bool {
        self.source == TrackSource::Rollouts && (step == 1 || step.is_multiple_of(self.every))
    }
}

/// `samples` indices into `n` held-out tasks, drawn at random from `seed` (without
/// replacement while they last, then again from all).
pub fn draw_tasks(n: usize, samples: usize, seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(samples);
    while out.len() < samples && n > 0 {
        let mut round: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut round);
        out.extend(round.into_iter().take(samples - out.len()));
    }
    out
}

fn default_every() -> usize {
    10
}
fn default_samples() -> usize {
    200
}
fn default_temperature() -> f64 {
    1.0
}

/// One kept response.
pub struct TrackedRollout<'a> {
    pub task: &'a Task,
    pub response: String,
    pub score: f64,
    pub response_tokens: usize,
}

/// The folder of the parts.
pub fn rollouts_dir(out: &Path) -> PathBuf {
    out.join(run_contract::tables::ROLLOUTS)
}

/// The text the classifier reads: the puzzle, then the attempt.
fn classified_text(task: &Task, response: &str) -> String {
    let nums: Vec<String> = task.nums.iter().map(i64::to_string).collect();
    format!("Puzzle: reach {} with the numbers {}.\nAttempt:\n<think>{response}", task.target, nums.join(", "))
}

/// Writes step `step`'s part; returns its path.
pub fn write_rollouts(out: &Path, step: usize, rows: &[TrackedRollout]) -> Result<PathBuf> {
    let dir = rollouts_dir(out);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let texts: Vec<String> = rows.iter().map(|r| classified_text(r.task, &r.response)).collect();
    let ids: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| hex::encode(&Sha256::digest(format!("{step}\n{i}\n{}\n{}", r.task.target, r.response).as_bytes())[..16]))
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("doc_id", Arc::new(StringArray::from(ids))),
        ("step", Arc::new(Int64Array::from(vec![step as i64; rows.len()]))),
        ("sample", Arc::new(Int64Array::from((0..rows.len() as i64).collect::<Vec<_>>()))),
        ("target", Arc::new(Int64Array::from(rows.iter().map(|r| r.task.target).collect::<Vec<_>>()))),
        ("nums", Arc::new(StringArray::from(rows.iter().map(|r| r.task.nums.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>()))),
        ("score", Arc::new(Float64Array::from(rows.iter().map(|r| r.score).collect::<Vec<_>>()))),
        ("response_tokens", Arc::new(Int64Array::from(rows.iter().map(|r| r.response_tokens as i64).collect::<Vec<_>>()))),
        ("response", Arc::new(StringArray::from(rows.iter().map(|r| r.response.as_str()).collect::<Vec<_>>()))),
        ("text", Arc::new(StringArray::from(texts))),
    ];
    let batch = RecordBatch::try_from_iter(columns)?;
    let path = dir.join(format!("step-{step:08}.parquet"));
    let tmp = path.with_extension("parquet.tmp");
    let props = parquet::file::properties::WriterProperties::builder().set_compression(parquet::basic::Compression::ZSTD(Default::default())).build();
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn a_part_holds_the_kept_responses_with_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        let task = Task { target: 24, nums: vec![2, 3, 4] };
        let rows = |response: &str| {
            vec![
                TrackedRollout { task: &task, response: response.into(), score: 1.0, response_tokens: 9 },
                TrackedRollout { task: &task, response: "no idea".into(), score: 0.0, response_tokens: 2 },
            ]
        };
        let path = write_rollouts(dir.path(), 10, &rows(" 2*3*4 = 24</think>")).unwrap();
        assert_eq!(path.file_name().unwrap(), "step-00000010.parquet");
        let read = || {
            let file = std::fs::File::open(&path).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().next().unwrap().unwrap()
        };
        let batch = read();
        assert_eq!(batch.num_rows(), 2);
        let text = batch.column_by_name("text").unwrap().as_string::<i32>().value(0).to_string();
        assert!(text.starts_with("Puzzle: reach 24 with the numbers 2, 3, 4.") && text.ends_with("2*3*4 = 24</think>"), "{text}");
        let ids: Vec<String> = batch.column_by_name("doc_id").unwrap().as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
        assert_ne!(ids[0], ids[1]);
        assert!(ids.iter().all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
        // Written again (a resumed run): the same ids.
        write_rollouts(dir.path(), 10, &rows(" 2*3*4 = 24</think>")).unwrap();
        let again: Vec<String> = read().column_by_name("doc_id").unwrap().as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
        assert_eq!(ids, again);
        assert!(!dir.path().join("rollouts/step-00000010.parquet.tmp").exists());
    }

    #[test]
    fn tracked_steps_and_drawn_tasks() {
        let track = |source| TrackSection { every: 10, samples: 200, source, temperature: 1.0 };
        let test_set: Vec<usize> = (0..=30).filter(|&s| track(TrackSource::TestSet).tracks_after(s)).collect();
        let batches: Vec<usize> = (1..=30).filter(|&s| track(TrackSource::Rollouts).keeps_batch_of(s)).collect();
        assert_eq!((test_set, batches), (vec![0, 10, 20, 30], vec![1, 10, 20, 30]));
        assert!(!track(TrackSource::TestSet).keeps_batch_of(10) && !track(TrackSource::Rollouts).tracks_after(10));
        let drawn = draw_tasks(1024, 200, 7);
        assert_eq!(drawn.len(), 200);
        assert_eq!(drawn.iter().collect::<std::collections::HashSet<_>>().len(), 200, "no task twice while they last");
        assert_eq!(drawn, draw_tasks(1024, 200, 7));
        assert_ne!(drawn, draw_tasks(1024, 200, 8));
        let few = draw_tasks(3, 7, 1);
        assert_eq!(few.len(), 7);
        assert!((0..3).all(|i| few[..3].contains(&i)));
        assert!(draw_tasks(0, 5, 1).is_empty());
    }
}
