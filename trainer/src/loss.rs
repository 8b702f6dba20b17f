//! The causal language-model loss: token `t` predicts label `t + 1`; labels of `-100`
//! (prompt tokens in SFT, padding) are ignored; the mean is over the counted tokens, as
//! Hugging Face computes it. Each position's cross-entropy is the backend's op
//! (`cross_entropy`).
//!
//! Training computes it from the model (`lm_loss`): the LM head then runs only on the
//! positions that predict a label (all but the last) and its logits stay in the model's
//! compute dtype, so that a bf16 run never writes them out in f32.

use burn::prelude::*;

use crate::ModelBackend;
use crate::model::Llama;
use crate::ops::cross_entropy::{CrossEntropy, token_cross_entropy};

/// The label that is not predicted.
pub const IGNORE: i64 = -100;

/// Mean cross-entropy of `logits` `[batch, seq, vocab]` against `labels` `[batch, seq]`
/// (shifted by one inside), as a one-element tensor.
pub fn causal_lm_loss<B: CrossEntropy>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, vocab] = logits.dims();
    let logits = logits.narrow(1, 0, t - 1).reshape([b * (t - 1), vocab]);
    mean_over_counted(logits, predicted(labels))
}

/// [`causal_lm_loss`] of the model on `ids` `[batch, seq]`.
pub fn lm_loss<B: ModelBackend>(model: &Llama<B>, ids: Tensor<B, 2, Int>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    lm_loss_of_hidden(model, model.hidden(ids), labels)
}

/// [`causal_lm_loss`] of the model's final hidden states `[batch, seq, hidden]`
/// (`Llama::hidden`): the LM head on all positions but the last, its logits in the compute
/// dtype.
pub fn lm_loss_of_hidden<B: ModelBackend>(model: &Llama<B>, hidden: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let (logits, targets) = head_rows(model, hidden, labels);
    mean_over_counted(logits, targets)
}

/// The sum (not the mean) of the counted positions' cross-entropies of the model's final
/// hidden states: a loss over rows that adds up row chunk by row chunk
/// (`run::backward`); divided by the counted positions of the whole batch, it is
/// [`lm_loss_of_hidden`].
pub fn lm_loss_sum_of_hidden<B: ModelBackend>(model: &Llama<B>, hidden: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let (logits, targets) = head_rows(model, hidden, labels);
    let (losses, counted) = counted_losses(logits, targets);
    (losses * counted).sum()
}

/// The LM head's logits of every position but the last, one row per position (in the
/// compute dtype), and the labels they predict.
fn head_rows<B: ModelBackend>(model: &Llama<B>, hidden: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let [b, t, _] = hidden.dims();
    let logits = model.head_computed(hidden.narrow(1, 0, t - 1));
    let vocab = logits.dims()[2];
    (logits.reshape([b * (t - 1), vocab]), predicted(labels))
}

/// The labels the positions `0..seq - 1` predict (`labels[:, 1..]`), one row per position.
fn predicted<B: Backend>(labels: Tensor<B, 2, Int>) -> Tensor<B, 1, Int> {
    let [b, t] = labels.dims();
    labels.narrow(1, 1, t - 1).reshape([b * (t - 1)])
}

/// The mean cross-entropy of the rows of `logits` `[rows, vocab]` whose target is counted
/// (not negative); 0 when none is.
fn mean_over_counted<B: CrossEntropy>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let (losses, counted) = counted_losses(logits, targets);
    (losses * counted.clone()).sum() / counted.sum().clamp_min(1.0)
}

/// Each row's cross-entropy, and 1 where its target is counted (else 0).
fn counted_losses<B: CrossEntropy>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let counted = targets.clone().greater_equal_elem(0).float();
    (token_cross_entropy(logits, targets.clamp_min(0)), counted)
}

#[cfg(test)]
mod tests {
    use burn::tensor::FloatDType;

    use super::*;
    use crate::model::tests::tiny_config;
    use crate::{Cpu, CpuAutodiff};

    fn ids<B: Backend>(device: &B::Device) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(vec![1i64, 5, 9, 3, 7, 2, 8, 4, 6, 11, 13, 0], [2, 6]), device)
    }

    /// SFT labels: prompt positions ignored, the loss only over the rest.
    fn labels<B: Backend>(device: &B::Device) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(vec![IGNORE, IGNORE, 9, 3, 7, 2, IGNORE, IGNORE, IGNORE, 11, 13, 0], [2, 6]), device)
    }

    /// The model's loss equals the loss of its full logits, for LM and SFT labels, and so
    /// does its gradient; in another compute dtype too (f64 stands in for bf16 on the CPU).
    #[test]
    fn the_models_loss_equals_the_loss_of_its_logits() {
        let device = Default::default();
        let model = Llama::<CpuAutodiff>::random(&tiny_config(), &device);
        for compute in [None, Some(FloatDType::F64)] {
            let model = model.clone().with_compute(compute);
            for labels in [ids::<CpuAutodiff>(&device), labels(&device)] {
                let ours = lm_loss(&model, ids(&device), labels.clone());
                let theirs = causal_lm_loss(model.forward(ids(&device)), labels);
                let (a, b) = (ours.clone().into_scalar(), theirs.clone().into_scalar());
                assert!((a - b).abs() < 1e-5 * b.abs(), "{compute:?}: {a} vs {b}");
                let (ga, gb) = (ours.backward(), theirs.backward());
                let grad = |g| model.layers[0].mlp.down_proj.weight.grad(&g).expect("a gradient").into_data().to_vec::<f32>().unwrap();
                let (ga, gb) = (grad(ga), grad(gb));
                let scale = gb.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(ga.iter().zip(&gb).all(|(x, y)| (x - y).abs() <= 1e-4 * scale), "{compute:?}: gradients differ");
            }
        }
    }

    /// Uniform logits cost log(vocab) per counted position; ignored positions cost nothing,
    /// and a batch with none counted costs 0.
    #[test]
    fn uniform_logits_cost_log_vocab_and_ignored_positions_nothing() {
        let device = Default::default();
        let logits = Tensor::<Cpu, 3>::zeros([2, 6, 64], &device);
        let loss = causal_lm_loss(logits.clone(), labels(&device)).into_scalar();
        assert!((loss - 64f32.ln()).abs() < 1e-5, "{loss}");
        let none = Tensor::<Cpu, 2, Int>::full([2, 6], IGNORE, &device);
        assert_eq!(causal_lm_loss(logits, none).into_scalar(), 0.0);
    }

    /// Right padding after every row's last token changes no loss and no gradient (causal
    /// attention; padding carries no label): why a micro-batch may run only up to its
    /// longest row (`data::pack::positions_to_run`).
    #[test]
    fn trailing_padding_changes_nothing() {
        let device = Default::default();
        let model = Llama::<CpuAutodiff>::random(&tiny_config(), &device);
        let (pad, rows) = (0i64, [vec![1i64, 5, 9, 3, 7], vec![2, 8, 4]]);
        let batch = |len: usize| {
            let ids: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat(pad)).take(len)).collect();
            let labels: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat(IGNORE)).take(len)).collect();
            let t = |v: Vec<i64>| Tensor::<CpuAutodiff, 2, Int>::from_data(TensorData::new(v, [2, len]), &device);
            (t(ids), t(labels))
        };
        let run = |len: usize| {
            let (ids, labels) = batch(len);
            let loss = lm_loss(&model, ids, labels);
            let grads = loss.backward();
            let grad = model.layers[1].self_attn.q_proj.weight.grad(&grads).expect("a gradient").into_data().to_vec::<f32>().unwrap();
            (loss.into_scalar(), grad)
        };
        let (short, short_grad) = run(5);
        let (long, long_grad) = run(12);
        assert!((short - long).abs() < 1e-6, "{short} vs {long}");
        let scale = long_grad.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(short_grad.iter().zip(&long_grad).all(|(a, b)| (a - b).abs() <= 1e-5 * scale), "gradients differ");
    }
}
