//! The entropy of each row's softmax (the PPO actor's entropy bonus) as a backend op with
//! its own backward pass.
//!
//! Composed from burn's ops, the entropy of a position's 128k logits takes a log-softmax
//! and a softmax (each a max, a shift, an exponential, a sum), their product and its sum,
//! and differentiates every one of those ops again: some 40 passes over the logits. As one
//! op, the forward reads each row once (the online softmax, also summing `exp(d) d` for
//! the shifted logits `d = x − max`) and keeps the row's log-sum-exp and entropy; the
//! backward writes the gradient in one pass:
//!
//! ```text
//! H[r] = ln S − Σ_j e^d d / S     S = Σ_j e^d,  d = x[r, j] − max_j x[r, j]
//! dx[r, j] = −p[r, j] (x[r, j] − lse[r] + H[r]) · dH[r]     p[r, j] = exp(x[r, j] − lse[r])
//! ```
//!
//! (`H = lse − Σ p x` is the same number, but as the difference of two sums of the size
//! of the logits it loses digits that these terms, each at most 0, keep.)
//!
//! A backend opts in with `OWN_ENTROPY` (CUDA without fusion: one kernel each way,
//! `kernel`) and a run with `kernels.fused_entropy`; otherwise burn's `log_softmax` and
//! `softmax`, differentiated by burn, as before.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, TensorPrimitive};

use crate::ops::cross_entropy::float;

/// A backend that computes the rows' entropy, with gradients where it has them.
pub trait Entropy: Backend {
    /// Whether the backend has its own op, which `row_entropy` then uses when asked;
    /// otherwise it keeps burn's ops.
    const OWN_ENTROPY: bool = false;

    /// For `logits` `[rows, vocab]` (any float dtype): each row's entropy of
    /// `softmax(logits)` and its log-sum-exp, both f32 `[rows]`. Without gradients.
    fn entropy_rows(logits: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_entropy_rows::<Self>(logits)
    }

    /// The logits' gradient, in their dtype, from the rows' log-sum-exp `lse`, their
    /// entropy and its gradient `dentropy` (all f32 `[rows]`).
    fn entropy_backward(logits: FloatTensor<Self>, lse: FloatTensor<Self>, entropy: FloatTensor<Self>, dentropy: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_entropy_backward::<Self>(logits, lse, entropy, dentropy)
    }

    /// Each row's entropy (f32 `[rows]`), with gradients where the backend has them.
    fn entropy(logits: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::entropy_rows(logits).0
    }
}

/// Each row's entropy of `softmax(logits)` for `logits` `[rows, vocab]`: the backend's op
/// when it has one and `fused` (`kernels.fused_entropy`) asks for it, burn's `log_softmax`
/// and `softmax` otherwise.
pub fn row_entropy<B: Entropy>(logits: Tensor<B, 2>, fused: bool) -> Tensor<B, 1> {
    if fused && B::OWN_ENTROPY {
        entropy_op(logits)
    } else {
        let logp = log_softmax(logits.clone(), 1);
        (softmax(logits, 1) * logp).sum_dim(1).squeeze_dim::<1>(1).neg()
    }
}

/// [`Entropy::entropy`] on tensors, whatever `OWN_ENTROPY` says.
fn entropy_op<B: Entropy>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(B::entropy(logits.into_primitive().tensor())))
}

/// [`Entropy::entropy_rows`] from burn's ops.
pub(crate) fn composed_entropy_rows<B: Backend>(logits: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 2>(logits).cast(FloatDType::F32);
    let max = x.clone().max_dim(1);
    let shifted = x - max.clone();
    let exps = shifted.clone().exp();
    let (sum, weighted) = (exps.clone().sum_dim(1), (exps * shifted).sum_dim(1));
    let log_sum = sum.clone().log();
    let raw = |t: Tensor<B, 2>| t.squeeze_dim::<1>(1).into_primitive().tensor();
    (raw(log_sum.clone() - weighted / sum), raw(log_sum + max))
}

/// [`Entropy::entropy_backward`] from burn's ops.
pub(crate) fn composed_entropy_backward<B: Backend>(
    logits: FloatTensor<B>,
    lse: FloatTensor<B>,
    entropy: FloatTensor<B>,
    dentropy: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = float::<B, 2>(logits);
    let dtype: FloatDType = logits.dtype().into();
    let column = |t: FloatTensor<B>| float::<B, 1>(t).unsqueeze_dim::<2>(1);
    let logp = logits.cast(FloatDType::F32) - column(lse);
    (logp.clone().exp().neg() * (logp + column(entropy)) * column(dentropy)).cast(dtype).into_primitive().tensor()
}

impl Entropy for crate::Cpu {}
#[cfg(feature = "cuda")]
impl Entropy for crate::CudaFused {}

/// The backward step: the state is the logits and the rows' log-sum-exp and entropy.
#[derive(Debug)]
struct EntropyBackward;

impl<B: Entropy> Backward<B, 1> for EntropyBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dentropy = grads.consume::<B>(&ops.node);
        let (logits, lse, entropy) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::entropy_backward(logits, lse, entropy, dentropy));
        }
    }
}

impl<B: Entropy, C: CheckpointStrategy> Entropy for Autodiff<B, C> {
    const OWN_ENTROPY: bool = B::OWN_ENTROPY;

    fn entropy(logits: FloatTensor<Self>) -> FloatTensor<Self> {
        match EntropyBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (entropy, lse) = B::entropy_rows(logits.primitive.clone());
                prep.finish((logits.primitive, lse, entropy.clone()), entropy)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::entropy_rows(logits.primitive).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::{Cpu, CpuAutodiff};

    fn max_gap<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// The op's entropies and the logits' gradient equal burn's `log_softmax` and `softmax`
    /// differentiated by burn, on a loss that weighs every row differently, with rows both
    /// nearly uniform and sharply peaked (logits large enough that an unshifted
    /// exponential would overflow).
    #[test]
    fn values_and_gradients_equal_burns_softmaxes() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 5);
        let wide = Tensor::<CpuAutodiff, 2>::random([3, 17], Distribution::Normal(0.0, 30.0), &device);
        let flat = Tensor::<CpuAutodiff, 2>::random([2, 17], Distribution::Normal(0.0, 0.1), &device);
        let logits = Tensor::cat(vec![wide, flat], 0).require_grad();
        let weights = Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0, 0.0, 1.5], [5]), &device);
        let run = |ours: bool| {
            let entropy = if ours { entropy_op(logits.clone()) } else { row_entropy(logits.clone(), true) };
            let grads = (entropy.clone() * weights.clone()).sum().backward();
            (entropy.inner(), logits.grad(&grads).expect("a gradient of the logits"))
        };
        const { assert!(!Cpu::OWN_ENTROPY, "the CPU keeps burn's ops, so the second run is the reference") };
        let (ours, theirs) = (run(true), run(false));
        let entropies = ours.0.clone().into_data().to_vec::<f32>().unwrap();
        assert!(entropies.iter().all(|&h| (-1e-5..=17f32.ln() + 1e-5).contains(&h)), "between 0 and ln 17: {entropies:?}");
        assert!(entropies[3] > 2.8 && entropies[4] > 2.8, "nearly uniform rows: nearly ln 17 = 2.83: {entropies:?}");
        assert!(max_gap(ours.0, theirs.0) < 1e-4, "entropies");
        let gap = max_gap(ours.1.clone(), theirs.1.clone());
        assert!(gap < 1e-5, "gradients differ by {gap}: {} vs {}", ours.1, theirs.1);
    }

    /// The entropy of a uniform row is the log of its length, of a certain one 0; the
    /// kept log-sum-exp is the log of the sum of exponentials.
    #[test]
    fn uniform_and_certain_rows() {
        let device = Default::default();
        let logits = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.0f32, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0, 0.0], [2, 4]), &device);
        let (entropy, lse) = Cpu::entropy_rows(logits.into_primitive().tensor());
        let (entropy, lse) = (float::<Cpu, 1>(entropy).into_data().to_vec::<f32>().unwrap(), float::<Cpu, 1>(lse).into_data().to_vec::<f32>().unwrap());
        assert!((entropy[0] - 4f32.ln()).abs() < 1e-6 && entropy[1].abs() < 1e-5, "{entropy:?}");
        assert!((lse[0] - 4f32.ln()).abs() < 1e-6 && (lse[1] - 100.0).abs() < 1e-4, "{lse:?}");
    }
}
