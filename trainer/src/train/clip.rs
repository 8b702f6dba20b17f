//! Gradient-norm clipping over all parameters together (as `torch.nn.utils.clip_grad_norm_`
//! does), not per tensor. The gradients' sums of squares are one backend operation
//! (`squared_norms`).

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::squared_norms::SquaredNorms;

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
pub fn clip_global_norm<B: AutodiffBackend<InnerBackend: SquaredNorms>, M: AutodiffModule<B>>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    let vectors: Vec<FloatTensor<B::InnerBackend>> = ids
        .0
        .iter()
        .filter_map(|&(id, rank)| match rank {
            1 => flat::<B::InnerBackend, 1>(grads, id),
            2 => flat::<B::InnerBackend, 2>(grads, id),
            3 => flat::<B::InnerBackend, 3>(grads, id),
            _ => flat::<B::InnerBackend, 4>(grads, id),
        })
        .collect();
    let norm = if vectors.is_empty() {
        0.0
    } else {
        let sums = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(B::InnerBackend::squared_norms(vectors)));
        sums.sum().into_scalar().elem::<f64>().sqrt()
    };
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
