//! The AdamW update as one CUDA kernel (burn's CUDA backend without fusion).
//!
//! Each thread updates one element: it reads the parameter, its gradient and both moments
//! once and writes the new parameter and moments (seven f32 accesses, against about
//! fifteen whole-tensor passes for the composed update). The arithmetic follows
//! `composed_adamw_step` operation by operation. Tensors that are not f32 go through the
//! composed update.
//!
//! The tensors are passed as cubecl `LinearView`s, the way burn's own elementwise kernels
//! take them. A first version over plain `Array` arguments compiled and ran but gave
//! wrong moments and parameters on the GPU (`trainer compare-backends`: gaps of 2 to 2.6e5
//! against the CPU; this version: at most 2.4e-7); the cause was not looked into.

use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use cubecl::std::tensor::layout::linear::LinearView;

use crate::CudaPlain;
use crate::ops::adamw::{AdamWStep, AdamWUpdate, HostTensor, composed_adamw_step};
use crate::ops::cuda::plane_rows::one_unit_each;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel<E: Float>(
    param: &LinearView<E>,
    grad: &LinearView<E>,
    moment_1: &LinearView<E>,
    moment_2: &LinearView<E>,
    param_out: &mut LinearView<E, ReadWrite>,
    moment_1_out: &mut LinearView<E, ReadWrite>,
    moment_2_out: &mut LinearView<E, ReadWrite>,
    constants: &AdamWConstants,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if !param_out.is_in_bounds(i) {
        terminate!();
    }
    let g = grad[i] * constants.grad_scale.get::<E>();
    let m = moment_1[i] * constants.beta_1.get::<E>() + g * constants.factor_1.get::<E>();
    let v = moment_2[i] * constants.beta_2.get::<E>() + (g * g) * constants.factor_2.get::<E>();
    let corrected_2 = v / constants.correction_2.get::<E>();
    let delta = (m / constants.correction_1.get::<E>()) / (E::sqrt(corrected_2) + constants.epsilon.get::<E>());
    param_out[i] = param[i] * constants.decay.get::<E>() - delta * constants.lr.get::<E>();
    moment_1_out[i] = m;
    moment_2_out[i] = v;
}

/// The update's constants, as kernel scalars.
#[derive(CubeLaunch, CubeType)]
struct AdamWConstants {
    grad_scale: InputScalar,
    beta_1: InputScalar,
    factor_1: InputScalar,
    beta_2: InputScalar,
    factor_2: InputScalar,
    correction_1: InputScalar,
    correction_2: InputScalar,
    epsilon: InputScalar,
    decay: InputScalar,
    lr: InputScalar,
}

fn cube<const D: usize>(t: Tensor<CudaPlain, D>) -> CubeTensor<CudaRuntime> {
    into_contiguous(t.into_primitive().tensor())
}

fn tensor<const D: usize>(t: CubeTensor<CudaRuntime>) -> Tensor<CudaPlain, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

impl AdamWStep for CudaPlain {
    fn adamw_step<const D: usize>(
        param: Tensor<Self, D>,
        grad: Tensor<Self, D>,
        moment_1: Option<Tensor<Self, D>>,
        moment_2: Option<Tensor<Self, D>>,
        u: &AdamWUpdate,
    ) -> (Tensor<Self, D>, Tensor<Self, D>, Tensor<Self, D>) {
        let all_f32 = [Some(&param), Some(&grad), moment_1.as_ref(), moment_2.as_ref()].into_iter().flatten().all(|t| t.dtype() == DType::F32);
        if !all_f32 {
            return composed_adamw_step(param, grad, moment_1, moment_2, u);
        }
        let moment_1 = moment_1.unwrap_or_else(|| grad.zeros_like());
        let moment_2 = moment_2.unwrap_or_else(|| grad.zeros_like());
        let [param, grad, moment_1, moment_2] = [param, grad, moment_1, moment_2].map(cube);
        let out = || empty_device_dtype(param.client.clone(), param.device.clone(), param.meta.shape().clone(), DType::F32);
        let (param_out, moment_1_out, moment_2_out) = (out(), out(), out());
        let n = param.meta.shape().num_elements();
        let client = param.client.clone();
        let (cube_count, cube_dim) = one_unit_each(&client, n);
        let address = [&param, &grad, &moment_1, &moment_2, &param_out].iter().map(|t| t.required_address_type()).max().unwrap_or_default();
        let f = |x: f32| InputScalar::new(x, DType::F32);
        let constants = AdamWConstantsLaunch::new(
            f(u.grad_scale),
            f(u.settings.beta_1),
            f(u.factor_1()),
            f(u.settings.beta_2),
            f(u.factor_2()),
            f(u.correction_1()),
            f(u.correction_2()),
            f(u.settings.epsilon),
            f(u.decay() as f32),
            f(u.lr as f32),
        );
        // SAFETY: all seven tensors are contiguous f32 of `n` elements and the kernel
        // returns for positions past the output's end.
        unsafe {
            adamw_kernel::launch_unchecked::<CudaRuntime>(
                &client,
                cube_count,
                cube_dim,
                address,
                param.into_linear_view(),
                grad.into_linear_view(),
                moment_1.into_linear_view(),
                moment_2.into_linear_view(),
                param_out.clone().into_linear_view(),
                moment_1_out.clone().into_linear_view(),
                moment_2_out.clone().into_linear_view(),
                constants,
                DType::F32.into(),
            );
        }
        (tensor(param_out), tensor(moment_1_out), tensor(moment_2_out))
    }

    fn to_host<const D: usize>(t: Tensor<Self, D>, reuse: Option<HostTensor>, pinned: bool) -> HostTensor {
        super::pinned_moments::to_host(t, reuse, pinned)
    }

    fn from_host<const D: usize>(h: HostTensor, device: &Self::Device) -> (Tensor<Self, D>, Option<HostTensor>) {
        super::pinned_moments::from_host(h, device)
    }
}
