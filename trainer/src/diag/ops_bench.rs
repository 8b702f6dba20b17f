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
    let model = Llama::<B>::random(config, device).with_compute(o.compute).with_kernels(o.kernels);
    let mut bench = Bench::<B> { c: config, o, device, backend: B::InnerBackend::name(device), emit };
    bench.projections()?;
    let attention_flops = bench.attention(&model)?;
    let layer = bench.layer(&model, attention_flops)?;
    let ids = Tensor::<B, 2, Int>::random([o.batch, o.seq], Distribution::Uniform(3.0, config.vocab_size as f64), device);
    let head = bench.head(&model, &ids)?;
    let (whole, step) = bench.model_and_step(model, &ids)?;
    bench.summary([&layer, &head, &whole, &step]);
    Ok(())
}

/// One benchmark run: the model's shape, the settings, the device and where lines go.
struct Bench<'a, B: TrainBackend> {
    c: &'a ModelConfig,
    o: &'a OpsBench,
    device: &'a B::Device,
    backend: String,
    emit: &'a mut dyn FnMut(&Value),
}

impl<B: TrainBackend> Bench<'_, B> {
    fn push(&mut self, piece: &str, pass: &str, flops: f64, t: &Timing) {
        let line = json_line(piece, pass, flops, t, self.o, &self.backend);
        (self.emit)(&line);
    }

    fn tokens(&self) -> f64 {
        (self.o.batch * self.o.seq) as f64
    }

    fn normal(&self, dims: Vec<usize>) -> Tensor<B, 3> {
        Tensor::<B, 3>::random(dims, Distribution::Normal(0.0, 1.0), self.device)
    }

    /// Each distinct projection: x `[b, s, d_in]` times a weight `[d_in, d_out]`.
    fn projections(&mut self) -> Result<()> {
        let (c, o, device, r) = (self.c, self.o, self.device, self.o.repeats);
        let (h, q, kv, i) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let projections =
            [("q_proj", h, q), ("k_proj/v_proj", h, kv), ("o_proj", q, h), ("gate_proj/up_proj", h, i), ("down_proj", i, h), ("lm_head", h, c.vocab_size)];
        for (name, d_in, d_out) in projections {
            let x = self.normal(vec![o.batch, o.seq, d_in]);
            let w = Tensor::<B, 2>::random([d_in, d_out], Distribution::Normal(0.0, 0.02), device);
            let flops = 2.0 * self.tokens() * (d_in * d_out) as f64;
            let fwd = time::<B>(device, r, || linear_in(x.clone(), w.clone(), None, o.compute, o.kernels).sum())?;
            self.push(name, "forward", flops, &fwd);
            let (xg, wg) = (x.clone().require_grad(), w.clone().require_grad());
            let both = time::<B::InnerBackend>(device, r, || {
                let grads = linear_in(xg.clone(), wg.clone(), None, o.compute, o.kernels).sum().backward();
                xg.grad(&grads).expect("a gradient").sum() + wg.grad(&grads).expect("a gradient").sum()
            })?;
            self.push(name, "forward+backward", 3.0 * flops, &both);
        }
        Ok(())
    }

    /// Attention alone (queries, keys and values by head, causal): the model's op, then
    /// burn's composed path differentiated op by op, which the op replaced in training.
    /// Returns attention's FLOPs.
    fn attention(&mut self, model: &Llama<B>) -> Result<f64> {
        let (c, o, device, r) = (self.c, self.o, self.device, self.o.repeats);
        let (b, s) = (o.batch, o.seq);
        let attn = &model.layers[0].self_attn;
        let heads = |n: usize| Tensor::<B, 4>::random([b, n, s, c.head_dim], Distribution::Normal(0.0, 1.0), device);
        let (qs, ks, vs) = (heads(c.num_heads), heads(c.num_kv_heads), heads(c.num_kv_heads));
        let flops = 4.0 * (b * c.num_heads * s * s * c.head_dim) as f64;
        let fwd = time::<B>(device, r, || attn.attend(qs.clone(), ks.clone(), vs.clone(), None).sum())?;
        self.push("attention", "forward", flops, &fwd);
        let (qg, kg, vg) = (qs.require_grad(), ks.require_grad(), vs.require_grad());
        let both = |attend: &dyn Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>| {
            time::<B::InnerBackend>(device, r, || {
                let grads = attend(qg.clone(), kg.clone(), vg.clone()).sum().backward();
                qg.grad(&grads).expect("a gradient").sum() + kg.grad(&grads).expect("a gradient").sum() + vg.grad(&grads).expect("a gradient").sum()
            })
        };
        let ours = both(&|q, k, v| attn.attend(q, k, v, None))?;
        self.push("attention", "forward+backward", 3.0 * flops, &ours);
        let composed = both(&|q, k, v| {
            let (q, k, v) = (to_compute(q, o.compute), attn.repeat_kv(to_compute(k, o.compute)), attn.repeat_kv(to_compute(v, o.compute)));
            attention(q, k, v, None, None, attention_options(c.head_dim, true, false))
        })?;
        self.push("attention (burn's composed)", "forward+backward", 3.0 * flops, &composed);
        Ok(flops)
    }

    /// One decoder layer (norms, projections, RoPE, attention, MLP, residuals); its
    /// forward and backward.
    fn layer(&mut self, model: &Llama<B>, attention_flops: f64) -> Result<Timing> {
        let (c, o, device, r) = (self.c, self.o, self.device, self.o.repeats);
        let (h, q, kv, i) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let layer = &model.layers[0];
        let at = model.causal_positions(o.seq, device);
        let flops = 2.0 * self.tokens() * (h * q + 2 * h * kv + q * h + 3 * h * i) as f64 + attention_flops;
        let x = self.normal(vec![o.batch, o.seq, h]);
        let fwd = time::<B>(device, r, || layer.forward(x.clone(), &at, None).sum())?;
        self.push("decoder_layer", "forward", flops, &fwd);
        let xg = x.require_grad();
        let both = time::<B::InnerBackend>(device, r, || {
            let grads = layer.forward(xg.clone(), &at, None).sum().backward();
            xg.grad(&grads).expect("a gradient").sum()
        })?;
        self.push("decoder_layer", "forward+backward", 3.0 * flops, &both);
        Ok(both)
    }

    /// The LM head and the loss over the vocabulary, forward and backward.
    fn head(&mut self, model: &Llama<B>, ids: &Tensor<B, 2, Int>) -> Result<Timing> {
        let (c, o) = (self.c, self.o);
        let flops = 2.0 * self.tokens() * (c.hidden_size * c.vocab_size) as f64;
        let hidden = self.normal(vec![o.batch, o.seq, c.hidden_size]).require_grad();
        let both = time::<B::InnerBackend>(self.device, o.repeats, || {
            let grads = lm_loss_of_hidden(model, hidden.clone(), ids.clone()).backward();
            hidden.grad(&grads).expect("a gradient").sum()
        })?;
        self.push("lm_head+loss", "forward+backward", 3.0 * flops, &both);
        Ok(both)
    }

    /// The whole model, then the whole step as the pretraining loop runs it (the clip's
    /// factor folded into AdamW's update).
    fn model_and_step(&mut self, model: Llama<B>, ids: &Tensor<B, 2, Int>) -> Result<(Timing, Timing)> {
        let (device, r) = (self.device, self.o.repeats);
        let flops = self.tokens() * flops_per_token(self.c, self.o.seq);
        let whole = time::<B::InnerBackend>(device, r, || {
            let grads = lm_loss(&model, ids.clone(), ids.clone()).backward();
            model.embed_tokens.weight.grad(&grads).expect("a gradient").sum()
        })?;
        self.push("model", "forward+backward", flops, &whole);
        let mut optim = OnePassAdamW::default().with_weight_decay(0.01).init::<B, Llama<B>>();
        let mut stepped = Some(model);
        let step = time::<B::InnerBackend>(device, r, || {
            let current = stepped.take().expect("a model");
            let loss = lm_loss(&current, ids.clone(), ids.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &current);
            let norm = global_norm(&current, &grads, current.kernels());
            optim.optim().grad_scale.set(clip_factor(norm, 1.0).unwrap_or(1.0) as f32);
            let next = optim.step(1e-5, current, grads);
            let probe = next.embed_tokens.weight.val().inner().slice([0..1, 0..1]).reshape([1]);
            stepped = Some(next);
            probe
        })?;
        self.push("step (with clip + AdamW)", "forward+backward+update", flops, &step);
        Ok((whole, step))
    }

    /// How the pieces add up: layers and head against the measured model and step.
    fn summary(&mut self, [layer, head, whole, step]: [&Timing; 4]) {
        let (c, o) = (self.c, self.o);
        let tokens = self.tokens();
        let flops = tokens * flops_per_token(c, o.seq);
        let pieces_s = c.num_layers as f64 * layer.seconds + head.seconds;
        (self.emit)(&json!({
            "side": "ours", "backend": self.backend, "piece": "summary", "batch": o.batch, "seq": o.seq, "compute_dtype": compute_name(o.compute),
            "layers_ms": c.num_layers as f64 * layer.seconds * 1e3, "head_loss_ms": head.seconds * 1e3,
            "model_fwd_bwd_ms": whole.seconds * 1e3, "rest_of_model_ms": (whole.seconds - pieces_s) * 1e3,
            "clip_and_adamw_ms": (step.seconds - whole.seconds) * 1e3, "step_ms": step.seconds * 1e3,
            "tokens_per_s": tokens / step.seconds, "model_tflops": flops / step.seconds / 1e12,
        }));
    }
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
