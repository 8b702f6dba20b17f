//! A projection's output split into heads and rotated by RoPE, as one backend op with its
//! own backward pass.
//!
//! `[batch, seq, heads · head_dim]` (the projection's rows) goes in; the rotated heads come
//! out as `[batch, heads, seq, head_dim]`, contiguous, in the input's dtype. Composed from
//! burn's ops that is a reshape, a transpose and about six operations of RoPE forward
//! (narrow twice, negate, concatenate, two products and a sum) and as many again for
//! autodiff's backward, each a kernel the host issues (the limit of a decoder layer on CUDA,
//! docs/PERF.md). Since the tables repeat their first half in the second, the rotation's
//! transpose is the rotation by the negated angle, so the backward pass is the same op with
//! `−sin`, from the heads layout back to the rows:
//!
//! ```text
//! y = x · cos + rotate_half(x) · sin        dx = dy · cos − rotate_half(dy) · sin
//! ```
//!
//! The tables are `[1 or batch, 1, seq, head_dim]` (one row of positions for the batch, or
//! one per row in generation). On CUDA without fusion each way is one kernel
//! (`kernel`, f32 arithmetic in any float dtype); elsewhere burn's ops in the
//! input's dtype.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, TensorPrimitive};

use crate::model::rope;

/// A backend that splits rows into heads and rotates them, with gradients where it has them.
pub trait RotaryHeads: Backend {
    /// `x` `[batch, seq, heads · head_dim]` rotated by the tables `cos`, `sin` (`[1 or
    /// batch, 1, seq, head_dim]`): `[batch, heads, seq, head_dim]` in `x`'s dtype.
    fn rotary_heads(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        composed_rotary_heads::<Self>(x, cos, sin, heads)
    }

    /// Generation's queries, keys and values from one product of the three weights: `rows`
    /// `[batch, seq, (heads + 2 · kv_heads) · head_dim]` (the queries' columns, then the
    /// keys', then the values'), the tables as for [`RotaryHeads::rotary_heads`]: the rotated
    /// query heads `[batch, heads, seq, head_dim]`, the rotated key heads and the value heads
    /// (`[batch, kv_heads, seq, head_dim]`), contiguous, in `rows`' dtype. Without gradients.
    fn qkv_heads(rows: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, [heads, kv_heads]: [usize; 2]) -> [FloatTensor<Self>; 3] {
        composed_qkv_heads::<Self>(rows, cos, sin, [heads, kv_heads])
    }

    /// The gradient of `x` (`[batch, seq, heads · head_dim]`) from the output's gradient
    /// `dy` (`[batch, heads, seq, head_dim]`).
    fn rotary_heads_backward(dy: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_rotary_heads_backward::<Self>(dy, cos, sin)
    }
}

fn float<B: Backend, const D: usize>(raw: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(raw))
}

/// The tables in `like`'s dtype.
fn tables_as<B: Backend>(cos: FloatTensor<B>, sin: FloatTensor<B>, like: &Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let dtype: FloatDType = like.dtype().into();
    (float::<B, 4>(cos).cast(dtype), float::<B, 4>(sin).cast(dtype))
}

/// [`RotaryHeads::rotary_heads`] from burn's ops.
pub(crate) fn composed_rotary_heads<B: Backend>(x: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>, heads: usize) -> FloatTensor<B> {
    let x = float::<B, 3>(x);
    let [b, t, width] = x.dims();
    let x = x.reshape([b, t, heads, width / heads]).swap_dims(1, 2);
    let (cos, sin) = tables_as::<B>(cos, sin, &x);
    rope::apply(x, cos, sin).into_primitive().tensor()
}

/// [`RotaryHeads::rotary_heads_backward`] from burn's ops.
pub(crate) fn composed_rotary_heads_backward<B: Backend>(dy: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>) -> FloatTensor<B> {
    let dy = float::<B, 4>(dy);
    let [b, heads, t, d] = dy.dims();
    let (cos, sin) = tables_as::<B>(cos, sin, &dy);
    rope::apply(dy, cos, sin.neg()).swap_dims(1, 2).reshape([b, t, heads * d]).into_primitive().tensor()
}

/// [`RotaryHeads::qkv_heads`] from the three parts' views: [`RotaryHeads::rotary_heads`]
/// of the queries and of the keys, the values split into heads.
pub(crate) fn composed_qkv_heads<B: RotaryHeads>(
    rows: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    [heads, kv_heads]: [usize; 2],
) -> [FloatTensor<B>; 3] {
    let rows = float::<B, 3>(rows);
    let [b, t, width] = rows.dims();
    let d = width / (heads + 2 * kv_heads);
    let part = |first: usize, count: usize| rows.clone().narrow(2, first * d, count * d);
    let q = B::rotary_heads(part(0, heads).into_primitive().tensor(), cos.clone(), sin.clone(), heads);
    let k = B::rotary_heads(part(heads, kv_heads).into_primitive().tensor(), cos, sin, kv_heads);
    let v = part(heads + kv_heads, kv_heads).reshape([b, t, kv_heads, d]).swap_dims(1, 2);
    [q, k, v.into_primitive().tensor()]
}

/// [`RotaryHeads::qkv_heads`] on tensors.
pub fn qkv_heads<B: RotaryHeads>(rows: Tensor<B, 3>, cos: Tensor<B, 4>, sin: Tensor<B, 4>, heads: [usize; 2]) -> [Tensor<B, 4>; 3] {
    B::qkv_heads(rows.into_primitive().tensor(), cos.into_primitive().tensor(), sin.into_primitive().tensor(), heads).map(float)
}

/// [`RotaryHeads::rotary_heads`] on tensors.
pub fn rotary_heads<B: RotaryHeads>(x: Tensor<B, 3>, cos: Tensor<B, 4>, sin: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    float(B::rotary_heads(x.into_primitive().tensor(), cos.into_primitive().tensor(), sin.into_primitive().tensor(), heads))
}

impl RotaryHeads for crate::Cpu {}
#[cfg(feature = "cuda")]
impl RotaryHeads for crate::CudaFused {}

/// The backward step: the state is the tables.
#[derive(Debug)]
struct RotaryHeadsBackward;

impl<B: RotaryHeads> Backward<B, 1> for RotaryHeadsBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (cos, sin) = ops.state;
        let [x_node] = ops.parents;
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::rotary_heads_backward(dy, cos, sin));
        }
    }
}

/// The tables carry no gradient (they are constants of the positions).
impl<B: RotaryHeads, C: CheckpointStrategy> RotaryHeads for Autodiff<B, C> {
    fn rotary_heads(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let (cos, sin) = (cos.primitive, sin.primitive);
        match RotaryHeadsBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::rotary_heads(x.primitive, cos.clone(), sin.clone(), heads);
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rotary_heads(x.primitive, cos, sin, heads)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::model::rope::Rope;
    use crate::model::tests::tiny_config;
    use crate::{Cpu, CpuAutodiff};

    fn max_gap<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Tables `[1, 1, seq, head_dim]` of the tiny model's RoPE at positions 0..seq.
    fn tables(seq: usize, head_dim: usize) -> (Tensor<CpuAutodiff, 4>, Tensor<CpuAutodiff, 4>) {
        let mut c = tiny_config();
        c.head_dim = head_dim;
        let positions: Vec<usize> = (0..seq).collect();
        let (cos, sin) = Rope::new(&c).tables::<CpuAutodiff>(&positions, &Default::default());
        (cos.unsqueeze::<4>(), sin.unsqueeze::<4>())
    }

    /// The op's output and the input's gradient equal burn's ops (reshape, transpose,
    /// rotate) differentiated by burn, on a loss that weighs every output differently.
    #[test]
    fn values_and_gradients_equal_burns_ops() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 3);
        let (b, t, heads, d) = (2, 5, 3, 8);
        let x = Tensor::<CpuAutodiff, 3>::random([b, t, heads * d], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let weights = Tensor::<CpuAutodiff, 4>::random([b, heads, t, d], Distribution::Normal(0.0, 1.0), &device);
        let (cos, sin) = tables(t, d);
        let run = |ours: bool| {
            let y = if ours {
                rotary_heads(x.clone(), cos.clone(), sin.clone(), heads)
            } else {
                float::<CpuAutodiff, 4>(composed_rotary_heads::<CpuAutodiff>(
                    x.clone().into_primitive().tensor(),
                    cos.clone().into_primitive().tensor(),
                    sin.clone().into_primitive().tensor(),
                    heads,
                ))
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y.inner(), x.grad(&grads).expect("a gradient of x"))
        };
        let (ours, theirs) = (run(true), run(false));
        assert!(max_gap(ours.0, theirs.0) < 1e-6, "values");
        assert!(max_gap(ours.1, theirs.1) < 1e-6, "dx");
    }

    /// Position 0 is not rotated (cos 1, sin 0), and a rotation keeps each pair's length.
    #[test]
    fn position_zero_is_unrotated_and_lengths_are_kept() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 4);
        let (t, heads, d) = (6, 2, 8);
        let x = Tensor::<CpuAutodiff, 3>::random([1, t, heads * d], Distribution::Normal(0.0, 1.0), &device);
        let (cos, sin) = tables(t, d);
        let y = rotary_heads(x.clone(), cos, sin, heads).inner();
        let x_heads = x.inner().reshape([1, t, heads, d]).swap_dims(1, 2);
        assert!(max_gap(y.clone().narrow(2, 0, 1), x_heads.clone().narrow(2, 0, 1)) < 1e-7);
        let pair_lengths = |z: Tensor<Cpu, 4>| z.clone().narrow(3, 0, d / 2).square() + z.narrow(3, d / 2, d / 2).square();
        assert!(max_gap(pair_lengths(y), pair_lengths(x_heads)) < 1e-5);
    }
}
