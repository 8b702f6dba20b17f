//! The language-model loss's cross-entropy as a backend op with its own backward pass.
//!
//! Composed from burn's ops, the loss of 2,047 positions over a 128k vocabulary casts the
//! logits to f32 (1 GB), takes their log-softmax (a max, a shift, an exponential, a sum, a
//! log: five more passes), gathers the targets, and differentiates every one of those ops
//! again in the backward pass. As one op, the forward reads each row of logits once, in
//! their dtype, and keeps only the row's log-sum-exp; the backward writes the logits'
//! gradient in one pass:
//!
//! ```text
//! loss[r] = lse[r] − logits[r, target[r]]        lse[r] = log Σ_j exp(logits[r, j])
//! dlogits[r, j] = (exp(logits[r, j] − lse[r]) − [j = target[r]]) · dloss[r]
//! ```
//!
//! A backend opts in with `OWN_LOSS` (CUDA without fusion: one kernel each way,
//! `kernel`); the others keep burn's `log_softmax` and `gather`,
//! differentiated by burn, exactly as before.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, TensorPrimitive};

/// A backend that computes the rows' cross-entropy, with gradients where it has them.
pub trait CrossEntropy: Backend {
    /// Whether the backend has its own op, which `token_cross_entropy` then uses; otherwise
    /// it keeps burn's ops.
    const OWN_LOSS: bool = false;

    /// For `logits` `[rows, vocab]` (any float dtype) and `targets` `[rows]` (each in
    /// `0..vocab`): each row's `−log softmax(logits)[target]` and its log-sum-exp, both f32
    /// `[rows]`. Without gradients.
    fn cross_entropy_rows(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_cross_entropy_rows::<Self>(logits, targets)
    }

    /// The logits' gradient, in their dtype, from the rows' log-sum-exp `lse` and the
    /// gradient of their losses `dloss` (both f32 `[rows]`).
    fn cross_entropy_backward(logits: FloatTensor<Self>, targets: IntTensor<Self>, lse: FloatTensor<Self>, dloss: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_cross_entropy_backward::<Self>(logits, targets, lse, dloss)
    }

    /// Each row's loss (f32 `[rows]`), with gradients where the backend has them.
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        Self::cross_entropy_rows(logits, targets).0
    }
}

/// Each row's cross-entropy `−log softmax(logits)[target]`, f32 `[rows]`, for `logits`
/// `[rows, vocab]` and `targets` `[rows]` in `0..vocab`: the backend's op when it has one,
/// burn's `log_softmax` (in f32) and `gather` otherwise.
pub fn token_cross_entropy<B: CrossEntropy>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    if B::OWN_LOSS {
        cross_entropy_op(logits, targets)
    } else {
        log_softmax(logits.cast(FloatDType::F32), 1).gather(1, targets.unsqueeze_dim::<2>(1)).squeeze_dim::<1>(1).neg()
    }
}

/// [`CrossEntropy::cross_entropy`] on tensors, whatever `OWN_LOSS` says.
fn cross_entropy_op<B: CrossEntropy>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(B::cross_entropy(logits.into_primitive().tensor(), targets.into_primitive())))
}

/// A raw float tensor as a tensor of rank `D`.
pub(crate) fn float<B: Backend, const D: usize>(raw: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(raw))
}

/// [`CrossEntropy::cross_entropy_rows`] from burn's ops.
pub(crate) fn composed_cross_entropy_rows<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 2>(logits).cast(FloatDType::F32);
    let max = x.clone().max_dim(1);
    let lse = (x.clone() - max.clone()).exp().sum_dim(1).log() + max;
    let picked = x.gather(1, Tensor::<B, 1, Int>::from_primitive(targets).unsqueeze_dim::<2>(1));
    let raw = |t: Tensor<B, 2>| t.squeeze_dim::<1>(1).into_primitive().tensor();
    (raw(lse.clone() - picked), raw(lse))
}

/// [`CrossEntropy::cross_entropy_backward`] from burn's ops.
pub(crate) fn composed_cross_entropy_backward<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    dloss: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = float::<B, 2>(logits);
    let dtype: FloatDType = logits.dtype().into();
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let p = (logits.cast(FloatDType::F32) - float::<B, 1>(lse).unsqueeze_dim::<2>(1)).exp();
    let columns = Tensor::<B, 1, Int>::arange(0..vocab as i64, &device).unsqueeze_dim::<2>(0).expand([rows, vocab]);
    let targets = Tensor::<B, 1, Int>::from_primitive(targets).unsqueeze_dim::<2>(1).expand([rows, vocab]);
    let onehot = columns.equal(targets).float();
    ((p - onehot) * float::<B, 1>(dloss).unsqueeze_dim::<2>(1)).cast(dtype).into_primitive().tensor()
}

impl CrossEntropy for crate::Cpu {}
#[cfg(feature = "cuda")]
impl CrossEntropy for crate::CudaFused {}

/// The backward step: the state is the logits, the targets and the rows' log-sum-exp.
#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: CrossEntropy> Backward<B, 1> for CrossEntropyBackward {
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dloss = grads.consume::<B>(&ops.node);
        let (logits, targets, lse) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::cross_entropy_backward(logits, targets, lse, dloss));
        }
    }
}

impl<B: CrossEntropy, C: CheckpointStrategy> CrossEntropy for Autodiff<B, C> {
    const OWN_LOSS: bool = B::OWN_LOSS;

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        match CrossEntropyBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (losses, lse) = B::cross_entropy_rows(logits.primitive.clone(), targets.clone());
                prep.finish((logits.primitive, targets, lse), losses)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cross_entropy_rows(logits.primitive, targets).0),
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

    /// The op's losses and the logits' gradient equal burn's `log_softmax` and `gather`
    /// differentiated by burn, on a loss that weighs every row differently, with logits
    /// large enough that an unshifted exponential would overflow.
    #[test]
    fn values_and_gradients_equal_burns_log_softmax() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 3);
        let logits = Tensor::<CpuAutodiff, 2>::random([5, 11], Distribution::Normal(0.0, 30.0), &device).require_grad();
        let targets = Tensor::<CpuAutodiff, 1, Int>::from_data(TensorData::new(vec![0i64, 10, 3, 3, 7], [5]), &device);
        let weights = Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0, 0.0, 1.5], [5]), &device);
        let run = |ours: bool| {
            let losses = if ours { cross_entropy_op(logits.clone(), targets.clone()) } else { token_cross_entropy(logits.clone(), targets.clone()) };
            let grads = (losses.clone() * weights.clone()).sum().backward();
            (losses.inner(), logits.grad(&grads).expect("a gradient of the logits"))
        };
        const { assert!(!Cpu::OWN_LOSS, "the CPU keeps burn's ops, so the second run is the reference") };
        let (ours, theirs) = (run(true), run(false));
        assert!(ours.0.clone().greater_equal_elem(0.0).all().into_scalar(), "a cross-entropy is never negative");
        assert!(max_gap(ours.0, theirs.0) < 1e-4, "losses");
        assert!(max_gap(ours.1, theirs.1) < 1e-5, "gradients");
    }

    /// The rows' log-sum-exp is the log of the sum of exponentials.
    #[test]
    fn the_kept_log_sum_exp_is_right() {
        let device = Default::default();
        let logits = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.0f32, 0.0, 1.0, 2.0, 3.0, 4.0], [2, 3]), &device);
        let targets = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &device);
        let (losses, lse) = Cpu::cross_entropy_rows(logits.into_primitive().tensor(), targets.into_primitive());
        let (losses, lse) = (float::<Cpu, 1>(losses).into_data().to_vec::<f32>().unwrap(), float::<Cpu, 1>(lse).into_data().to_vec::<f32>().unwrap());
        let expected_lse = [(2.0 + 1f32.exp()).ln(), (2f32.exp() + 3f32.exp() + 4f32.exp()).ln()];
        for (got, want) in lse.iter().zip(expected_lse) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!((losses[0] - (expected_lse[0] - 1.0)).abs() < 1e-6);
        assert!((losses[1] - (expected_lse[1] - 2.0)).abs() < 1e-6);
    }
}
