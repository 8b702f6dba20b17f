//! RMSNorm as one backend op with its own backward pass.
//!
//! burn's `RmsNorm` is six tensor operations forward (square, mean, add, sqrt, divide,
//! scale) and about twelve more for autodiff's backward; on CUDA without fusion each is a
//! kernel the host must issue, and issuing, not computing, is what limits a decoder layer
//! there (docs/PERF.md). As one op, `y = x · r · γ` with `r = 1 / sqrt(mean(x²) + ε)` per
//! row keeps `r` for the backward pass, which is
//!
//! ```text
//! dx = r · γ ⊙ dy − x · r³ · Σ_j(dy_j γ_j x_j) / n        dγ = Σ_rows dy ⊙ x · r
//! ```
//!
//! A backend opts in with `OWN_NORM` (CUDA without fusion: one kernel each way and a sum
//! over rows, `kernel`); the others keep burn's `RmsNorm` exactly as before.
//!
//! Generation (no gradients) adds a layer's output to the residual stream and normalises
//! the sum for the next block in one op, `add_rms_norm`, whose output comes in the dtype
//! the next products read: composed, that is a cast, an add, the norm and a cast again
//! (four launches twice a layer); on CUDA it is one kernel (`residual_kernel`).

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;
#[cfg(feature = "cuda")]
mod residual_kernel;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::RmsNorm;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, TensorPrimitive};

use crate::model::precision::cast_to;

/// A backend that normalises rows by their root mean square, with gradients where it has
/// them.
pub trait RmsNormOp: Backend {
    /// Whether the backend has its own op, which `rms_norm` then uses; otherwise it keeps
    /// burn's `RmsNorm`.
    const OWN_NORM: bool = false;

    /// For `x` `[rows, n]` and `gamma` `[n]`: `y = x · r · γ` (in `x`'s dtype) and each row's
    /// `r = 1 / sqrt(mean(x²) + epsilon)` (f32 `[rows]`). Without gradients.
    fn rms_norm_rows(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_rms_norm_rows::<Self>(x, gamma, epsilon)
    }

    /// The gradients of `x` and `gamma` from the kept `r` and the output's gradient `dy`.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        r: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_rms_norm_backward::<Self>(x, gamma, r, dy)
    }

    /// `y` of [`RmsNormOp::rms_norm_rows`], with gradients where the backend has them.
    fn rms_norm_op(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        Self::rms_norm_rows(x, gamma, epsilon).0
    }

    /// Whether [`add_then_norm`] takes the backend's [`RmsNormOp::add_rms_norm`] (a backend
    /// without gradients and with its own kernel); otherwise it composes tensor ops.
    const OWN_ADD_NORM: bool = false;

    /// For `x` `[rows, n]`, `delta` of its shape in any float dtype and `gamma` `[n]` of
    /// `x`'s dtype: the sum `s = x + delta` in `x`'s dtype (`x` itself without `delta`) and
    /// `s · r · γ` in `dtype`, `r` as in [`RmsNormOp::rms_norm_rows`]. Without gradients.
    fn add_rms_norm(
        x: FloatTensor<Self>,
        delta: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
        dtype: FloatDType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_add_rms_norm::<Self>(x, delta, gamma, epsilon, dtype)
    }
}

/// The residual stream after a block and its normalised rows for the next: `x + delta`
/// (`delta` cast to `x`'s dtype; `x` itself without one) and `norm` of it in `dtype`
/// (`x`'s own when `None`). The backend's one op where it has it (`OWN_ADD_NORM`), else
/// the add, [`apply_rms_norm`] and a cast, with gradients where the backend has them.
pub fn add_then_norm<B: RmsNormOp>(norm: &RmsNorm<B>, x: Tensor<B, 3>, delta: Option<Tensor<B, 3>>, dtype: Option<FloatDType>) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let residual: FloatDType = x.dtype().into();
    let dtype = dtype.unwrap_or(residual);
    if B::OWN_ADD_NORM {
        let [b, t, n] = x.dims();
        let rows = |x: Tensor<B, 3>| x.reshape([b * t, n]).into_primitive().tensor();
        let (sum, y) = B::add_rms_norm(rows(x), delta.map(rows), norm.gamma.val().into_primitive().tensor(), norm.epsilon, dtype);
        let back = |raw| float::<B, 2>(raw).reshape([b, t, n]);
        return (back(sum), back(y));
    }
    let x = match delta {
        Some(delta) => x + cast_to(delta, residual),
        None => x,
    };
    let y = cast_to(apply_rms_norm(norm, x.clone()), dtype);
    (x, y)
}

/// `norm` applied to `x` `[batch, seq, n]`: the backend's op when it has one, burn's
/// `RmsNorm::forward` otherwise.
pub fn apply_rms_norm<B: RmsNormOp>(norm: &RmsNorm<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    if B::OWN_NORM { rms_norm_by_op(norm, x) } else { norm.forward(x) }
}

/// [`RmsNormOp::rms_norm_op`] over the rows of `x`, whatever `OWN_NORM` says.
fn rms_norm_by_op<B: RmsNormOp>(norm: &RmsNorm<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, n] = x.dims();
    let rows = x.reshape([b * t, n]).into_primitive().tensor();
    let y = B::rms_norm_op(rows, norm.gamma.val().into_primitive().tensor(), norm.epsilon);
    Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(y)).reshape([b, t, n])
}

fn float<B: Backend, const D: usize>(raw: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(raw))
}

/// [`RmsNormOp::rms_norm_rows`] from burn's ops, in f32.
pub(crate) fn composed_rms_norm_rows<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, epsilon: f64) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 2>(x);
    let dtype: FloatDType = x.dtype().into();
    let x = x.cast(FloatDType::F32);
    let r = (x.clone().square().mean_dim(1) + epsilon).sqrt().recip();
    let y = x * r.clone() * float::<B, 1>(gamma).cast(FloatDType::F32).unsqueeze_dim::<2>(0);
    (y.cast(dtype).into_primitive().tensor(), r.squeeze_dim::<1>(1).into_primitive().tensor())
}

/// [`RmsNormOp::add_rms_norm`] from burn's ops: the add in `x`'s dtype, the norm in f32.
pub(crate) fn composed_add_rms_norm<B: Backend>(
    x: FloatTensor<B>,
    delta: Option<FloatTensor<B>>,
    gamma: FloatTensor<B>,
    epsilon: f64,
    dtype: FloatDType,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 2>(x);
    let sum = match delta {
        Some(delta) => x.clone() + cast_to(float::<B, 2>(delta), x.dtype().into()),
        None => x,
    };
    let (y, _) = composed_rms_norm_rows::<B>(sum.clone().into_primitive().tensor(), gamma, epsilon);
    (sum.into_primitive().tensor(), cast_to(float::<B, 2>(y), dtype).into_primitive().tensor())
}

/// [`RmsNormOp::rms_norm_backward`] from burn's ops, in f32.
pub(crate) fn composed_rms_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    r: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 2>(x);
    let (dtype, gamma_dtype): (FloatDType, FloatDType) = (x.dtype().into(), float::<B, 1>(gamma.clone()).dtype().into());
    let n = x.dims()[1] as f64;
    let x = x.cast(FloatDType::F32);
    let dy = float::<B, 2>(dy).cast(FloatDType::F32);
    let r = float::<B, 1>(r).unsqueeze_dim::<2>(1);
    let gamma = float::<B, 1>(gamma).cast(FloatDType::F32).unsqueeze_dim::<2>(0);
    let g = dy.clone() * gamma;
    let s = (g.clone() * x.clone()).sum_dim(1);
    let dx = g * r.clone() - x.clone() * (r.clone().powi_scalar(3) * s).div_scalar(n);
    let dgamma = (dy * x * r).sum_dim(0).squeeze_dim::<1>(0);
    (dx.cast(dtype).into_primitive().tensor(), dgamma.cast(gamma_dtype).into_primitive().tensor())
}

impl RmsNormOp for crate::Cpu {}
#[cfg(feature = "cuda")]
impl RmsNormOp for crate::CudaFused {}

/// The backward step: the state is `x`, `gamma` and the rows' `r`.
#[derive(Debug)]
struct RmsNormBackward;

impl<B: RmsNormOp> Backward<B, 2> for RmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, r) = ops.state;
        let (dx, dgamma) = B::rms_norm_backward(x, gamma, r, dy);
        let [x_node, gamma_node] = ops.parents;
        if let Some(node) = x_node {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = gamma_node {
            grads.register::<B>(node.id, dgamma);
        }
    }
}

impl<B: RmsNormOp, C: CheckpointStrategy> RmsNormOp for Autodiff<B, C> {
    const OWN_NORM: bool = B::OWN_NORM;

    fn rms_norm_op(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        match RmsNormBackward.prepare::<C>([x.node.clone(), gamma.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, r) = B::rms_norm_rows(x.primitive.clone(), gamma.primitive.clone(), epsilon);
                prep.finish((x.primitive, gamma.primitive, r), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm_rows(x.primitive, gamma.primitive, epsilon).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::RmsNormConfig;
    use burn::tensor::Distribution;

    use super::*;
    use crate::{Cpu, CpuAutodiff};

    fn max_gap<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// The op's output and the gradients of the input and of γ equal burn's `RmsNorm`
    /// differentiated by burn, on a loss that weighs every output differently.
    #[test]
    fn values_and_gradients_equal_burns_rms_norm() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 11);
        let mut norm = RmsNormConfig::new(6).with_epsilon(1e-5).init::<CpuAutodiff>(&device);
        norm.gamma = burn::module::Param::from_tensor(Tensor::random([6], Distribution::Normal(1.0, 0.5), &device));
        let x = Tensor::<CpuAutodiff, 3>::random([2, 3, 6], Distribution::Normal(0.0, 2.0), &device).require_grad();
        let weights = Tensor::<CpuAutodiff, 3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let y = if ours { rms_norm_by_op(&norm, x.clone()) } else { apply_rms_norm(&norm, x.clone()) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y.inner(), x.grad(&grads).expect("a gradient of x"), norm.gamma.grad(&grads).expect("a gradient of gamma"))
        };
        const { assert!(!Cpu::OWN_NORM, "the CPU keeps burn's RmsNorm, so the second run is the reference") };
        let (ours, theirs) = (run(true), run(false));
        assert!(max_gap(ours.0, theirs.0) < 1e-5, "values");
        assert!(max_gap(ours.1, theirs.1) < 1e-5, "dx");
        assert!(max_gap(ours.2, theirs.2) < 1e-5, "dgamma");
    }

    /// The residual add and norm by the backend's op equal the add and burn's `RmsNorm`
    /// composed (the path of a backend without its own op), with and without a `delta`.
    #[test]
    fn add_then_norm_by_op_equals_the_composed_path() {
        let device = Default::default();
        let mut norm = RmsNormConfig::new(6).with_epsilon(1e-5).init::<Cpu>(&device);
        norm.gamma = burn::module::Param::from_tensor(Tensor::random([6], Distribution::Normal(1.0, 0.5), &device));
        let x = Tensor::<Cpu, 3>::random([2, 3, 6], Distribution::Normal(0.0, 2.0), &device);
        let delta = Tensor::<Cpu, 3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        const { assert!(!Cpu::OWN_ADD_NORM, "the CPU composes add_then_norm, so the op is called directly") };
        for delta in [Some(delta), None] {
            let (sum, y) = add_then_norm(&norm, x.clone(), delta.clone(), None);
            let rows = |t: Tensor<Cpu, 3>| t.reshape([6, 6]).into_primitive().tensor();
            let (op_sum, op_y) = Cpu::add_rms_norm(rows(x.clone()), delta.clone().map(rows), norm.gamma.val().into_primitive().tensor(), 1e-5, FloatDType::F32);
            let want_sum = match &delta {
                Some(d) => x.clone() + d.clone(),
                None => x.clone(),
            };
            assert!(max_gap(sum.clone(), want_sum) == 0.0, "the sum is x + delta");
            assert!(max_gap(float::<Cpu, 2>(op_sum).reshape([2, 3, 6]), sum) == 0.0, "sums");
            assert!(max_gap(float::<Cpu, 2>(op_y).reshape([2, 3, 6]), y) < 1e-5, "outputs");
        }
    }

    /// Each row comes out with a root mean square of 1 (γ = 1), and `r` is the inverse of
    /// the row's.
    #[test]
    fn rows_come_out_with_unit_root_mean_square() {
        let device = Default::default();
        let x = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![3.0f32, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], [2, 4]), &device);
        let (y, r) = Cpu::rms_norm_rows(x.into_primitive().tensor(), Tensor::<Cpu, 1>::ones([4], &device).into_primitive().tensor(), 0.0);
        let y = float::<Cpu, 2>(y);
        let rms = y.square().mean_dim(1).sqrt().into_data().to_vec::<f32>().unwrap();
        assert!(rms.iter().all(|v| (v - 1.0).abs() < 1e-6), "{rms:?}");
        let r = float::<Cpu, 1>(r).into_data().to_vec::<f32>().unwrap();
        assert!((r[0] - 1.0 / 2.5).abs() < 1e-6 && (r[1] - 1.0).abs() < 1e-6, "{r:?}");
    }
}
