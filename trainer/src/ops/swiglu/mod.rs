//! The MLP's gate, `silu(gate) ⊙ up`, as one backend op with its own backward pass.
//!
//! burn composes it from a sigmoid, two products (silu is `g · σ(g)`) and autodiff's
//! backward of each, a kernel apiece that the host issues (the limit of a decoder layer on
//! CUDA, docs/PERF.md). As one op the backward pass is
//!
//! ```text
//! dgate = dh ⊙ up ⊙ σ(g) · (1 + g · (1 − σ(g)))        dup = dh ⊙ silu(g)
//! ```
//!
//! keeping only `gate` and `up`. On CUDA without fusion each way is one kernel
//! (`kernel`, f32 arithmetic in any float dtype); elsewhere burn's ops in the
//! inputs' dtype.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorMetadata, TensorPrimitive};

/// A backend that gates the MLP, with gradients where it has them.
pub trait Swiglu: Backend {
    /// `silu(gate) ⊙ up` for two tensors of one shape and dtype.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_swiglu::<Self>(gate, up)
    }

    /// `silu(gate) ⊙ up` of `rows` `[..., 2n]` holding the gate in its first `n` columns and
    /// `up` in the rest (one product of both weights gives them so; generation's MLP):
    /// `[..., n]`. Without gradients.
    fn swiglu_halves(rows: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_swiglu_halves::<Self>(rows)
    }

    /// The gradients of `gate` and `up` from the output's gradient `dh`.
    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, dh: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_swiglu_backward::<Self>(gate, up, dh)
    }
}

fn float<B: Backend>(raw: FloatTensor<B>) -> Tensor<B, 1> {
    let n = raw.shape().num_elements();
    Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::float_reshape(raw, [n].into())))
}

fn shaped_as<B: Backend>(flat: Tensor<B, 1>, like: &FloatTensor<B>) -> FloatTensor<B> {
    B::float_reshape(flat.into_primitive().tensor(), like.shape())
}

/// [`Swiglu::swiglu`] from burn's ops.
pub(crate) fn composed_swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    let shape = gate.shape();
    let h = silu(float::<B>(gate)) * float::<B>(up);
    B::float_reshape(h.into_primitive().tensor(), shape)
}

/// [`Swiglu::swiglu_halves`] from the halves' views and [`Swiglu::swiglu`].
pub(crate) fn composed_swiglu_halves<B: Swiglu>(rows: FloatTensor<B>) -> FloatTensor<B> {
    let shape = rows.shape();
    let last = shape.num_dims() - 1;
    let n = shape[last] / 2;
    let flat = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::float_reshape(rows, [shape.num_elements() / shape[last], 2 * n].into())));
    let half = |start: usize| flat.clone().narrow(1, start, n).into_primitive().tensor();
    let mut out = shape.clone();
    out[last] = n;
    B::float_reshape(B::swiglu(half(0), half(n)), out)
}

/// [`Swiglu::swiglu_halves`] on tensors.
pub fn swiglu_halves<B: Swiglu, const D: usize>(rows: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::swiglu_halves(rows.into_primitive().tensor())))
}

/// [`Swiglu::swiglu_backward`] from burn's ops.
pub(crate) fn composed_swiglu_backward<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>, dh: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let (g, u, d) = (float::<B>(gate.clone()), float::<B>(up.clone()), float::<B>(dh));
    let s = sigmoid(g.clone());
    let dgate = d.clone() * u * s.clone() * ((s.clone().neg() + 1.0) * g.clone() + 1.0);
    let dup = d * g * s;
    (shaped_as::<B>(dgate, &gate), shaped_as::<B>(dup, &up))
}

/// [`Swiglu::swiglu`] on tensors.
pub fn swiglu<B: Swiglu, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::swiglu(gate.into_primitive().tensor(), up.into_primitive().tensor())))
}

impl Swiglu for crate::Cpu {}
#[cfg(feature = "cuda")]
impl Swiglu for crate::CudaFused {}

/// The backward step: the state is `gate` and `up`.
#[derive(Debug)]
struct SwigluBackward;

impl<B: Swiglu> Backward<B, 2> for SwigluBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dh = grads.consume::<B>(&ops.node);
        let (gate, up) = ops.state;
        let (dgate, dup) = B::swiglu_backward(gate, up, dh);
        let [gate_node, up_node] = ops.parents;
        if let Some(node) = gate_node {
            grads.register::<B>(node.id, dgate);
        }
        if let Some(node) = up_node {
            grads.register::<B>(node.id, dup);
        }
    }
}

impl<B: Swiglu, C: CheckpointStrategy> Swiglu for Autodiff<B, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward.prepare::<C>([gate.node.clone(), up.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let h = B::swiglu(gate.primitive.clone(), up.primitive.clone());
                prep.finish((gate.primitive, up.primitive), h)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(gate.primitive, up.primitive)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::{Cpu, CpuAutodiff};

    fn max_gap(a: Tensor<Cpu, 3>, b: Tensor<Cpu, 3>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// The op's output and the gradients of gate and up equal burn's `silu(gate) * up`
    /// differentiated by burn, on a loss that weighs every output differently.
    #[test]
    fn values_and_gradients_equal_burns_ops() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 5);
        let random = || Tensor::<CpuAutodiff, 3>::random([2, 3, 7], Distribution::Normal(0.0, 3.0), &device);
        let (gate, up, weights) = (random().require_grad(), random().require_grad(), random());
        let run = |ours: bool| {
            let h = if ours { swiglu(gate.clone(), up.clone()) } else { silu(gate.clone()) * up.clone() };
            let grads = (h.clone() * weights.clone()).sum().backward();
            (h.inner(), gate.grad(&grads).expect("a gradient of gate"), up.grad(&grads).expect("a gradient of up"))
        };
        let (ours, theirs) = (run(true), run(false));
        assert!(max_gap(ours.0, theirs.0) < 1e-5, "values");
        assert!(max_gap(ours.1, theirs.1) < 1e-5, "dgate");
        assert!(max_gap(ours.2, theirs.2) < 1e-5, "dup");
    }
}
