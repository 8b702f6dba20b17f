//! Where a pretraining step's time goes (`trainer bench-ops`): the pieces of one step timed
//! alone at a model's shapes, forward and forward + backward, with the TFLOP/s they reach:
//! every projection's matmul, attention (and, forward + backward, burn's composed attention
//! it replaced in training), one decoder layer, the LM head with the loss, the
//! whole model, and the whole step (with gradient clipping and AdamW, as the pretraining
//! loop runs it). Each piece runs once untimed (the GPU compiles and tunes kernels there),
//! then `repeats` times between two device syncs. `scripts/gpu/bench_torch_ops.py` times
//! the same pieces in PyTorch, so the two print comparable JSON lines.

use std::time::Instant;

use anyhow::{Result, anyhow};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::attention;
use serde_json::{Value, json};

use crate::TrainBackend;
use crate::loss::{lm_loss, lm_loss_of_hidden};
use crate::model::Llama;
use crate::model::attention::attention_options;
use crate::model::config::ModelConfig;
use crate::model::precision::{Compute, compute_name, linear_in, to_compute};
use crate::ops::adamw::OnePassAdamW;
use crate::ops::kernels::Kernels;
use crate::run::clip::{clip_factor, global_norm};
use crate::train::run::flops_per_token;

/// The shapes and precision to time.
#[derive(Clone, Debug)]
pub struct OpsBench {
    pub batch: usize,
    pub seq: usize,
    pub repeats: usize,
    /// The dtype the matmuls run in (`None`: f32).
    pub compute: Compute,
    /// The kernel paths the ops take.
    pub kernels: Kernels,
}

/// One piece's timing: mean seconds per call and the first (untimed) call's seconds.
struct Timing {
    seconds: f64,
    first_s: f64,
    /// Of `seconds`, the time the host spent issuing the work (before it waited for the
    /// device): close to `seconds`, the host is what limits the piece.
    host_seconds: f64,
}

/// Times `f` (which returns a scalar tensor, kept until the sync, so that its work cannot
/// be skipped): one call, a sync, then `repeats` calls and a sync.
fn time<T: Backend>(device: &T::Device, repeats: usize, mut f: impl FnMut() -> Tensor<T, 1>) -> Result<Timing> {
    let sync = || T::sync(device).map_err(|e| anyhow!("the device failed: {e:?}"));
    sync()?;
    let started = Instant::now();
    let mut kept = vec![f()];
    sync()?;
    let first_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..repeats.max(1) {
        kept.push(f());
    }
    let host_s = started.elapsed().as_secs_f64();
    sync()?;
    let n = repeats.max(1) as f64;
    Ok(Timing { seconds: started.elapsed().as_secs_f64() / n, first_s, host_seconds: host_s / n })
}

/// One JSON line: the piece, its FLOPs per call and what it reached, on `backend` (burn's
/// name of the backend without autodiff: `ndarray`, `cubecl<cuda>`, `fusion<cubecl<cuda>>`).
fn json_line(piece: &str, pass: &str, flops: f64, t: &Timing, o: &OpsBench, backend: &str) -> Value {
    json!({
        "side": "ours", "backend": backend, "piece": piece, "pass": pass, "batch": o.batch, "seq": o.seq,
        "compute_dtype": compute_name(o.compute),
        "ms": t.seconds * 1e3, "tflops": flops / t.seconds / 1e12, "first_ms": t.first_s * 1e3,
        "host_ms": t.host_seconds * 1e3, "attention_chunk": (backend == "cubecl<cuda>").then_some(o.kernels.attention_chunk),
    })
}

/// Runs every piece; one JSON value per piece and pass, then a summary line. Each value goes
/// to `emit` as soon as its piece is timed (on a fresh GPU a piece can spend minutes
/// compiling and autotuning, so a run cut short still reports the pieces it finished).
pub fn bench_ops<B: TrainBackend>(config: &ModelConfig, o: &OpsBench, device: &B::Device, emit: &mut dyn FnMut(&Value)) -> Result<()> {
    B::seed(device, 0);
    let c = config;
    let (b, s, r) = (o.batch, o.seq, o.repeats);
    let tokens = (b * s) as f64;
    let model = Llama::<B>::random(c, device).with_compute(o.compute).with_kernels(o.kernels);
    let normal = |dims: Vec<usize>| Tensor::<B, 3>::random(dims, Distribution::Normal(0.0, 1.0), device);
    let backend = B::InnerBackend::name(device);
    let line = |piece: &str, pass: &str, flops: f64, t: &Timing, o: &OpsBench| json_line(piece, pass, flops, t, o, &backend);
    let mut push = |v: Value| emit(&v);

    // Each distinct projection: x [b, s, d_in] times a weight [d_in, d_out].
    let (h, q, kv, i) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
    let projections =
        [("q_proj", h, q), ("k_proj/v_proj", h, kv), ("o_proj", q, h), ("gate_proj/up_proj", h, i), ("down_proj", i, h), ("lm_head", h, c.vocab_size)];
    for (name, d_in, d_out) in projections {
        let x = normal(vec![b, s, d_in]);
        let w = Tensor::<B, 2>::random([d_in, d_out], Distribution::Normal(0.0, 0.02), device);
        let flops = 2.0 * tokens * (d_in * d_out) as f64;
        let fwd = time::<B>(device, r, || linear_in(x.clone(), w.clone(), None, o.compute, o.kernels).sum())?;
        push(line(name, "forward", flops, &fwd, o));
        let (xg, wg) = (x.clone().require_grad(), w.clone().require_grad());
        let both = time::<B::InnerBackend>(device, r, || {
            let grads = linear_in(xg.clone(), wg.clone(), None, o.compute, o.kernels).sum().backward();
            xg.grad(&grads).expect("a gradient").sum() + wg.grad(&grads).expect("a gradient").sum()
        })?;
        push(line(name, "forward+backward", 3.0 * flops, &both, o));
    }

    // Attention alone: queries, keys and values by head, causal.
    let attn = &model.layers[0].self_attn;
    let heads = |n: usize| Tensor::<B, 4>::random([b, n, s, c.head_dim], Distribution::Normal(0.0, 1.0), device);
    let (qs, ks, vs) = (heads(c.num_heads), heads(c.num_kv_heads), heads(c.num_kv_heads));
    let attention_flops = 4.0 * (b * c.num_heads * s * s * c.head_dim) as f64;
    let fwd = time::<B>(device, r, || attn.attend(qs.clone(), ks.clone(), vs.clone(), None).sum())?;
    push(line("attention", "forward", attention_flops, &fwd, o));
    let (qg, kg, vg) = (qs.require_grad(), ks.require_grad(), vs.require_grad());
    let attention_both = |attend: &dyn Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>| {
        time::<B::InnerBackend>(device, r, || {
            let grads = attend(qg.clone(), kg.clone(), vg.clone()).sum().backward();
            qg.grad(&grads).expect("a gradient").sum() + kg.grad(&grads).expect("a gradient").sum() + vg.grad(&grads).expect("a gradient").sum()
        })
    };
    // The model's attention (the op with its own backward), then burn's composed path
    // differentiated op by op, which the op replaced in training.
    let both = attention_both(&|q, k, v| attn.attend(q, k, v, None))?;
    push(line("attention", "forward+backward", 3.0 * attention_flops, &both, o));
    let both = attention_both(&|q, k, v| {
        let (q, k, v) = (to_compute(q, o.compute), attn.repeat_kv(to_compute(k, o.compute)), attn.repeat_kv(to_compute(v, o.compute)));
        attention(q, k, v, None, None, attention_options(c.head_dim, true, false))
    })?;
    push(line("attention (burn's composed)", "forward+backward", 3.0 * attention_flops, &both, o));

    // One decoder layer (norms, projections, RoPE, attention, MLP, residuals).
    let layer = &model.layers[0];
    let at = model.causal_positions(s, device);
    let layer_flops = 2.0 * tokens * (h * q + 2 * h * kv + q * h + 3 * h * i) as f64 + attention_flops;
    let x = normal(vec![b, s, h]);
    let fwd = time::<B>(device, r, || layer.forward(x.clone(), &at, None).sum())?;
    push(line("decoder_layer", "forward", layer_flops, &fwd, o));
    let xg = x.require_grad();
    let both = time::<B::InnerBackend>(device, r, || {
        let grads = layer.forward(xg.clone(), &at, None).sum().backward();
        xg.grad(&grads).expect("a gradient").sum()
    })?;
    let layer_both = both;
    push(line("decoder_layer", "forward+backward", 3.0 * layer_flops, &layer_both, o));

    // The LM head and the loss over the vocabulary.
    let ids = Tensor::<B, 2, Int>::random([b, s], Distribution::Uniform(3.0, c.vocab_size as f64), device);
    let head_flops = 2.0 * tokens * (h * c.vocab_size) as f64;
    let hidden = normal(vec![b, s, h]).require_grad();
    let both = time::<B::InnerBackend>(device, r, || {
        let loss = lm_loss_of_hidden(&model, hidden.clone(), ids.clone());
        let grads = loss.backward();
        hidden.grad(&grads).expect("a gradient").sum()
    })?;
    let head_both = both;
    push(line("lm_head+loss", "forward+backward", 3.0 * head_flops, &head_both, o));

    // The whole model, then the whole step as the pretraining loop runs it.
    let model_flops = tokens * flops_per_token(c, s);
    let both = time::<B::InnerBackend>(device, r, || {
        let loss = lm_loss(&model, ids.clone(), ids.clone());
        let grads = loss.backward();
        model.embed_tokens.weight.grad(&grads).expect("a gradient").sum()
    })?;
    let model_both = both;
    push(line("model", "forward+backward", model_flops, &model_both, o));
    let mut optim = OnePassAdamW::default().with_weight_decay(0.01).init::<B, Llama<B>>();
    let mut stepped = Some(model.clone());
    let step = time::<B::InnerBackend>(device, r, || {
        let current = stepped.take().expect("a model");
        let loss = lm_loss(&current, ids.clone(), ids.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &current);
        // As the pretraining loop: the clip's factor folded into the update.
        let norm = global_norm(&current, &grads, current.kernels());
        optim.optim().grad_scale.set(clip_factor(norm, 1.0).unwrap_or(1.0) as f32);
        let next = optim.step(1e-5, current, grads);
        let probe = next.embed_tokens.weight.val().inner().slice([0..1, 0..1]).reshape([1]);
        stepped = Some(next);
        probe
    })?;
    push(line("step (with clip + AdamW)", "forward+backward+update", model_flops, &step, o));

    // How the pieces add up: layers and head against the measured model and step.
    let pieces_s = c.num_layers as f64 * layer_both.seconds + head_both.seconds;
    push(json!({
        "side": "ours", "backend": backend, "piece": "summary", "batch": b, "seq": s, "compute_dtype": compute_name(o.compute),
        "layers_ms": c.num_layers as f64 * layer_both.seconds * 1e3, "head_loss_ms": head_both.seconds * 1e3,
        "model_fwd_bwd_ms": model_both.seconds * 1e3, "rest_of_model_ms": (model_both.seconds - pieces_s) * 1e3,
        "clip_and_adamw_ms": (step.seconds - model_both.seconds) * 1e3, "step_ms": step.seconds * 1e3,
        "tokens_per_s": tokens / step.seconds, "model_tflops": model_flops / step.seconds / 1e12,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny_config;

    #[test]
    fn every_piece_is_timed_and_the_summary_adds_them_up() {
        let o = OpsBench { batch: 2, seq: 16, repeats: 2, compute: None, kernels: Kernels::default() };
        let mut lines = Vec::new();
        bench_ops::<crate::CpuAutodiff>(&tiny_config(), &o, &Default::default(), &mut |l| lines.push(l.clone())).unwrap();
        assert!(lines.iter().all(|l| l["backend"] == "ndarray"), "every line names the backend");
        let pieces: Vec<String> = lines.iter().map(|l| format!("{} {}", l["piece"].as_str().unwrap(), l["pass"].as_str().unwrap_or(""))).collect();
        assert_eq!(pieces.len(), 6 * 2 + 3 + 2 + 1 + 1 + 1 + 1, "{pieces:?}");
        for l in &lines[..lines.len() - 1] {
            assert!(l["ms"].as_f64().unwrap() > 0.0 && l["tflops"].as_f64().unwrap() > 0.0, "{l}");
        }
        let summary = lines.last().unwrap();
        assert_eq!(summary["piece"], "summary");
        let step = summary["step_ms"].as_f64().unwrap();
        assert!(step > 0.0 && summary["tokens_per_s"].as_f64().unwrap() > 0.0, "{summary}");
        // The whole model's forward + backward does at least one layer's work per layer.
        let layer = lines.iter().find(|l| l["piece"] == "decoder_layer" && l["pass"] == "forward+backward").unwrap();
        assert!(summary["model_fwd_bwd_ms"].as_f64().unwrap() > 0.0 && layer["ms"].as_f64().unwrap() > 0.0);
    }
}
