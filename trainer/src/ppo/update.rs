//! One PPO update over a rollout batch: mini-batches of responses, each run as packed
//! micro-batches of `micro_batch` rows whose gradients accumulate, weighted so that every
//! mini-batch loss is a mean over its tokens; the actor minimises the clipped policy loss
//! minus the entropy bonus, the critic the clipped value loss; global gradient-norm clipping
//! and one optimizer step per mini-batch for each model.

use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::batch::Packed;
use super::critic::Critic;
use super::loss::{entropy, policy_loss, token_logp, value_loss};
use super::rollout::Rollout;
use crate::model::Llama;
use crate::train::clip::clip_global_norm;

/// The PPO update's settings (the study's: clip 0.2, value clip 0.5, entropy 0.001,
/// gradient clip 1.0, actor lr 1e-6, critic lr 1e-5).
#[derive(Clone, Debug)]
pub struct UpdateSettings {
    pub clip: f64,
    pub value_clip: f64,
    pub entropy_coef: f64,
    pub mini_batch: usize,
    /// Rows per forward/backward pass (gradients accumulate over a mini-batch).
    pub micro_batch: usize,
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

/// Runs one epoch of mini-batch updates over `rollouts`.
pub fn update<B: AutodiffBackend, OA: Optimizer<Llama<B>, B>, OC: Optimizer<Critic<B>, B>>(
    mut actor: Llama<B>,
    mut critic: Critic<B>,
    actor_optim: &mut OA,
    critic_optim: &mut OC,
    rollouts: &[Rollout],
    s: &UpdateSettings,
) -> (Llama<B>, Critic<B>, UpdateStats) {
    let device = actor.embed_tokens.weight.val().device();
    let mut stats = UpdateStats::default();
    let all_tokens: usize = rollouts.iter().map(|r| r.response.len()).sum();
    let steps = rollouts.chunks(s.mini_batch.max(1)).count() as f64;
    for mini in rollouts.chunks(s.mini_batch.max(1)) {
        let tokens: usize = mini.iter().map(|r| r.response.len()).sum();
        let (mut actor_grads, mut critic_grads) = (GradientsAccumulator::<Llama<B>>::new(), GradientsAccumulator::<Critic<B>>::new());
        for micro in mini.chunks(s.micro_batch.max(1)) {
            let rows: Vec<(&[u32], &[u32])> = micro.iter().map(|r| (r.prompt.as_slice(), r.response.as_slice())).collect();
            let packed = Packed::<B>::new(&rows, s.pad, &device);
            let weight = packed.tokens() as f64 / tokens as f64;
            let mask = packed.mask();
            let logits = actor.forward_range(packed.ids.clone(), packed.start, packed.len);
            let logp = token_logp(logits.clone(), packed.targets());
            let (pl, cf) = policy_loss(logp, packed.spread(|i| &micro[i].old_logp), packed.spread(|i| &micro[i].advantages), mask.clone(), s.clip);
            let ent = entropy(logits, mask.clone());
            let actor_loss = (pl.clone() - ent.clone().mul_scalar(s.entropy_coef)).mul_scalar(weight);
            let values = critic.values(packed.ids.clone()).narrow(1, packed.start, packed.len);
            let (vl, vcf) = value_loss(values, packed.spread(|i| &micro[i].values), packed.spread(|i| &micro[i].returns), mask, s.value_clip);
            let critic_loss = vl.clone().mul_scalar(weight);
            let share = packed.tokens() as f64 / all_tokens as f64;
            stats.policy_loss += pl.into_scalar().elem::<f64>() * share;
            stats.value_loss += vl.into_scalar().elem::<f64>() * share;
            stats.entropy += ent.into_scalar().elem::<f64>() * share;
            stats.clip_fraction += cf.into_scalar().elem::<f64>() * share;
            stats.value_clip_fraction += vcf.into_scalar().elem::<f64>() * share;
            actor_grads.accumulate(&actor, GradientsParams::from_grads(actor_loss.backward(), &actor));
            critic_grads.accumulate(&critic, GradientsParams::from_grads(critic_loss.backward(), &critic));
        }
        let (mut ga, mut gc) = (actor_grads.grads(), critic_grads.grads());
        stats.actor_grad_norm += clip_global_norm(&actor, &mut ga, s.grad_clip) / steps;
        stats.critic_grad_norm += clip_global_norm(&critic, &mut gc, s.grad_clip) / steps;
        actor = actor_optim.step(s.actor_lr, actor, ga);
        critic = critic_optim.step(s.critic_lr, critic, gc);
    }
    (actor, critic, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            mini_batch: 8,
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
            let batch = rollout(&actor.valid(), &reference, &critic.valid(), &prompts, &Chars, score, &r).unwrap();
            means.push(batch.iter().map(|x| x.score).sum::<f64>() / batch.len() as f64);
            let (a, c, stats) = update(actor, critic, &mut oa, &mut oc, &batch, &settings);
            (actor, critic) = (a, c);
            assert!(stats.policy_loss.is_finite() && stats.value_loss.is_finite() && stats.entropy > 0.0, "{stats:?}");
        }
        eprintln!("mean reward per PPO iteration: {means:.3?}");
        let (first, last) = (means[..3].iter().sum::<f64>() / 3.0, means[13..].iter().sum::<f64>() / 3.0);
        assert!(last > first + 0.15, "mean reward per iteration: {means:?}");
    }
}
