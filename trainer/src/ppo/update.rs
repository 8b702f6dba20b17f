//! One PPO update over a rollout batch, as veRL runs it: the actor steps once per actor
//! mini-batch and the critic once per critic mini-batch (their sizes differ: veRL
//! multiplies the actor's by the samples per prompt, not the critic's); the batch runs as
//! packed micro-batches of `micro_batch` rows whose gradients accumulate (a memory knob).
//! Each model's mini-batch loss is veRL's (the mean, over the mini-batch's groups of
//! `actor_loss_group` / `critic_loss_group` responses, of each group's token mean: veRL's
//! micro-batches) or a mean over all its tokens; either way it is a per-token weight, so
//! the memory micro-batch does not change what a step computes. The actor minimises
//! the clipped policy loss minus the entropy bonus, the critic the clipped value loss;
//! global gradient-norm clipping before every step.

use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use serde::Serialize;

use super::batch::Packed;
use super::critic::Critic;
use super::loss::{entropy, policy_loss, token_logp, value_loss};
use super::rollout::Rollout;
use crate::TrainBackend;
use crate::model::Llama;
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
    /// Rows per forward/backward pass (gradients accumulate over a mini-batch).
    pub micro_batch: usize,
    pub loss_average: LossAverage,
    /// Responses per veRL micro-batch of the actor and of the critic (`MicroBatch` averaging).
    pub actor_loss_group: usize,
    pub critic_loss_group: usize,
    /// Token id that pads packed rows.
    pub pad: u32,
    pub grad_clip: f64,
    pub actor_lr: f64,
    pub critic_lr: f64,
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
}

/// A stretch of the batch that ends where the actor or the critic (or both) step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stretch {
    pub end: usize,
    pub actor_steps: bool,
    pub critic_steps: bool,
}

/// The stretches of a batch of `n` responses: cut at every multiple of the actor's and the
/// critic's mini-batch and at the end, each saying which model steps there.
pub fn stretches(n: usize, actor_mini: usize, critic_mini: usize) -> Vec<Stretch> {
    let (a, c) = (actor_mini.max(1), critic_mini.max(1));
    let mut out = Vec::new();
    let mut at = 0;
    while at < n {
        let end = (at / a + 1).saturating_mul(a).min((at / c + 1).saturating_mul(c)).min(n);
        out.push(Stretch { end, actor_steps: end % a == 0 || end == n, critic_steps: end % c == 0 || end == n });
        at = end;
    }
    out
}

/// Runs one epoch of mini-batch updates over `rollouts`.
pub fn update<B: TrainBackend, OA: Optimizer<Llama<B>, B>, OC: Optimizer<Critic<B>, B>>(
    mut actor: Llama<B>,
    mut critic: Critic<B>,
    actor_optim: &mut OA,
    critic_optim: &mut OC,
    rollouts: &[Rollout],
    s: &UpdateSettings,
) -> (Llama<B>, Critic<B>, UpdateStats) {
    let device = actor.embed_tokens.weight.val().device();
    let mut stats = UpdateStats::default();
    // Token-weighted sums of policy loss, value loss, entropy, clip and value-clip fractions.
    let mut sums: Option<Tensor<B::InnerBackend, 1>> = None;
    let all_tokens: usize = rollouts.iter().map(|r| r.response.len()).sum();
    let (a, c) = (s.actor_mini_batch.max(1), s.critic_mini_batch.max(1));
    let plan = stretches(rollouts.len(), a, c);
    let (actor_steps, critic_steps) = (plan.iter().filter(|x| x.actor_steps).count() as f64, plan.iter().filter(|x| x.critic_steps).count() as f64);
    // Per-token weights, one per response for each model: a micro-batch's loss is its
    // weighted mean (the weights as the mask) times its share of the mini-batch's weight.
    let lengths: Vec<usize> = rollouts.iter().map(|r| r.response.len()).collect();
    let actor_w = loss_weights(&lengths, a, s.actor_loss_group, s.loss_average);
    let critic_w = loss_weights(&lengths, c, s.critic_loss_group, s.loss_average);
    let micro = s.micro_batch.max(1);
    let (mut actor_grads, mut critic_grads) = (GradientsAccumulator::<Llama<B>>::new(), GradientsAccumulator::<Critic<B>>::new());
    let mut start = 0;
    for stretch in plan {
        for (k, micro) in rollouts[start..stretch.end].chunks(micro).enumerate() {
            let first = start + k * s.micro_batch.max(1);
            let rows: Vec<(&[u32], &[u32])> = micro.iter().map(|r| (r.prompt.as_slice(), r.response.as_slice())).collect();
            let packed = Packed::<B>::new(&rows, s.pad, &device);
            // The mask of a weighted mean (scaled to the micro-batch's token count, which the
            // mean divides out) and the micro-batch's share of its mini-batch's weight.
            let per_token = |w: &[f64]| -> (Vec<Vec<f64>>, f64) {
                let share: f64 = micro.iter().enumerate().map(|(i, r)| w[first + i] * r.response.len() as f64).sum();
                let scale = packed.tokens() as f64 / share.max(f64::MIN_POSITIVE);
                let rows = micro.iter().enumerate().map(|(i, r)| vec![w[first + i] * scale; r.response.len()]).collect();
                (rows, share)
            };
            let ((aw, actor_share), (cw, critic_share)) = (per_token(&actor_w), per_token(&critic_w));
            let (actor_mask, critic_mask) = (packed.spread(|i| &aw[i]), packed.spread(|i| &cw[i]));
            let logits = actor.forward_range(packed.ids.clone(), packed.start, packed.len);
            let logp = token_logp(logits.clone(), packed.targets());
            let (pl, cf) = policy_loss(logp, packed.spread(|i| &micro[i].old_logp), packed.spread(|i| &micro[i].advantages), actor_mask.clone(), s.clip);
            let ent = entropy(logits, actor_mask);
            let actor_loss = (pl.clone() - ent.clone().mul_scalar(s.entropy_coef)).mul_scalar(actor_share);
            let values = critic.values(packed.ids.clone()).narrow(1, packed.start, packed.len);
            let (vl, vcf) = value_loss(values, packed.spread(|i| &micro[i].values), packed.spread(|i| &micro[i].returns), critic_mask, s.value_clip);
            let critic_loss = vl.clone().mul_scalar(critic_share);
            // The statistics stay on the device until the update ends: reading each one here
            // would wait for the GPU five times per micro-batch.
            let share = packed.tokens() as f64 / all_tokens as f64;
            let micro_stats = Tensor::cat(vec![pl.clone().inner(), vl.clone().inner(), ent.clone().inner(), cf.inner(), vcf.inner()], 0).mul_scalar(share);
            sums = Some(match sums {
                Some(acc) => acc + micro_stats,
                None => micro_stats,
            });
            actor_grads.accumulate(&actor, GradientsParams::from_grads(actor_loss.backward(), &actor));
            critic_grads.accumulate(&critic, GradientsParams::from_grads(critic_loss.backward(), &critic));
        }
        let kernels = actor.kernels();
        if stretch.actor_steps {
            let mut grads = actor_grads.grads();
            stats.actor_grad_norm += clip_global_norm(&actor, &mut grads, s.grad_clip, kernels) / actor_steps;
            actor = actor_optim.step(s.actor_lr, actor, grads);
        }
        if stretch.critic_steps {
            let mut grads = critic_grads.grads();
            stats.critic_grad_norm += clip_global_norm(&critic, &mut grads, s.grad_clip, kernels) / critic_steps;
            critic = critic_optim.step(s.critic_lr, critic, grads);
        }
        start = stretch.end;
    }
    if let Some(sums) = sums {
        let v = sums.into_data().convert::<f64>().to_vec::<f64>().expect("f64 statistics");
        (stats.policy_loss, stats.value_loss, stats.entropy, stats.clip_fraction, stats.value_clip_fraction) = (v[0], v[1], v[2], v[3], v[4]);
    }
    (actor, critic, stats)
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

    #[test]
    fn the_studys_batch_makes_two_actor_and_eight_critic_steps() {
        // 256 prompts x 4 samples; the actor's mini-batch is 128 prompts x 4, the critic's 128 responses.
        let plan = stretches(1024, 128 * 4, 128);
        assert_eq!(plan.iter().filter(|s| s.actor_steps).count(), 2);
        assert_eq!(plan.iter().filter(|s| s.critic_steps).count(), 8);
        assert_eq!(plan.last().unwrap().end, 1024);
        // Sizes that do not divide each other: every boundary of both, and the end.
        let ends: Vec<(usize, bool, bool)> = stretches(10, 4, 3).iter().map(|s| (s.end, s.actor_steps, s.critic_steps)).collect();
        assert_eq!(ends, vec![(3, false, true), (4, true, false), (6, false, true), (8, true, false), (9, false, true), (10, true, true)]);
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
            micro_batch: 3,
            pad: 0,
            grad_clip: 1.0,
            actor_lr: 3e-3,
            critic_lr: 3e-3,
        };
        let mut means = Vec::new();
        for iteration in 0..16 {
            let r = RolloutSettings {
                samples: 8,
                sampling: Sampling { max_new_tokens: 6, temperature: 1.0, top_p: 1.0, seed: iteration, eos: None },
                micro_batch: 5,
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
            micro_batch: 6,
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
        let stats_averaged = |micro_batch: usize, loss_average: LossAverage, group: usize| {
            let settings = UpdateSettings {
                clip: 0.2,
                value_clip: 0.5,
                entropy_coef: 0.001,
                actor_mini_batch: batch.len(),
                critic_mini_batch: batch.len(),
                loss_average,
                actor_loss_group: group,
                critic_loss_group: group,
                micro_batch,
                pad: 0,
                grad_clip: 1.0,
                actor_lr: 1e-3,
                critic_lr: 1e-3,
            };
            let (mut oa, mut oc) = (AdamWConfig::new().init::<AD, Llama<AD>>(), AdamWConfig::new().init::<AD, Critic<AD>>());
            update(actor.clone(), critic.clone(), &mut oa, &mut oc, &batch, &settings).2
        };
        let stats_with = |micro_batch: usize| stats_averaged(micro_batch, LossAverage::Tokens, 1);
        let (whole, split) = (stats_with(batch.len()), stats_with(1));
        let pairs = [
            (whole.policy_loss, split.policy_loss),
            (whole.value_loss, split.value_loss),
            (whole.entropy, split.entropy),
            (whole.clip_fraction, split.clip_fraction),
            (whole.value_clip_fraction, split.value_clip_fraction),
            (whole.actor_grad_norm, split.actor_grad_norm),
        ];
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(1e-3);
        for (a, b) in pairs {
            assert!(close(a, b), "{whole:?} vs {split:?}");
        }
        assert!(whole.entropy > 0.0 && whole.value_loss > 0.0, "{whole:?}");
        // veRL's averaging: one group of the whole mini-batch is the token mean; groups of one
        // response weigh responses of unequal length differently, so the gradient differs;
        // and the memory micro-batch still changes nothing.
        let lengths: std::collections::BTreeSet<usize> = batch.iter().map(|r| r.response.len()).collect();
        assert!(lengths.len() > 1, "the batch has responses of several lengths: {lengths:?}");
        let one_group = stats_averaged(1, LossAverage::MicroBatch, batch.len());
        assert!(close(one_group.actor_grad_norm, whole.actor_grad_norm), "{one_group:?} vs {whole:?}");
        let (per_response_whole, per_response_split) = (stats_averaged(batch.len(), LossAverage::MicroBatch, 1), stats_averaged(1, LossAverage::MicroBatch, 1));
        assert!(!close(per_response_whole.actor_grad_norm, whole.actor_grad_norm), "{per_response_whole:?} vs {whole:?}");
        assert!(close(per_response_whole.actor_grad_norm, per_response_split.actor_grad_norm), "{per_response_whole:?} vs {per_response_split:?}");
        assert!(close(per_response_whole.critic_grad_norm, per_response_split.critic_grad_norm), "{per_response_whole:?} vs {per_response_split:?}");
    }
}
