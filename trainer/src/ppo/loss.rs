//! The PPO losses over response tokens: the clipped policy loss, the clipped value loss and
//! the entropy of the policy, each per token (the update weighs and sums them) or as a
//! masked mean (`mask` = 1 on tokens that count); with which tokens were clipped, for the
//! metrics.

use burn::prelude::*;

use crate::ops::cross_entropy::{CrossEntropy, token_cross_entropy};
use crate::ops::entropy::{Entropy, row_entropy};

/// Mean of `x` over the tokens where `mask` is 1.
pub fn masked_mean<B: Backend, const D: usize>(x: Tensor<B, D>, mask: Tensor<B, D>) -> Tensor<B, 1> {
    (x * mask.clone()).sum() / mask.sum().clamp_min(1.0)
}

/// Per token: `max(-A r, -A clip(r, 1 - eps, 1 + eps))` with `r = exp(logp - old_logp)`,
/// and 1 where the clipped term was the larger (0 elsewhere).
pub fn policy_loss_tokens<B: Backend>(logp: Tensor<B, 2>, old_logp: Tensor<B, 2>, advantages: Tensor<B, 2>, clip: f64) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let ratio = (logp - old_logp).exp();
    let unclipped = advantages.clone().neg() * ratio.clone();
    let clipped = advantages.neg() * ratio.clamp(1.0 - clip, 1.0 + clip);
    pessimistic(unclipped, clipped)
}

/// [`policy_loss_tokens`] as masked means: the loss and the clipped fraction.
pub fn policy_loss<B: Backend>(
    logp: Tensor<B, 2>,
    old_logp: Tensor<B, 2>,
    advantages: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    clip: f64,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let (loss, clipped) = policy_loss_tokens(logp, old_logp, advantages, clip);
    (masked_mean(loss, mask.clone()), masked_mean(clipped, mask))
}

/// PPO's pessimistic choice: per token the larger of the plain and the clipped loss, and 1
/// where the clipped one was larger.
fn pessimistic<B: Backend>(plain: Tensor<B, 2>, clipped: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let was_clipped = clipped.clone().greater(plain.clone()).float();
    (plain.max_pair(clipped), was_clipped)
}

/// Per token: `0.5 max((v - R)^2, (v_clipped - R)^2)` with `v_clipped = old_v + clip(v -
/// old_v, -c, c)`, and 1 where the clipped term was the larger.
pub fn value_loss_tokens<B: Backend>(values: Tensor<B, 2>, old_values: Tensor<B, 2>, returns: Tensor<B, 2>, clip: f64) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let clipped_values = old_values.clone() + (values.clone() - old_values).clamp(-clip, clip);
    let plain = (values - returns.clone()).powi_scalar(2);
    let clipped = (clipped_values - returns).powi_scalar(2);
    let (loss, was_clipped) = pessimistic(plain, clipped);
    (loss.mul_scalar(0.5), was_clipped)
}

/// [`value_loss_tokens`] as masked means: the loss and the clipped fraction.
pub fn value_loss<B: Backend>(
    values: Tensor<B, 2>,
    old_values: Tensor<B, 2>,
    returns: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    clip: f64,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let (loss, clipped) = value_loss_tokens(values, old_values, returns, clip);
    (masked_mean(loss, mask.clone()), masked_mean(clipped, mask))
}

/// The entropy of each next-token distribution (`logits` `[batch, seq, vocab]`): `[batch,
/// seq]`; `fused` (`kernels.fused_entropy`) takes the backend's entropy op where it has one.
pub fn entropy_tokens<B: Entropy>(logits: Tensor<B, 3>, fused: bool) -> Tensor<B, 2> {
    let [b, t, vocab] = logits.dims();
    row_entropy(logits.reshape([b * t, vocab]), fused).reshape([b, t])
}

/// Mean entropy of the policy's next-token distributions over the masked tokens.
pub fn entropy<B: Entropy>(logits: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    masked_mean(entropy_tokens(logits, false), mask)
}

/// Log-probabilities of the chosen tokens: `logits` `[batch, seq, vocab]`, `tokens` `[batch, seq]`
/// (the backend's cross-entropy op, negated).
pub fn token_logp<B: CrossEntropy>(logits: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [b, t, vocab] = logits.dims();
    token_cross_entropy(logits.reshape([b * t, vocab]), tokens.reshape([b * t])).reshape([b, t]).neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::optim::{GradientsParams, Optimizer, SgdConfig};
    use burn::tensor::activation::softmax;

    type B = crate::Cpu;
    type AD = crate::CpuAutodiff;

    fn t2(v: &[f32]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &Default::default())
    }

    #[test]
    fn hand_computed_policy_and_value_losses() {
        // Ratios e^0 = 1, e^0.5 = 1.6487, e^-0.5 = 0.6065; advantages 1, 1, -1; clip 0.2.
        // Token 0: max(-1, -1) = -1. Token 1: max(-1.6487, -1.2) = -1.2 (clipped).
        // Token 2: max(0.6065, 0.8) = 0.8 (clipped). Mean = (-1 - 1.2 + 0.8) / 3 = -0.4667.
        let (loss, frac) = policy_loss(t2(&[0.0, 0.5, -0.5]), t2(&[0.0, 0.0, 0.0]), t2(&[1.0, 1.0, -1.0]), t2(&[1.0, 1.0, 1.0]), 0.2);
        assert!((loss.into_scalar() - (-1.4 / 3.0)).abs() < 1e-5);
        assert!((frac.into_scalar() - 2.0 / 3.0).abs() < 1e-6);
        // A masked-out token does not count.
        let (loss, _) = policy_loss(t2(&[0.0, 0.5, -0.5]), t2(&[0.0, 0.0, 0.0]), t2(&[1.0, 1.0, -1.0]), t2(&[1.0, 1.0, 0.0]), 0.2);
        assert!((loss.into_scalar() - (-1.1)).abs() < 1e-5);
        // Values 1.0 and 0.0 against old 0.0 and returns 0.0 and 1.0, clip 0.5:
        // token 0: plain 1, clipped (0.5 - 0)^2 = 0.25 -> 1; token 1: plain 1, clipped 1 -> 1.
        // token 2: v 0.9, old 0.2, R 1.0: plain 0.01, clipped (0.7 - 1)^2 = 0.09 -> 0.09 (clipped).
        let (loss, frac) = value_loss(t2(&[1.0, 0.0, 0.9]), t2(&[0.0, 0.0, 0.2]), t2(&[0.0, 1.0, 1.0]), t2(&[1.0, 1.0, 1.0]), 0.5);
        assert!((loss.into_scalar() - 0.5 * (1.0 + 1.0 + 0.09) / 3.0).abs() < 1e-5);
        assert!((frac.into_scalar() - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn entropy_of_uniform_and_certain_distributions() {
        let device = Default::default();
        let logits = Tensor::<B, 3>::from_data(TensorData::new(vec![0.0f32, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0, 0.0], [1, 2, 4]), &device);
        let e = entropy(logits.clone(), t2(&[1.0, 0.0])).into_scalar();
        assert!((e - 4f32.ln()).abs() < 1e-5, "uniform over 4: ln 4, got {e}");
        let e = entropy(logits, t2(&[0.0, 1.0])).into_scalar();
        assert!(e.abs() < 1e-5);
    }

    #[test]
    fn a_ppo_step_moves_a_toy_policy_toward_reward() {
        // A one-step bandit over 4 actions; action 2 pays 1, the others 0.
        let device = Default::default();
        let mut policy = Param::from_tensor(Tensor::<AD, 2>::zeros([1, 4], &device).require_grad());
        let mut optim = SgdConfig::new().init::<AD, Param<Tensor<AD, 2>>>();
        let mut rng = fastrand::Rng::with_seed(3);
        let prob_of_2 = |p: &Param<Tensor<AD, 2>>| softmax(p.val().inner(), 1).into_data().to_vec::<f32>().unwrap()[2];
        let before = prob_of_2(&policy);
        for _ in 0..20 {
            let probs = softmax(policy.val().inner(), 1).into_data().to_vec::<f32>().unwrap();
            let actions: Vec<i64> = (0..16)
                .map(|_| {
                    let mut u = rng.f32();
                    probs
                        .iter()
                        .position(|&p| {
                            u -= p;
                            u < 0.0
                        })
                        .unwrap_or(3) as i64
                })
                .collect();
            let rewards: Vec<f64> = actions.iter().map(|&a| if a == 2 { 1.0 } else { 0.0 }).collect();
            let mut adv = vec![rewards.clone()];
            crate::ppo::gae::whiten(&mut adv);
            let adv: Vec<f32> = adv[0].iter().map(|&x| x as f32).collect();
            let logits = policy.val().unsqueeze_dim::<3>(1).repeat_dim(1, 16);
            let tokens = Tensor::<AD, 2, Int>::from_data(TensorData::new(actions, [1, 16]), &device);
            let logp = token_logp(logits, tokens);
            let old = logp.clone().detach();
            let adv = Tensor::<AD, 2>::from_data(TensorData::new(adv, [1, 16]), &device);
            let (loss, _) = policy_loss(logp, old, adv, Tensor::ones([1, 16], &device), 0.2);
            let grads = GradientsParams::from_grads(loss.backward(), &policy);
            policy = optim.step(0.5, policy, grads);
        }
        let after = prob_of_2(&policy);
        assert!(after > before + 0.3, "P(rewarded action) {before} -> {after}");
    }
}
