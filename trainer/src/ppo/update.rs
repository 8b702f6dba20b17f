//! One PPO update over a rollout batch, as veRL runs it: the critic's epoch, then the
//! actor's (as veRL's trainer orders them); the critic steps once per critic mini-batch and
//! the actor once per actor mini-batch (their sizes differ: veRL multiplies the actor's by
//! the samples per prompt, not the critic's); each mini-batch runs as packed micro-batches
//! (`batch::MicroBatching`) whose gradients add up in place (a memory knob), with the first
//! `recompute_layers` decoder layers recomputed in the backward pass (`run::backward`).
//! Each model's mini-batch loss is veRL's (the mean, over the mini-batch's groups of
//! `actor_loss_group` / `critic_loss_group` responses, of each group's token mean: veRL's
//! micro-batches) or a mean over all its tokens; either way it is a per-token weight, so
//! the memory micro-batch does not change what a step computes. The actor minimises
//! the clipped policy loss minus the entropy bonus, the critic the clipped value loss;
//! global gradient-norm clipping before every step.

use std::cell::RefCell;
use std::ops::Range;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use serde::Serialize;

use super::batch::{MicroBatching, Packed};
use super::critic::Critic;
use super::loss::{entropy_tokens, policy_loss_tokens, token_logp, value_loss_tokens};
use super::rollout::Rollout;
use crate::TrainBackend;
use crate::diag::gpu_profile;
use crate::model::Llama;
use crate::ops::kernels::Kernels;
use crate::run::backward::{GradientSums, backward_into, head_chunk_rows};
use crate::run::clip::clip_global_norm;

/// How a mini-batch's loss is averaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAverage {
    /// veRL's: the mini-batch is cut into groups of the model's loss group (veRL's
    /// micro-batches); each group's token mean, averaged over the groups (a token of a
    /// short group weighs more).
    MicroBatch,
    /// Every token of the mini-batch weighs the same.
    Tokens,
}

/// Each response's per-token loss weight for a model whose mini-batches hold `mini`
/// responses: with `MicroBatch`, 1 / (its group's tokens x the groups of its mini-batch),
/// groups of `group` responses counted from the mini-batch's start; with `Tokens`,
/// 1 / its mini-batch's tokens. A mini-batch's weights sum to 1 over its tokens.
pub fn loss_weights(lengths: &[usize], mini: usize, group: usize, average: LossAverage) -> Vec<f64> {
    let (mini, group) = (mini.max(1), group.max(1));
    let mut out = Vec::with_capacity(lengths.len());
    for batch in lengths.chunks(mini) {
        let unit = if average == LossAverage::Tokens { batch.len() } else { group };
        let groups = batch.len().div_ceil(unit);
        for part in batch.chunks(unit) {
            let tokens: usize = part.iter().sum();
            out.extend(part.iter().map(|_| 1.0 / (tokens.max(1) * groups) as f64));
        }
    }
    out
}

/// The PPO update's settings (the study's: clip 0.2, value clip 0.5, entropy 0.001,
/// gradient clip 1.0, actor lr 1e-6, critic lr 1e-5).
#[derive(Clone, Debug)]
pub struct UpdateSettings {
    pub clip: f64,
    pub value_clip: f64,
    pub entropy_coef: f64,
    /// Responses per actor optimizer step.
    pub actor_mini_batch: usize,
    /// Responses per critic optimizer step.
    pub critic_mini_batch: usize,
    /// The rows of each forward/backward pass (gradients accumulate over a mini-batch).
    pub micro_batching: MicroBatching,
    /// The longest a response can be (`ppo.max_response_tokens`), which sizes micro-batches
    /// cut by positions.
    pub max_response: usize,
    pub loss_average: LossAverage,
    /// Responses per veRL micro-batch of the actor and of the critic (`MicroBatch` averaging).
    pub actor_loss_group: usize,
    pub critic_loss_group: usize,
    /// Token id that pads packed rows.
    pub pad: u32,
    pub grad_clip: f64,
    pub actor_lr: f64,
    pub critic_lr: f64,
    /// Decoder layers that recompute their activations in the backward pass (`ppo.recompute`).
    pub recompute_layers: usize,
    /// The kernel paths of the gradient clip's norms.
    pub kernels: Kernels,
}

/// Token-weighted means over the update, for the metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub clip_fraction: f64,
    pub value_clip_fraction: f64,
    pub actor_grad_norm: f64,
    pub critic_grad_norm: f64,
    pub actor_steps: usize,
    pub critic_steps: usize,
    /// Wall time of each model's epoch, up to its statistics on the host (which waits for
    /// the device).
    pub actor_update_s: f64,
    pub critic_update_s: f64,
}

/// Runs one epoch of mini-batch updates over `rollouts`: the critic's, then the actor's.
/// Neither reads the other (the advantages and the old values were fixed by the rollout),
/// so running them one after the other computes what running them side by side would,
/// while only one model's gradients and graph exist at a time.
pub fn update<B: TrainBackend, OA: Optimizer<Llama<B>, B>, OC: Optimizer<Critic<B>, B>>(
    actor: Llama<B>,
    critic: Critic<B>,
    actor_optim: &mut OA,
    critic_optim: &mut OC,
    rollouts: &[Rollout],
    s: &UpdateSettings,
) -> (Llama<B>, Critic<B>, UpdateStats) {
    let lengths: Vec<usize> = rollouts.iter().map(|r| r.response.len()).collect();
    // Each token's share of the update, for the token-weighted means of the metrics.
    let unit = 1.0 / lengths.iter().sum::<usize>().max(1) as f64;
    let (a, c) = (s.actor_mini_batch.max(1), s.critic_mini_batch.max(1));
    gpu_profile::mark("critic update");
    let critic_epoch = Epoch { rollouts, mini: c, weights: loss_weights(&lengths, c, s.critic_loss_group, s.loss_average), unit, settings: s };
    let (critic, critic_part) = critic_epoch.run(critic, critic_optim, s.critic_lr, |critic, micro, sums| critic_micro_batch(critic, micro, s, sums));
    // At the study's 3B shape each epoch takes minutes: say where the update is.
    eprintln!("  critic updated in {:.1} s ({} optimizer steps); updating the actor", critic_part.seconds, critic_part.steps);
    gpu_profile::mark("actor update");
    let actor_epoch = Epoch { rollouts, mini: a, weights: loss_weights(&lengths, a, s.actor_loss_group, s.loss_average), unit, settings: s };
    let (actor, actor_part) = actor_epoch.run(actor, actor_optim, s.actor_lr, |actor, micro, sums| actor_micro_batch(actor, micro, s, sums));
    // An empty batch has no statistics: zeros.
    let (actor_sums, critic_sums) = (actor_part.sums.unwrap_or(vec![0.0; 3]), critic_part.sums.unwrap_or(vec![0.0; 2]));
    let stats = UpdateStats {
        policy_loss: actor_sums[0],
        entropy: actor_sums[1],
        clip_fraction: actor_sums[2],
        value_loss: critic_sums[0],
        value_clip_fraction: critic_sums[1],
        actor_grad_norm: actor_part.grad_norm,
        critic_grad_norm: critic_part.grad_norm,
        actor_steps: actor_part.steps,
        critic_steps: critic_part.steps,
        actor_update_s: actor_part.seconds,
        critic_update_s: critic_part.seconds,
    };
    (actor, critic, stats)
}

/// One micro-batch as a model's loss reads it: the packed rows, and per window position
/// the rollouts' values, the token's loss weight and its share of the metrics' means.
struct MicroBatch<'a, B: Backend> {
    packed: Packed<B>,
    rollouts: &'a [Rollout],
    /// `[rows, len]`: each response token's loss weight (`loss_weights`), 0 elsewhere.
    weights: Tensor<B, 2>,
    /// `[rows, len]`: each response token's share of the update's token means, 0 elsewhere.
    unit: Tensor<B, 2>,
}

impl<B: Backend> MicroBatch<'_, B> {
    /// `[rows, len]`: each rollout's per-token values `of(rollout)` at its response positions.
    fn spread(&self, of: impl Fn(&Rollout) -> &[f64]) -> Tensor<B, 2> {
        self.packed.spread(|i| of(&self.rollouts[i]))
    }
}

/// Rows `rows` of a `[rows, len]` tensor (a head chunk's, `run::backward`).
fn rows_of<B: Backend, K: burn::tensor::TensorKind<B> + burn::tensor::BasicOps<B>>(t: Tensor<B, 2, K>, rows: &Range<usize>) -> Tensor<B, 2, K> {
    t.narrow(0, rows.start, rows.len())
}

/// The statistics of a head chunk, added to those of the chunks before it.
fn add_stats<B: Backend>(total: &RefCell<Option<Tensor<B, 1>>>, part: Tensor<B, 1>) {
    let mut total = total.borrow_mut();
    *total = Some(match total.take() {
        Some(sum) => sum + part,
        None => part,
    });
}

/// The actor's part of a micro-batch: the clipped policy loss minus the entropy bonus, each
/// token weighted, its gradients added into `sums`; returns the token-weighted sums of the
/// policy loss, the entropy and the clipped fraction. The LM head runs a few rows at a time
/// (`run::backward::head_chunk_rows`).
fn actor_micro_batch<B: TrainBackend>(actor: &Llama<B>, m: &MicroBatch<B>, s: &UpdateSettings, sums: &mut GradientSums) -> Tensor<B::InnerBackend, 1> {
    let (old_logp, advantages, targets) = (m.spread(|r| &r.old_logp), m.spread(|r| &r.advantages), m.packed.targets());
    let stats = RefCell::new(None);
    let loss = |model: &Llama<B>, hidden: Tensor<B, 3>, rows: Range<usize>| {
        let logits = model.head(hidden.narrow(1, m.packed.start, m.packed.len));
        let logp = token_logp(logits.clone(), rows_of(targets.clone(), &rows));
        let (policy, clipped) = policy_loss_tokens(logp, rows_of(old_logp.clone(), &rows), rows_of(advantages.clone(), &rows), s.clip);
        let entropy = entropy_tokens(logits, s.kernels.fused_entropy);
        let unit = rows_of(m.unit.clone(), &rows);
        let of = |t: Tensor<B, 2>| (t * unit.clone()).sum().inner();
        add_stats(&stats, Tensor::cat(vec![of(policy.clone()), of(entropy.clone()), of(clipped)], 0));
        ((policy - entropy.mul_scalar(s.entropy_coef)) * rows_of(m.weights.clone(), &rows)).sum()
    };
    let head_rows = head_chunk_rows(m.packed.len, actor.config.vocab_size);
    backward_into(actor, actor, m.packed.ids.clone(), s.recompute_layers, head_rows, loss, sums);
    stats.into_inner().expect("a micro-batch has rows")
}

/// The critic's part of a micro-batch: the clipped value loss, each token weighted, its
/// gradients added into `sums`; returns the token-weighted sums of the value loss and the
/// clipped fraction.
fn critic_micro_batch<B: TrainBackend>(critic: &Critic<B>, m: &MicroBatch<B>, s: &UpdateSettings, sums: &mut GradientSums) -> Tensor<B::InnerBackend, 1> {
    let (old_values, returns) = (m.spread(|r| &r.values), m.spread(|r| &r.returns));
    let stats = RefCell::new(None);
    let loss = |_: &Llama<B>, hidden: Tensor<B, 3>, rows: Range<usize>| {
        let values = critic.value_head.forward(hidden.narrow(1, m.packed.start, m.packed.len)).squeeze_dim::<2>(2);
        let (value, clipped) = value_loss_tokens(values, rows_of(old_values.clone(), &rows), rows_of(returns.clone(), &rows), s.value_clip);
        let unit = rows_of(m.unit.clone(), &rows);
        let of = |t: Tensor<B, 2>| (t * unit.clone()).sum().inner();
        add_stats(&stats, Tensor::cat(vec![of(value.clone()), of(clipped)], 0));
        (value * rows_of(m.weights.clone(), &rows)).sum()
    };
    let rows = m.packed.ids.dims()[0];
    backward_into(&critic.body, critic, m.packed.ids.clone(), s.recompute_layers, rows, loss, sums);
    stats.into_inner().expect("a micro-batch has rows")
}

/// One model's epoch over the batch: mini-batches of `mini` responses, each the sum of its
/// micro-batches' gradients, clipped, then one optimizer step.
struct Epoch<'a> {
    rollouts: &'a [Rollout],
    mini: usize,
    /// Each response's per-token loss weight (`loss_weights`).
    weights: Vec<f64>,
    /// Each token's share of the update's token means.
    unit: f64,
    settings: &'a UpdateSettings,
}

/// What an epoch did: the token-weighted sums of its losses and fractions, the mean
/// gradient norm before clipping, the optimizer steps and its wall time.
struct EpochPart {
    sums: Option<Vec<f64>>,
    grad_norm: f64,
    steps: usize,
    seconds: f64,
}

impl Epoch<'_> {
    fn run<B: TrainBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
        &self,
        mut model: M,
        optim: &mut O,
        lr: f64,
        micro_batch: impl Fn(&M, &MicroBatch<B>, &mut GradientSums) -> Tensor<B::InnerBackend, 1>,
    ) -> (M, EpochPart) {
        let (s, started) = (self.settings, std::time::Instant::now());
        let device = model.devices().into_iter().next().expect("a model has a device");
        let mut stats: Option<Tensor<B::InnerBackend, 1>> = None;
        let (mut grad_norm, mut steps) = (0.0, 0);
        let longest = self.rollouts.iter().map(|r| r.prompt.len()).max().unwrap_or(0) + s.max_response;
        for (b, mini) in self.rollouts.chunks(self.mini).enumerate() {
            let mut sums = GradientSums::default();
            let widths: Vec<usize> = mini.iter().map(|r| r.prompt.len() + r.response.len()).collect();
            for range in s.micro_batching.cut(&widths, longest) {
                let first = b * self.mini + range.start;
                let rows = &mini[range];
                let pairs: Vec<(&[u32], &[u32])> = rows.iter().map(|r| (r.prompt.as_slice(), r.response.as_slice())).collect();
                let packed = Packed::<B>::new(&pairs, s.pad, &device);
                let weights: Vec<Vec<f64>> = rows.iter().enumerate().map(|(i, r)| vec![self.weights[first + i]; r.response.len()]).collect();
                let units: Vec<Vec<f64>> = rows.iter().map(|r| vec![self.unit; r.response.len()]).collect();
                let (weights, unit) = (packed.spread(|i| &weights[i]), packed.spread(|i| &units[i]));
                let part = micro_batch(&model, &MicroBatch { packed, rollouts: rows, weights, unit }, &mut sums);
                // The statistics stay on the device until the epoch ends: reading them here
                // would wait for the GPU at every micro-batch.
                stats = Some(match stats {
                    Some(acc) => acc + part,
                    None => part,
                });
            }
            let mut grads = sums.into_params();
            grad_norm += clip_global_norm(&model, &mut grads, s.grad_clip, s.kernels);
            model = optim.step(lr, model, grads);
            steps += 1;
        }
        let sums = stats.map(|t| t.into_data().convert::<f64>().to_vec::<f64>().expect("f64 statistics"));
        (model, EpochPart { sums, grad_norm: grad_norm / steps.max(1) as f64, steps, seconds: started.elapsed().as_secs_f64() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_weights_follow_verls_micro_batches() {
        let w = loss_weights(&[2, 4, 6, 8], 4, 2, LossAverage::MicroBatch);
        let want = [1.0 / 12.0, 1.0 / 12.0, 1.0 / 28.0, 1.0 / 28.0];
        assert!(w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{w:?}");
        assert!(loss_weights(&[2, 4, 6, 8], 4, 2, LossAverage::Tokens).iter().all(|&x| (x - 0.05).abs() < 1e-12));
        // Two mini-batches of 3 (the last group of each shorter); each sums to 1 over its tokens.
        let lengths = [1, 2, 3, 4, 5, 6];
        let w = loss_weights(&lengths, 3, 2, LossAverage::MicroBatch);
        for (ws, ls) in w.chunks(3).zip(lengths.chunks(3)) {
            assert!((ws.iter().zip(ls).map(|(w, &l)| w * l as f64).sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert!((w[2] - 1.0 / 6.0).abs() < 1e-12, "a group of one response of 3 tokens, of two groups: {w:?}");
    }

    use crate::generate::Sampling;
    use crate::ppo::rollout::{Detokenize, RolloutSettings, rollout};
    use burn::module::AutodiffModule;
    use burn::optim::AdamWConfig;
    use std::path::Path;

    type AD = crate::CpuAutodiff;

    /// Token `t` decodes to `t` as a character.
    struct Chars;

    impl Detokenize for Chars {
        fn decode(&self, ids: &[u32]) -> String {
            ids.iter().map(|&t| char::from_u32(t).unwrap_or('?')).collect()
        }
    }

    #[test]
    fn ppo_iterations_raise_the_reward_of_a_real_model() {
        let device = Default::default();
        let mut actor = crate::weights::load_model::<AD>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &device).unwrap();
        let reference = actor.valid();
        let mut critic = Critic::from_actor(&actor);
        let (mut oa, mut oc) = (AdamWConfig::new().init::<AD, Llama<AD>>(), AdamWConfig::new().init::<AD, Critic<AD>>());
        let prompts = vec![vec![5, 17, 99], vec![7, 8, 9, 10]];
        // The reward: the share of response tokens below 64 (about half of them at first).
        let score = |i: usize, text: &str| {
            let response: Vec<char> = text.chars().skip(prompts[i].len()).collect();
            response.iter().filter(|&&c| (c as u32) < 64).count() as f64 / response.len() as f64
        };
        let settings = UpdateSettings {
            clip: 0.2,
            value_clip: 0.5,
            entropy_coef: 0.001,
            actor_mini_batch: 8,
            critic_mini_batch: 8,
            loss_average: LossAverage::Tokens,
            actor_loss_group: 4,
            critic_loss_group: 1,
            micro_batching: MicroBatching { rows: 3, by_positions: false },
            max_response: 6,
            pad: 0,
            grad_clip: 1.0,
            actor_lr: 3e-3,
            critic_lr: 3e-3,
            recompute_layers: 0,
            kernels: Kernels::default(),
        };
        let mut means = Vec::new();
        for iteration in 0..16 {
            let r = RolloutSettings {
                samples: 8,
                sampling: Sampling { max_new_tokens: 6, temperature: 1.0, top_p: 1.0, seed: iteration, eos: None },
                micro_batching: MicroBatching { rows: 5, by_positions: false },
                kl_coef: 0.001,
                gamma: 1.0,
                lambda: 1.0,
            };
            let batch = rollout(&actor.valid(), &reference, &critic.valid(), &prompts, &Chars, score, &r).unwrap().rollouts;
            means.push(batch.iter().map(|x| x.score).sum::<f64>() / batch.len() as f64);
            let (a, c, stats) = update(actor, critic, &mut oa, &mut oc, &batch, &settings);
            (actor, critic) = (a, c);
            assert!(stats.policy_loss.is_finite() && stats.value_loss.is_finite() && stats.entropy > 0.0, "{stats:?}");
        }
        eprintln!("mean reward per PPO iteration: {means:.3?}");
        let (first, last) = (means[..3].iter().sum::<f64>() / 3.0, means[13..].iter().sum::<f64>() / 3.0);
        assert!(last > first + 0.15, "mean reward per iteration: {means:?}");
    }

    /// One mini-batch's update does not depend on how it is split into memory micro-batches
    /// (all are taken before its step), under either averaging.
    #[test]
    fn update_statistics_do_not_depend_on_the_micro_batch_split() {
        let device = Default::default();
        let actor = crate::weights::load_model::<AD>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &device).unwrap();
        let critic = Critic::from_actor(&actor);
        let prompts = vec![vec![5, 17, 99], vec![7, 8, 9, 10]];
        let r = RolloutSettings {
            samples: 3,
            sampling: Sampling { max_new_tokens: 5, temperature: 1.0, top_p: 1.0, seed: 7, eos: Some(40) },
            micro_batching: MicroBatching { rows: 6, by_positions: false },
            kl_coef: 0.001,
            gamma: 1.0,
            lambda: 1.0,
        };
        let mut batch = rollout(&actor.valid(), &actor.valid(), &critic.valid(), &prompts, &Chars, |_, t: &str| t.len() as f64 % 3.0, &r).unwrap().rollouts;
        // Responses of several lengths (as if some had stopped early), so that the ways of
        // averaging differ.
        for (i, r) in batch.iter_mut().enumerate() {
            let keep = 2 + i % 4;
            for v in [&mut r.old_logp, &mut r.ref_logp, &mut r.values, &mut r.advantages, &mut r.returns] {
                v.truncate(keep);
            }
            r.response.truncate(keep);
        }
        let stats_averaged = |micro_batching: MicroBatching, loss_average: LossAverage, group: usize| {
            let settings = UpdateSettings {
                clip: 0.2,
                value_clip: 0.5,
                entropy_coef: 0.001,
                actor_mini_batch: batch.len(),
                critic_mini_batch: batch.len(),
                loss_average,
                actor_loss_group: group,
                critic_loss_group: group,
                micro_batching,
                // Longer than these responses, so that micro-batches by positions take more rows.
                max_response: 60,
                pad: 0,
                grad_clip: 1.0,
                actor_lr: 1e-3,
                critic_lr: 1e-3,
                recompute_layers: 0,
                kernels: Kernels::default(),
            };
            let (mut oa, mut oc) = (AdamWConfig::new().init::<AD, Llama<AD>>(), AdamWConfig::new().init::<AD, Critic<AD>>());
            update(actor.clone(), critic.clone(), &mut oa, &mut oc, &batch, &settings).2
        };
        let rows = |n: usize| MicroBatching { rows: n, by_positions: false };
        let stats_with = |micro_batching: MicroBatching| stats_averaged(micro_batching, LossAverage::Tokens, 1);
        assert_eq!((stats_with(rows(2)).actor_steps, stats_with(rows(2)).critic_steps), (1, 1), "one mini-batch each");
        let (whole, split) = (stats_with(rows(batch.len())), stats_with(rows(1)));
        // By positions, a row at the longest (4 prompt + 60 response tokens) pads to 64
        // positions; these rows (at most 9 tokens) pad to 32, so one row's budget takes two
        // of them a pass and two rows' budget four.
        let widths: Vec<usize> = batch.iter().map(|r| r.prompt.len() + r.response.len()).collect();
        assert_eq!(MicroBatching { rows: 1, by_positions: true }.cut(&widths, 64), vec![0..2, 2..4, 4..6]);
        assert_eq!(MicroBatching { rows: 2, by_positions: true }.cut(&widths, 64), vec![0..4, 4..6]);
        let by_positions = [stats_with(MicroBatching { rows: 1, by_positions: true }), stats_with(MicroBatching { rows: 2, by_positions: true })];
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(1e-3);
        for other in [&split, &by_positions[0], &by_positions[1]] {
            let pairs = [
                (whole.policy_loss, other.policy_loss),
                (whole.value_loss, other.value_loss),
                (whole.entropy, other.entropy),
                (whole.clip_fraction, other.clip_fraction),
                (whole.value_clip_fraction, other.value_clip_fraction),
                (whole.actor_grad_norm, other.actor_grad_norm),
                (whole.critic_grad_norm, other.critic_grad_norm),
            ];
            for (a, b) in pairs {
                assert!(close(a, b), "{whole:?} vs {other:?}");
            }
        }
        assert!(whole.entropy > 0.0 && whole.value_loss > 0.0, "{whole:?}");
        // veRL's averaging: one group of the whole mini-batch is the token mean; groups of one
        // response weigh responses of unequal length differently, so the gradient differs;
        // and the memory micro-batch still changes nothing.
        let lengths: std::collections::BTreeSet<usize> = batch.iter().map(|r| r.response.len()).collect();
        assert!(lengths.len() > 1, "the batch has responses of several lengths: {lengths:?}");
        let one_group = stats_averaged(rows(1), LossAverage::MicroBatch, batch.len());
        assert!(close(one_group.actor_grad_norm, whole.actor_grad_norm), "{one_group:?} vs {whole:?}");
        let (per_response_whole, per_response_split) =
            (stats_averaged(rows(batch.len()), LossAverage::MicroBatch, 1), stats_averaged(rows(1), LossAverage::MicroBatch, 1));
        assert!(!close(per_response_whole.actor_grad_norm, whole.actor_grad_norm), "{per_response_whole:?} vs {whole:?}");
        assert!(close(per_response_whole.actor_grad_norm, per_response_split.actor_grad_norm), "{per_response_whole:?} vs {per_response_split:?}");
        assert!(close(per_response_whole.critic_grad_norm, per_response_split.critic_grad_norm), "{per_response_whole:?} vs {per_response_split:?}");
    }

    /// Recomputing every layer in the backward pass, or some, changes nothing the update
    /// computes (statistics and the models after it); mini-batches of either model that do
    /// not divide the batch step once more for the rest.
    #[test]
    fn recomputed_layers_give_the_same_update() {
        let device = Default::default();
        let actor = crate::weights::load_model::<AD>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &device).unwrap();
        let critic = Critic::from_actor(&actor).with_random_value_head(0.02);
        let prompts = vec![vec![5, 17, 99], vec![7, 8, 9, 10, 11]];
        let r = RolloutSettings {
            samples: 3,
            sampling: Sampling { max_new_tokens: 5, temperature: 1.0, top_p: 1.0, seed: 11, eos: None },
            micro_batching: MicroBatching { rows: 6, by_positions: false },
            kl_coef: 0.001,
            gamma: 1.0,
            lambda: 1.0,
        };
        let batch = rollout(&actor.valid(), &actor.valid(), &critic.valid(), &prompts, &Chars, |i, _: &str| i as f64, &r).unwrap().rollouts;
        let layers = actor.layers.len();
        let run = |recompute_layers: usize| {
            let settings = UpdateSettings {
                clip: 0.2,
                value_clip: 0.5,
                entropy_coef: 0.01,
                actor_mini_batch: 4,
                critic_mini_batch: 5,
                loss_average: LossAverage::MicroBatch,
                actor_loss_group: 2,
                critic_loss_group: 1,
                micro_batching: MicroBatching { rows: 2, by_positions: false },
                max_response: 5,
                pad: 0,
                grad_clip: 1.0,
                actor_lr: 1e-3,
                critic_lr: 1e-3,
                recompute_layers,
                kernels: Kernels::default(),
            };
            let (mut oa, mut oc) = (AdamWConfig::new().init::<AD, Llama<AD>>(), AdamWConfig::new().init::<AD, Critic<AD>>());
            let (a, c, stats) = update(actor.clone(), critic.clone(), &mut oa, &mut oc, &batch, &settings);
            let host = |t: Tensor<crate::Cpu, 2>| t.into_data().to_vec::<f32>().unwrap();
            (
                stats,
                host(a.layers[0].mlp.up_proj.weight.val().inner()),
                host(c.value_head.weight.val().inner()),
                host(c.body.layers[0].self_attn.q_proj.weight.val().inner()),
            )
        };
        let plain = run(0);
        assert_eq!((plain.0.actor_steps, plain.0.critic_steps), (2, 2), "6 responses in mini-batches of 4 and of 5");
        let moved = |x: &[f32]| x.iter().zip(&host_of(&actor)).any(|(a, b)| a != b);
        assert!(moved(&plain.1), "the actor stepped");
        for recomputed in [1, layers] {
            let other = run(recomputed);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1e-3);
            for (a, b) in [
                (plain.0.policy_loss, other.0.policy_loss),
                (plain.0.value_loss, other.0.value_loss),
                (plain.0.entropy, other.0.entropy),
                (plain.0.actor_grad_norm, other.0.actor_grad_norm),
                (plain.0.critic_grad_norm, other.0.critic_grad_norm),
            ] {
                assert!(close(a, b), "{recomputed} layers recomputed: {:?} vs {:?}", plain.0, other.0);
            }
            for (x, y) in [(&plain.1, &other.1), (&plain.2, &other.2), (&plain.3, &other.3)] {
                let gap = x.iter().zip(y).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(gap < 1e-6, "{recomputed} layers recomputed: parameters differ by {gap}");
            }
        }
    }

    fn host_of(actor: &Llama<AD>) -> Vec<f32> {
        actor.layers[0].mlp.up_proj.weight.val().inner().into_data().to_vec::<f32>().unwrap()
    }
}
