//! Gradient-norm clipping over all parameters together (as `torch.nn.utils.clip_grad_norm_`
//! does), not per tensor. The gradients' sums of squares are one backend operation
//! (`squared_norms`).

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use crate::ops::kernels::Kernels;
use crate::ops::squared_norms::SquaredNorms;

struct Ids(Vec<(ParamId, usize)>);

impl<B: Backend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

/// The gradient of `id` as a vector (a view: gradients are contiguous).
fn flat<B: Backend, const D: usize>(grads: &GradientsParams, id: ParamId) -> Option<FloatTensor<B>> {
    grads.get::<B, D>(id).map(|g| {
        let n = g.shape().num_elements();
        g.reshape([n]).into_primitive().tensor()
    })
}

fn scale<B: Backend, const D: usize>(grads: &mut GradientsParams, id: ParamId, factor: f64) {
    if let Some(g) = grads.remove::<B, D>(id) {
        grads.register::<B, D>(id, g.mul_scalar(factor));
    }
}

/// The global L2 norm of the gradients; when it exceeds `max_norm` (> 0), every gradient is
/// scaled by `max_norm / norm`. Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend<InnerBackend: SquaredNorms>, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
    kernels: Kernels,
) -> f64 {
    let norm = global_norm(module, grads, kernels);
    if let Some(factor) = clip_factor(norm, max_norm) {
        for &(id, rank) in &param_ids(module) {
            match rank {
                1 => scale::<B::InnerBackend, 1>(grads, id, factor),
                2 => scale::<B::InnerBackend, 2>(grads, id, factor),
                3 => scale::<B::InnerBackend, 3>(grads, id, factor),
                _ => scale::<B::InnerBackend, 4>(grads, id, factor),
            }
        }
    }
    norm
}

/// What clipping to `max_norm` multiplies the gradients by at global norm `norm`: `None`
/// when it leaves them alone (`max_norm` 0, or a norm within it). An optimizer that takes
/// the factor into its update (`OnePassAdamW::grad_scale`) saves the pass over the
/// gradients that `clip_global_norm` makes.
pub fn clip_factor(norm: f64, max_norm: f64) -> Option<f64> {
    (max_norm > 0.0 && norm > max_norm).then(|| max_norm / (norm + 1e-6))
}

fn param_ids<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> Vec<(ParamId, usize)> {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

/// The global L2 norm of the module's gradients (one read of each; the sums of squares by
/// the path `kernels` chooses).
pub fn global_norm<B: AutodiffBackend<InnerBackend: SquaredNorms>, M: AutodiffModule<B>>(module: &M, grads: &GradientsParams, kernels: Kernels) -> f64 {
    let vectors: Vec<FloatTensor<B::InnerBackend>> = param_ids(module)
        .iter()
        .filter_map(|&(id, rank)| match rank {
            1 => flat::<B::InnerBackend, 1>(grads, id),
            2 => flat::<B::InnerBackend, 2>(grads, id),
            3 => flat::<B::InnerBackend, 3>(grads, id),
            _ => flat::<B::InnerBackend, 4>(grads, id),
        })
        .collect();
    if vectors.is_empty() {
        return 0.0;
    }
    let sums = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(B::InnerBackend::squared_norms(vectors, kernels)));
    sums.sum().into_scalar().elem::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};

    use super::*;
    use crate::CpuAutodiff;

    fn grads_of(model: &Linear<CpuAutodiff>, scale: f32) -> GradientsParams {
        let x = Tensor::<CpuAutodiff, 2>::from_floats([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], &Default::default());
        GradientsParams::from_grads(model.forward(x).sum().mul_scalar(scale).backward(), model)
    }

    /// The norm is over every gradient together; clipping scales them all by `max / norm`
    /// (what `clip_factor` gives), and a norm within the limit leaves them alone.
    #[test]
    fn clipping_scales_every_gradient_by_the_factor() {
        let model = LinearConfig::new(3, 2).init::<CpuAutodiff>(&Default::default());
        let grads = grads_of(&model, 10.0);
        let norm = global_norm(&model, &grads, Kernels::default());
        let weight = grads.get::<crate::Cpu, 2>(model.weight.id).expect("a gradient").into_data().to_vec::<f32>().unwrap();
        let bias = grads.get::<crate::Cpu, 1>(model.bias.as_ref().expect("a bias").id).expect("a gradient").into_data().to_vec::<f32>().unwrap();
        let by_hand = weight.iter().chain(&bias).map(|g| (g * g) as f64).sum::<f64>().sqrt();
        assert!((norm - by_hand).abs() < 1e-4 * by_hand, "{norm} against {by_hand}");
        let factor = clip_factor(norm, 1.0).expect("a norm above 1 is clipped");
        let mut clipped = grads_of(&model, 10.0);
        assert_eq!(clip_global_norm(&model, &mut clipped, 1.0, Kernels::default()), norm);
        assert!((global_norm(&model, &clipped, Kernels::default()) - norm * factor).abs() < 1e-4, "scaled by the factor");
        assert_eq!(clip_factor(norm, norm * 2.0), None);
        assert_eq!(clip_factor(norm, 0.0), None);
    }
}
