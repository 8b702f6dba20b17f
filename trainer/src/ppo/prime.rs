//! Priming before PPO: supervised steps on Countdown traces, so that a model that has never
//! seen the format learns to think inside `<think>`, answer inside `<answer>` on the last
//! line and stop. The traces are the solver's solutions, or a priming set written by the
//! pipeline (`pipeline prime`: the study's conditions, LLM-written). The loss counts the
//! completion tokens only (the prompt is context).

use anyhow::{Result, bail};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::batch::WIDTH_BUCKET;
use super::tasks::Tasks;
use crate::countdown::solver::solve;
use crate::countdown::task::{Task, prompt};
use crate::data::set::Sequence;
use crate::generate::round_up;
use crate::loss::{IGNORE, causal_lm_loss};
use crate::model::Llama;
use crate::tokenizer::TextTokenizer;
use crate::train::clip::clip_global_norm;

/// The completion the model is taught for a task: a short thought with the solution, then
/// the equation alone on the last line.
pub fn trace(task: &Task, solution: &str) -> String {
    let nums: Vec<String> = task.nums.iter().map(i64::to_string).collect();
    format!(
        " I need {} from {}. Trying {solution} gives {}, which is the target.</think>\n<answer> {solution} </answer>",
        task.target,
        nums.join(", "),
        task.target
    )
}

/// One training example: ids and labels (`IGNORE` on the prompt).
pub fn example(tok: &TextTokenizer, bos: Option<u32>, eos: u32, task: &Task, solution: &str) -> Result<(Vec<u32>, Vec<i64>)> {
    let mut ids: Vec<u32> = bos.into_iter().collect();
    ids.extend(tok.encode(&prompt(task))?);
    let prompt_len = ids.len();
    ids.extend(tok.encode(&trace(task, solution))?);
    ids.push(eos);
    let labels = ids.iter().enumerate().map(|(i, &t)| if i < prompt_len { IGNORE } else { t as i64 }).collect();
    Ok((ids, labels))
}

/// Where priming traces come from.
pub enum Traces<'a> {
    /// Solver traces of the run's tasks, drawn like PPO's from steps beyond the PPO run's
    /// (from `first_step` on) so they never repeat its prompts.
    Solver { tasks: &'a Tasks, tok: &'a TextTokenizer, bos: Option<u32>, first_step: usize },
    /// A priming set's sequences (`[bos] + prompt + completion + [eos]`), in order, cycling.
    Set(&'a [Sequence]),
}

impl Traces<'_> {
    /// The ids and labels of step `step`'s `batch` rows.
    fn rows(&self, step: usize, batch: usize, eos: u32) -> Result<Vec<(Vec<u32>, Vec<i64>)>> {
        let rows = match self {
            Traces::Solver { tasks, tok, bos, first_step } => {
                let mut rows = Vec::with_capacity(batch);
                for (task, solution) in &tasks.for_step(first_step + step, batch) {
                    let Some(solution) = solution.clone().or_else(|| solve(&task.nums, task.target)) else { continue };
                    rows.push(example(tok, *bos, eos, task, &solution)?);
                }
                rows
            }
            Traces::Set(sequences) => (0..batch.min(sequences.len()))
                .map(|i| {
                    let s = &sequences[(step * batch + i) % sequences.len()];
                    (s.ids.clone(), s.ids.iter().enumerate().map(|(i, &t)| if i < s.prompt_len { IGNORE } else { t as i64 }).collect())
                })
                .collect(),
        };
        if rows.is_empty() {
            bail!("priming step {step}: no trace (no solvable task among {batch}, or an empty priming set)");
        }
        Ok(rows)
    }
}

/// Runs `steps` SFT steps of `batch` traces; returns the model and the last loss.
#[allow(clippy::too_many_arguments)]
pub fn prime<B: AutodiffBackend>(
    mut model: Llama<B>,
    traces: &Traces,
    eos: u32,
    steps: usize,
    batch: usize,
    lr: f64,
    mut log: impl FnMut(usize, f64),
) -> Result<(Llama<B>, f64)> {
    let device = model.embed_tokens.weight.val().device();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<B, Llama<B>>();
    let mut last = f64::NAN;
    for step in 0..steps {
        let rows = traces.rows(step, batch, eos)?;
        // Widths and the logits' start in buckets: a few shapes for the whole priming.
        let width = round_up(rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0), WIDTH_BUCKET);
        let ids: Vec<i64> = rows.iter().flat_map(|(ids, _)| ids.iter().map(|&t| t as i64).chain(std::iter::repeat_n(eos as i64, width - ids.len()))).collect();
        let labels: Vec<i64> = rows.iter().flat_map(|(ids, labels)| labels.iter().copied().chain(std::iter::repeat_n(IGNORE, width - ids.len()))).collect();
        let shape = [rows.len(), width];
        // Logits only from the position before the first completion token of the shortest prompt.
        let start = (rows.iter().map(|(_, labels)| labels.iter().position(|&l| l != IGNORE).unwrap_or(1)).min().unwrap_or(1) - 1) / WIDTH_BUCKET * WIDTH_BUCKET;
        let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(labels, shape), &device).narrow(1, start, width - start);
        let logits = model.forward_range(Tensor::from_data(TensorData::new(ids, shape), &device), start, width - start);
        let loss = causal_lm_loss(logits, labels);
        last = loss.clone().into_scalar().elem::<f64>();
        if !last.is_finite() {
            bail!("priming step {step}: the loss is {last}; lower prime.lr");
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        clip_global_norm(&model, &mut grads, 1.0);
        model = optim.step(lr, model, grads);
        log(step + 1, last);
    }
    Ok((model, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::countdown::reward::reward;

    #[test]
    fn a_trace_after_its_prompt_earns_the_full_reward() {
        let task = Task { target: 24, nums: vec![2, 3, 4] };
        let text = format!("{}{}", prompt(&task), trace(&task, "2 * 3 * 4"));
        assert_eq!(reward(&text, &task), 1.0);
    }
}
