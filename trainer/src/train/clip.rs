//! Gradient-norm clipping over all parameters together (as `torch.nn.utils.clip_grad_norm_`
//! does), not per tensor.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

struct Ids(Vec<(ParamId, usize)>);

impl<B: Backend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

fn sum_of_squares<B: Backend, const D: usize>(grads: &GradientsParams, id: ParamId) -> Option<Tensor<B, 1>> {
    grads.get::<B, D>(id).map(|g| g.square().sum())
}

fn scale<B: Backend, const D: usize>(grads: &mut GradientsParams, id: ParamId, factor: f64) {
    if let Some(g) = grads.remove::<B, D>(id) {
        grads.register::<B, D>(id, g.mul_scalar(factor));
    }
}

/// The global L2 norm of the gradients; when it exceeds `max_norm` (> 0), every gradient is
/// scaled by `max_norm / norm`. Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    let mut total: Option<Tensor<B::InnerBackend, 1>> = None;
    for &(id, rank) in &ids.0 {
        let part = match rank {
            1 => sum_of_squares::<B::InnerBackend, 1>(grads, id),
            2 => sum_of_squares::<B::InnerBackend, 2>(grads, id),
            3 => sum_of_squares::<B::InnerBackend, 3>(grads, id),
            _ => sum_of_squares::<B::InnerBackend, 4>(grads, id),
        };
        if let Some(p) = part {
            total = Some(match total {
                Some(t) => t + p,
                None => p,
            });
        }
    }
    let norm = total.map(|t| t.into_scalar().elem::<f64>().sqrt()).unwrap_or(0.0);
    if max_norm > 0.0 && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        for &(id, rank) in &ids.0 {
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
