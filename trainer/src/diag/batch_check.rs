//! Rows of a batch against the same rows alone, on one backend: greedy generation of a
//! left-padded batch (a rollout's shape) keeps every step's logits, then the first few
//! prompts are generated again one at a time. A row whose logits in the batch are not its
//! own (a kernel reading another row) shows as a large gap, and the row it took from is
//! the one alone whose logits are closest. `trainer check-batch` prints it.

use anyhow::Result;

use crate::ModelBackend;
use crate::diag::model_source::ModelSource;
use crate::generate::{Generated, Sampling, generate};
use crate::model::Llama;
use crate::ops::check::relative_gap;
use crate::ops::kernels::Kernels;

/// Logits gaps below this are float noise (reduced-precision matmuls included); a row
/// mixed up with another differs by far more.
pub const NOISE: f32 = 1e-2;

/// One row of the batch, step by step against the same prompt generated alone.
#[derive(Clone, Debug)]
pub struct RowCheck {
    pub row: usize,
    /// Relative gap of the logits at each step while the tokens so far agree (step 0:
    /// the prefill's last position).
    pub gaps: Vec<f32>,
    /// The first step whose gap exceeds [`NOISE`], with the alone row whose logits at that
    /// step are closest to this row's (itself when nothing else is closer) and that gap.
    pub first_bad: Option<(usize, usize, f32)>,
    pub tokens_equal: bool,
}

impl std::fmt::Display for RowCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let worst = self.gaps.iter().fold(0f32, |m, &g| m.max(g));
        write!(f, "row {}: {} steps compared, prefill gap {:.2e}, largest {worst:.2e}", self.row, self.gaps.len(), self.gaps.first().copied().unwrap_or(0.0))?;
        if let Some((step, closest, gap)) = self.first_bad {
            write!(f, "; step {step} is off (its logits are closest to row {closest} alone: gap {gap:.2e})")?;
        }
        write!(f, "; tokens {}", if self.tokens_equal { "equal" } else { "DIFFER" })
    }
}

/// What `trainer check-batch` generates: `rows` rollout-like prompts at once, the first
/// `alone` of them again one by one, `new_tokens` each.
pub struct BatchCheck {
    pub rows: usize,
    pub alone: usize,
    pub new_tokens: usize,
    /// The kernel paths the model's ops take.
    pub kernels: Kernels,
}

/// `trainer check-batch`: prints each checked row; returns how many differ from themselves
/// alone.
pub fn check_batch<B: ModelBackend>(source: &ModelSource, c: &BatchCheck) -> Result<usize> {
    let started = std::time::Instant::now();
    let model = source.load::<B>(&Default::default())?.with_kernels(c.kernels);
    let prompts = rollout_like_prompts(c.rows, model.config.vocab_size);
    let checks = batch_vs_alone(&model, &prompts, c.alone, c.new_tokens)?;
    for check in &checks {
        println!("{check}");
    }
    println!("{} rows at once, {} alone, {} new tokens ({:.0} s)", c.rows, checks.len(), c.new_tokens, started.elapsed().as_secs_f64());
    Ok(checks.iter().filter(|c| c.first_bad.is_some() || !c.tokens_equal).count())
}

/// Generates `prompts` at once, then the first `alone` of them one by one, greedily for
/// `max_new_tokens`, and compares each of those rows with itself alone.
pub fn batch_vs_alone<B: ModelBackend>(model: &Llama<B>, prompts: &[Vec<u32>], alone: usize, max_new_tokens: usize) -> Result<Vec<RowCheck>> {
    let sampling = Sampling { max_new_tokens, temperature: 0.0, top_p: 1.0, seed: 0, eos: None };
    let batch = generate(model, prompts, &sampling, true)?;
    let single: Vec<Generated> = prompts.iter().take(alone).map(|p| generate(model, std::slice::from_ref(p), &sampling, true)).collect::<Result<_>>()?;
    Ok(compare_rows(&batch, &single))
}

/// Row `i` of `batch` against `single[i]` (the same prompt generated alone), for every `i`
/// in `single`.
pub fn compare_rows(batch: &Generated, single: &[Generated]) -> Vec<RowCheck> {
    let mut checks = Vec::new();
    for (row, own) in single.iter().enumerate() {
        let (got, want) = (&batch.logits[row], &own.logits[0]);
        let mut gaps = Vec::new();
        let mut first_bad = None;
        for step in 0..got.len().min(want.len()) {
            let gap = relative_gap(&want[step], &got[step]);
            gaps.push(gap);
            if gap > NOISE && first_bad.is_none() {
                let (closest, closest_gap) = single
                    .iter()
                    .enumerate()
                    .filter_map(|(j, other)| other.logits[0].get(step).map(|l| (j, relative_gap(l, &got[step]))))
                    .fold((row, gap), |best, c| if c.1 < best.1 { c } else { best });
                first_bad = Some((step, closest, closest_gap));
            }
            // After the tokens part, the rows no longer see the same context.
            if batch.tokens[row].get(step) != own.tokens[0].get(step) {
                break;
            }
        }
        checks.push(RowCheck { row, gaps, first_bad, tokens_equal: batch.tokens[row] == own.tokens[0] });
    }
    checks
}

/// Prompts of a rollout's shape: `rows` prompts of 80 to 92 tokens (left-padded to 96),
/// deterministic ids below `vocab`.
pub fn rollout_like_prompts(rows: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..rows).map(|r| (0..80 + (r * 7) % 13).map(|i| ((r * 7919 + i * 104_729 + 11) % vocab) as u32).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_a_cpu_batch_match_themselves_alone() {
        type B = crate::Cpu;
        let model = Llama::<B>::random(&crate::model::tests::tiny_config(), &Default::default());
        let prompts = rollout_like_prompts(5, 64);
        let checks = batch_vs_alone(&model, &prompts, 3, 4).unwrap();
        assert_eq!(checks.len(), 3);
        for c in &checks {
            assert!(c.first_bad.is_none() && c.tokens_equal, "{c}");
            assert_eq!(c.gaps.len(), 4, "{c}");
        }
    }

    #[test]
    fn a_row_taken_from_another_is_named() {
        // A batch whose row 1 computed row 0's logits (and tokens) from step 1 on.
        let row = |first: f32, token: u32| Generated {
            tokens: vec![vec![token, token]],
            logits: vec![vec![vec![first, 1.0, 0.0], vec![first, 0.0, 1.0]]],
            sent_back: 0,
        };
        let single = vec![row(5.0, 0), row(-5.0, 2)];
        let mut batch =
            Generated { tokens: vec![vec![0, 0], vec![2, 0]], logits: vec![single[0].logits[0].clone(), single[1].logits[0].clone()], sent_back: 0 };
        batch.logits[1][1] = single[0].logits[0][1].clone();
        let checks = compare_rows(&batch, &single);
        assert!(checks[0].first_bad.is_none() && checks[0].tokens_equal);
        let (step, closest, gap) = checks[1].first_bad.expect("row 1 is flagged");
        assert_eq!((step, closest, gap), (1, 0, 0.0), "{}", checks[1]);
        assert!(!checks[1].tokens_equal);
        assert!(checks[1].to_string().contains("closest to row 0"), "{}", checks[1]);
    }
}
