//! Op-by-op agreement between two backends (the CPU as the reference, CUDA as the one under
//! test) for the operations batched generation leans on, at the shapes of a rollout batch:
//! the grouped-query head expansion, causal and masked attention (prefill and one decoding
//! step over a full-capacity cache), the cache update, and the LM head on the last
//! position with the greedy argmax. `trainer compare-backends` prints each gap, so that a disagreement
//! seen in whole-model generation can be traced to one op.

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// The shapes to check at.
#[derive(Clone, Copy, Debug)]
pub struct OpShapes {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Prompt length (prefill queries).
    pub prompt: usize,
    /// Cache capacity (keys).
    pub capacity: usize,
    pub vocab: usize,
}

/// One op's result: the largest gap relative to the reference's largest magnitude.
#[derive(Clone, Debug)]
pub struct OpGap {
    pub op: &'static str,
    pub gap: f32,
}

/// Runs every op on both backends with the same seeded inputs.
pub fn check_ops<R: Backend, T: Backend>(s: OpShapes, reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(17);
    let OpShapes { batch: b, heads: h, kv_heads: kv, head_dim: d, prompt: tq, capacity: tk, vocab } = s;
    let floats = |rng: &mut fastrand::Rng, n: usize| -> Vec<f32> { (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let (q_pre, k_cache, v_cache) = (floats(&mut rng, b * h * tq * d), floats(&mut rng, b * kv * tk * d), floats(&mut rng, b * kv * tk * d));
    let q_step = floats(&mut rng, b * h * d);
    let k_new = floats(&mut rng, b * kv * d);
    let hidden = floats(&mut rng, b * tq * h * d);
    let head = floats(&mut rng, vocab * h * d);
    // Left padding of 0..8 positions per row; the decoding step sees the prompt plus one token.
    let pads: Vec<usize> = (0..b).map(|_| rng.usize(0..8.min(tq))).collect();
    let prefill_mask: Vec<bool> = pads.iter().flat_map(|&n| (0..tq).flat_map(move |q| (0..tk).map(move |k| k > q || (k < n && k != q)))).collect();
    let step_mask: Vec<bool> = pads.iter().flat_map(|&n| (0..tk).map(move |k| k < n || k > tq)).collect();

    let mut gaps = Vec::new();
    let mut add = |op: &'static str, a: Vec<f32>, t: Vec<f32>| gaps.push(OpGap { op, gap: relative_gap(&a, &t) });

    add(
        "gqa head expansion (expand + reshape)",
        run_repeat_kv::<R>(&k_cache, [b, kv, tk, d], h, reference),
        run_repeat_kv::<T>(&k_cache, [b, kv, tk, d], h, tested),
    );
    add(
        "causal attention, prefill",
        run_attention::<R>(&q_pre, &k_cache, &v_cache, None, s, tq, tq, reference),
        run_attention::<T>(&q_pre, &k_cache, &v_cache, None, s, tq, tq, tested),
    );
    add(
        "masked attention, prefill over the cache",
        run_attention::<R>(&q_pre, &k_cache, &v_cache, Some(&prefill_mask), s, tq, tk, reference),
        run_attention::<T>(&q_pre, &k_cache, &v_cache, Some(&prefill_mask), s, tq, tk, tested),
    );
    add(
        "masked attention, one decoding step",
        run_attention::<R>(&q_step, &k_cache, &v_cache, Some(&step_mask), s, 1, tk, reference),
        run_attention::<T>(&q_step, &k_cache, &v_cache, Some(&step_mask), s, 1, tk, tested),
    );
    add("cache update (cat with zeros + add)", run_cache_update::<R>(&k_cache, &k_new, s, reference), run_cache_update::<T>(&k_cache, &k_new, s, tested));
    add("LM head on the last position + argmax", run_last_argmax::<R>(&hidden, &head, s, reference), run_last_argmax::<T>(&hidden, &head, s, tested));
    gaps
}

/// `max |a - t| / max |a|` (0 when both are empty; infinite when the lengths differ).
fn relative_gap(a: &[f32], t: &[f32]) -> f32 {
    if a.len() != t.len() {
        return f32::INFINITY;
    }
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    a.iter().zip(t).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn tensor<B: Backend, const D: usize>(data: &[f32], shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 values")
}

fn run_repeat_kv<B: Backend>(x: &[f32], [b, n, t, d]: [usize; 4], heads: usize, device: &B::Device) -> Vec<f32> {
    let rep = heads / n;
    host(tensor::<B, 4>(x, [b, n, t, d], device).unsqueeze_dim::<5>(2).expand([b, n, rep, t, d]).reshape([b, n * rep, t, d]))
}

#[allow(clippy::too_many_arguments)]
fn run_attention<B: Backend>(q: &[f32], k: &[f32], v: &[f32], mask: Option<&[bool]>, s: OpShapes, tq: usize, keys: usize, device: &B::Device) -> Vec<f32> {
    let OpShapes { batch: b, heads: h, kv_heads: kv, head_dim: d, capacity, .. } = s;
    let rep = h / kv;
    let expand = |x: &[f32]| {
        tensor::<B, 4>(x, [b, kv, capacity, d], device).narrow(2, 0, keys).unsqueeze_dim::<5>(2).expand([b, kv, rep, keys, d]).reshape([b, h, keys, d])
    };
    let q = tensor::<B, 4>(&q[..b * h * tq * d], [b, h, tq, d], device);
    let out = match mask {
        None => attention(q, expand(k), expand(v), None, None, AttentionModuleOptions { is_causal: true, ..Default::default() }),
        Some(m) => {
            let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(m.to_vec(), [b, 1, tq, keys]), device).expand([b, h, tq, keys]);
            attention(q, expand(k), expand(v), Some(mask), None, AttentionModuleOptions::default())
        }
    };
    host(out)
}

fn run_cache_update<B: Backend>(cache: &[f32], new: &[f32], s: OpShapes, device: &B::Device) -> Vec<f32> {
    let OpShapes { batch: b, kv_heads: kv, head_dim: d, prompt, capacity, .. } = s;
    // The cache holds the prompt; the new token goes at position `prompt`.
    let filled = tensor::<B, 4>(cache, [b, kv, capacity, d], device).narrow(2, 0, prompt);
    let zeros = |n: usize| Tensor::<B, 4>::zeros([b, kv, n, d], device);
    let old = Tensor::cat(vec![filled, zeros(capacity - prompt)], 2);
    let placed = Tensor::cat(vec![zeros(prompt), tensor::<B, 4>(new, [b, kv, 1, d], device), zeros(capacity - prompt - 1)], 2);
    host(old + placed)
}

fn run_last_argmax<B: Backend>(hidden: &[f32], head: &[f32], s: OpShapes, device: &B::Device) -> Vec<f32> {
    let OpShapes { batch: b, heads, head_dim, prompt, vocab, .. } = s;
    let width = heads * head_dim;
    let last = tensor::<B, 3>(hidden, [b, prompt, width], device).narrow(1, prompt - 1, 1);
    let weight = tensor::<B, 2>(head, [vocab, width], device);
    let logits = burn::tensor::module::linear(last, weight.transpose(), None);
    host(logits.reshape([b, vocab]).argmax(1).float())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_agrees_with_itself_and_gaps_are_relative() {
        let s = OpShapes { batch: 3, heads: 4, kv_heads: 2, head_dim: 8, prompt: 5, capacity: 9, vocab: 11 };
        let gaps = check_ops::<crate::Cpu, crate::Cpu>(s, &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 6);
        for g in &gaps {
            assert!(g.gap == 0.0, "{g:?}");
        }
        assert_eq!(relative_gap(&[1.0, -2.0], &[1.0, -1.0]), 0.5);
        assert!(relative_gap(&[1.0], &[1.0, 2.0]).is_infinite());
    }
}
