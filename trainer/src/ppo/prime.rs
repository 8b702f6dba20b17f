//! Priming before PPO: supervised steps on Countdown traces, so that a model that has never
//! seen the format learns to think inside `<think>`, answer inside `<answer>` on the last
//! line and stop. The traces are the solver's solutions, or a priming set written by the
//! pipeline (`pipeline prime`: the study's conditions, LLM-written). The loss counts the
//! completion tokens only (the prompt is context).

use anyhow::{Result, bail};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;

use super::batch::Packed;
use super::loss::token_logp;
use super::tasks::Tasks;
use crate::TrainBackend;
use crate::countdown::solver::solve;
use crate::countdown::task::{Task, prompt};
use crate::data::set::Sequence;
use crate::model::Llama;
use crate::ops::adamw::OnePassAdamW;
use crate::run::clip::clip_global_norm;
use crate::tokenizer::TextTokenizer;

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

/// One training example: the prompt's ids (after bos) and the completion's (the trace, then
/// eos); the loss counts the completion only.
pub fn example(tok: &TextTokenizer, bos: Option<u32>, eos: u32, task: &Task, solution: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut prompt_ids: Vec<u32> = bos.into_iter().collect();
    prompt_ids.extend(tok.encode(&prompt(task))?);
    let mut completion = tok.encode(&trace(task, solution))?;
    completion.push(eos);
    Ok((prompt_ids, completion))
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
    /// The (prompt, completion) ids of step `step`'s `batch` rows.
    fn rows(&self, step: usize, batch: usize, eos: u32) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let rows = match self {
            Traces::Solver { tasks, tok, bos, first_step } => {
                let mut rows = Vec::with_capacity(batch);
                for (task, solution) in &tasks.for_step(first_step + step, batch) {
                    let Some(solution) = solution.clone().or_else(|| solve(&task.nums, task.target, false)) else { continue };
                    rows.push(example(tok, *bos, eos, task, &solution)?);
                }
                rows
            }
            Traces::Set(sequences) => (0..batch.min(sequences.len()))
                .map(|i| &sequences[(step * batch + i) % sequences.len()])
                .filter(|s| s.prompt_len > 0 && s.prompt_len < s.ids.len())
                .map(|s| (s.ids[..s.prompt_len].to_vec(), s.ids[s.prompt_len..].to_vec()))
                .collect(),
        };
        if rows.is_empty() {
            bail!("priming step {step}: no trace (no solvable task among {batch}, or an empty priming set)");
        }
        Ok(rows)
    }
}

/// Runs `steps` SFT steps of `batch` traces; returns the model and the last loss.
pub fn prime<B: TrainBackend>(
    mut model: Llama<B>,
    traces: &Traces,
    eos: u32,
    steps: usize,
    batch: usize,
    lr: f64,
    mut log: impl FnMut(usize, f64),
) -> Result<(Llama<B>, f64)> {
    let device = model.embed_tokens.weight.val().device();
    let mut optim = OnePassAdamW::default().with_weight_decay(0.0).init::<B, Llama<B>>();
    let mut last = f64::NAN;
    for step in 0..steps {
        let rows = traces.rows(step, batch, eos)?;
        // Packed like PPO's batches: widths and the logits' window in buckets, a few shapes
        // for the whole priming; the mean log-likelihood loss over the completion tokens.
        let pairs: Vec<(&[u32], &[u32])> = rows.iter().map(|(p, c)| (p.as_slice(), c.as_slice())).collect();
        let packed = Packed::<B>::new(&pairs, eos, &device);
        let mask = packed.mask();
        let logp = token_logp(model.forward_range(packed.ids.clone(), packed.start, packed.len), packed.targets());
        let loss = (logp * mask.clone()).sum().neg() / mask.sum().clamp_min(1.0);
        last = loss.clone().into_scalar().elem::<f64>();
        if !last.is_finite() {
            bail!("priming step {step}: the loss is {last}; lower prime.lr");
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        clip_global_norm(&model, &mut grads, 1.0, model.kernels());
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
