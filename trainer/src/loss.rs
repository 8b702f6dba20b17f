//! The causal language-model loss: token `t` predicts label `t + 1`; labels of `-100`
//! (prompt tokens in SFT, padding) are ignored; the mean is over the counted tokens, as
//! Hugging Face computes it.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// The label that is not predicted.
pub const IGNORE: i64 = -100;

/// Mean cross-entropy of `logits` `[batch, seq, vocab]` against `labels` `[batch, seq]`
/// (shifted by one inside), as a one-element tensor.
pub fn causal_lm_loss<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [_, t, _] = logits.dims();
    let logits = logits.narrow(1, 0, t - 1);
    let targets = labels.narrow(1, 1, t - 1);
    let counted = targets.clone().greater_equal_elem(0).float();
    let picked = log_softmax(logits, 2).gather(2, targets.clamp_min(0).unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
    let total = (picked * counted.clone()).sum().neg();
    total / counted.sum().clamp_min(1.0)
}
