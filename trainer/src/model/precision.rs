//! Mixed precision: the matmuls (projections, attention, LM head) can run in a lower float
//! dtype than the parameters, as PyTorch's autocast does, while the parameters, optimizer
//! state, norms, the residual stream and the loss stay in the parameters' dtype (f32).
//! Between the products of a block the values stay in the compute dtype (the queries, keys
//! and values through RoPE and attention, the MLP's gate), each op computing in f32 where
//! it has a kernel; a block's input is cast once for all its projections and its output
//! stays in the compute dtype until the residual add (`ops::rms_norm::add_then_norm`)
//! brings it back to f32. Casts are differentiable, so the gradients reach the f32 parameters
//! in f32.

use anyhow::{Result, bail};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::linear;

use crate::ops::kernels::Kernels;
use crate::ops::matmul::{Matmul, matmul_2d};

/// The dtype the matmuls run in; `None`: the parameters' own.
pub type Compute = Option<FloatDType>;

/// Reads a config's `compute_dtype` (`f32`, `bf16`, `f16`, `f64`); `f32` is no cast.
pub fn parse_compute(name: &str) -> Result<Compute> {
    Ok(match name {
        "f32" => None,
        "bf16" => Some(FloatDType::BF16),
        "f16" => Some(FloatDType::F16),
        "f64" => Some(FloatDType::F64),
        other => bail!("compute_dtype `{other}` is not one of f32, bf16, f16, f64"),
    })
}

/// The name `parse_compute` reads (`f32` for none), for logs and benchmark lines.
pub fn compute_name(compute: Compute) -> String {
    compute.map_or("f32".to_string(), |d| format!("{d:?}").to_lowercase())
}

/// Bytes of one value in the compute dtype (4 for none: the parameters' f32).
pub fn compute_bytes(compute: Compute) -> usize {
    compute.map_or(4, |d| burn::tensor::DType::from(d).size())
}

/// `x` in `dtype`, unchanged when it is there already (under autodiff a cast to the same
/// dtype is still an operation, forward and backward).
pub fn cast_to<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if x.dtype() == dtype.into() { x } else { x.cast(dtype) }
}

/// `x` in the compute dtype (unchanged when there is none or it is there already).
pub fn to_compute<B: Backend, const D: usize>(x: Tensor<B, D>, compute: Compute) -> Tensor<B, D> {
    match compute {
        Some(dtype) => cast_to(x, dtype),
        None => x,
    }
}

/// The dtype of the parameters, the residual stream, the norms and the loss.
pub const RESIDUAL: FloatDType = FloatDType::F32;

/// `x · weight + bias` (`weight`: `[d_in, d_out]`) computed in the compute dtype; the
/// result comes back in f32 (`RESIDUAL`), also when the weight is held in the compute
/// dtype (`Llama::for_generation`). `x` may come in either. A backend with its own product
/// (`Matmul::OWN_PRODUCT`) gets one `[batch · seq, d_in] · [d_in, d_out]` product, the
/// others burn's `linear`.
pub fn linear_in<B: Matmul>(x: Tensor<B, 3>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>, compute: Compute, kernels: Kernels) -> Tensor<B, 3> {
    cast_to(linear_computed(x, weight, bias, compute, kernels), RESIDUAL)
}

/// [`linear_in`] with the result left in the compute dtype (for a consumer that reads it
/// there, such as the loss of the LM head's logits).
pub fn linear_computed<B: Matmul>(x: Tensor<B, 3>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>, compute: Compute, kernels: Kernels) -> Tensor<B, 3> {
    let (x, weight, bias) = (to_compute(x, compute), to_compute(weight, compute), bias.map(|b| to_compute(b, compute)));
    if B::OWN_PRODUCT { flat_linear(x, weight, bias, kernels) } else { linear(x, weight, bias) }
}

/// burn's `linear` as one 2-d product of the rows of every sequence (`Matmul::matmul_2d`).
fn flat_linear<B: Matmul>(x: Tensor<B, 3>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>, kernels: Kernels) -> Tensor<B, 3> {
    let [batch, seq, d_in] = x.dims();
    let d_out = weight.dims()[1];
    let product = matmul_2d(x.reshape([batch * seq, d_in]), weight, kernels).reshape([batch, seq, d_out]);
    match bias {
        Some(bias) => product + bias.unsqueeze::<3>(),
        None => product,
    }
}

/// A projection layer's forward with the result left in the compute dtype (for a consumer
/// that computes there: attention, the MLP's gate).
pub fn project_computed<B: Matmul>(layer: &Linear<B>, x: Tensor<B, 3>, compute: Compute, kernels: Kernels) -> Tensor<B, 3> {
    linear_computed(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()), compute, kernels)
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::DType;

    use super::*;
    use crate::loss::lm_loss;
    use crate::model::Llama;
    use crate::model::tests::tiny_config;
    use crate::{Cpu, CpuAutodiff};

    fn ids<B: Backend>(device: &B::Device) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(vec![1i64, 5, 9, 3, 7, 2, 8, 4, 6, 11, 13, 0], [2, 6]), device)
    }

    fn max_rel_gap(a: &[f32], b: &[f32]) -> f32 {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    #[test]
    fn compute_dtypes_are_read_and_a_wrong_one_is_named() {
        assert_eq!(parse_compute("f32").unwrap(), None);
        assert_eq!(parse_compute("bf16").unwrap(), Some(FloatDType::BF16));
        for name in ["f32", "bf16", "f16", "f64"] {
            assert_eq!(compute_name(parse_compute(name).unwrap()), name);
        }
        let err = parse_compute("fp8").unwrap_err().to_string();
        assert!(err.contains("fp8") && err.contains("bf16"), "{err}");
    }

    /// The CPU backend has no bf16, so f64 stands in for "another compute dtype": every
    /// matmul must be cast (a missed one fails on mixed dtypes), the logits come back in
    /// f32 and equal the f32 model's.
    #[test]
    fn logits_in_another_compute_dtype_come_back_in_the_parameters_dtype() {
        let device = Default::default();
        let model = Llama::<Cpu>::random(&tiny_config(), &device);
        let plain = model.forward(ids(&device));
        let mixed = model.clone().with_compute(Some(FloatDType::F64)).forward(ids(&device));
        assert_eq!(mixed.dtype(), DType::F32);
        let (p, m) = (plain.into_data().to_vec::<f32>().unwrap(), mixed.into_data().to_vec::<f32>().unwrap());
        assert!(max_rel_gap(&p, &m) < 1e-5, "gap {}", max_rel_gap(&p, &m));
    }

    /// A model held in another dtype (f64 standing in for bf16, which the CPU backend
    /// lacks): its projections and embedding are stored in it, the norms stay f32, and its
    /// logits come back in f32 equal to the f32 model's.
    #[test]
    fn a_model_held_in_another_dtype_gives_the_same_logits() {
        let device = Default::default();
        let model = Llama::<Cpu>::random(&tiny_config(), &device);
        let plain = model.forward(ids(&device));
        let held = model.held_in(FloatDType::F64);
        assert_eq!(held.embed_tokens.weight.val().dtype(), DType::F64);
        assert_eq!(held.layers[0].self_attn.q_proj.weight.val().dtype(), DType::F64);
        assert_eq!(held.layers[0].mlp.down_proj.weight.val().dtype(), DType::F64);
        assert_eq!(held.norm.gamma.val().dtype(), DType::F32);
        let logits = held.forward(ids(&device));
        assert_eq!(logits.dtype(), DType::F32);
        let (p, h) = (plain.into_data().to_vec::<f32>().unwrap(), logits.into_data().to_vec::<f32>().unwrap());
        assert!(max_rel_gap(&p, &h) < 1e-5, "gap {}", max_rel_gap(&p, &h));
    }

    /// A scoring copy (f64 standing in for bf16): the projections and the LM head held in
    /// the compute dtype, the embedding and the norms as they were, and the very logits the
    /// model gives casting its weights at every pass.
    #[test]
    fn a_scoring_copy_casts_once_and_gives_the_same_logits() {
        let device = Default::default();
        let model = Llama::<Cpu>::random(&tiny_config(), &device).with_compute(Some(FloatDType::F64));
        let scoring = model.for_scoring();
        assert_eq!(scoring.layers[1].self_attn.v_proj.weight.val().dtype(), DType::F64);
        assert_eq!(scoring.layers[1].mlp.up_proj.weight.val().dtype(), DType::F64);
        assert_eq!(scoring.lm_head.as_ref().map(|h| h.weight.val().dtype()), Some(DType::F64));
        assert_eq!(scoring.embed_tokens.weight.val().dtype(), DType::F32);
        assert_eq!(scoring.norm.gamma.val().dtype(), DType::F32);
        assert_eq!(model.layers[1].self_attn.v_proj.weight.val().dtype(), DType::F32, "the model itself is unchanged");
        assert_eq!(scoring.forward(ids(&device)).into_data(), model.forward(ids(&device)).into_data());
    }

    /// Batched generation (left padding, key/value cache, masked attention) under a compute
    /// dtype: the same greedy tokens as at f32.
    #[test]
    fn generation_in_another_compute_dtype_picks_the_same_tokens() {
        use crate::generate::{Sampling, generate};
        let device = Default::default();
        let model = Llama::<Cpu>::random(&tiny_config(), &device);
        let prompts = vec![vec![3, 9, 27, 17], vec![5, 1], vec![60, 2, 44]];
        let greedy = Sampling { max_new_tokens: 6, temperature: 0.0, top_p: 1.0, seed: 0, eos: None };
        let plain = generate(&model, &prompts, &greedy, false).unwrap().tokens;
        let mixed = generate(&model.with_compute(Some(FloatDType::F64)), &prompts, &greedy, false).unwrap().tokens;
        assert_eq!(plain, mixed);
    }

    /// The flattened product the backends with their own product get equals burn's
    /// `linear`, values and gradients of input, weight and bias.
    #[test]
    fn the_flat_product_equals_burns_linear() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 5);
        let random = |dims: &[usize]| Tensor::<CpuAutodiff, 1>::random([dims.iter().product::<usize>()], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let x = random(&[2, 5, 4]).reshape([2, 5, 4]).require_grad();
        let w = random(&[4, 3]).reshape([4, 3]).require_grad();
        let b = random(&[3]).require_grad();
        let weights = random(&[2, 5, 3]).reshape([2, 5, 3]).detach();
        let run = |flat: bool| {
            let y = if flat { flat_linear(x.clone(), w.clone(), Some(b.clone()), Kernels::default()) } else { linear(x.clone(), w.clone(), Some(b.clone())) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let host = |t: Tensor<Cpu, 3>| t.into_data().to_vec::<f32>().unwrap();
            let host2 = |t: Tensor<Cpu, 2>| t.into_data().to_vec::<f32>().unwrap();
            (host(y.inner()), host(x.grad(&grads).unwrap()), host2(w.grad(&grads).unwrap()), b.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap())
        };
        let (flat, burns) = (run(true), run(false));
        assert!(max_rel_gap(&burns.0, &flat.0) < 1e-6, "values");
        assert!(max_rel_gap(&burns.1, &flat.1) < 1e-6, "input gradient");
        assert!(max_rel_gap(&burns.2, &flat.2) < 1e-6, "weight gradient");
        assert!(max_rel_gap(&burns.3, &flat.3) < 1e-6, "bias gradient");
    }

    /// Training under a compute dtype: the gradients reach every parameter in the
    /// parameters' dtype, equal to the f32 model's.
    #[test]
    fn gradients_flow_through_the_casts_to_f32_parameters() {
        let device = Default::default();
        let model = Llama::<CpuAutodiff>::random(&tiny_config(), &device);
        let grads_of = |m: &Llama<CpuAutodiff>| lm_loss(m, ids(&device), ids(&device)).backward();
        let mixed = model.clone().with_compute(Some(FloatDType::F64));
        let (gp, gm) = (grads_of(&model), grads_of(&mixed));
        let mut checked = 0;
        let mut compare = |param: &burn::module::Param<Tensor<CpuAutodiff, 2>>| {
            let (a, b) = (param.grad(&gp).expect("a gradient"), param.grad(&gm).expect("a gradient through the casts"));
            assert_eq!(b.dtype(), DType::F32);
            let (a, b) = (a.into_data().to_vec::<f32>().unwrap(), b.into_data().to_vec::<f32>().unwrap());
            assert!(max_rel_gap(&a, &b) < 1e-4, "gap {}", max_rel_gap(&a, &b));
            checked += 1;
        };
        compare(&mixed.embed_tokens.weight);
        for layer in &mixed.layers {
            for lin in [&layer.self_attn.q_proj, &layer.self_attn.k_proj, &layer.self_attn.v_proj, &layer.self_attn.o_proj] {
                compare(&lin.weight);
            }
            for lin in [&layer.mlp.gate_proj, &layer.mlp.up_proj, &layer.mlp.down_proj] {
                compare(&lin.weight);
            }
        }
        assert_eq!(checked, 1 + 7 * mixed.layers.len());
        assert_eq!(mixed.num_params(), model.num_params(), "casting adds no parameters");
    }
}
