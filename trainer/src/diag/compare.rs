//! Two backends on the same weights and inputs (the CPU as the reference, CUDA as the one
//! under test): the operations batched generation leans on, at the shapes of a rollout
//! batch (`check_ops`: the grouped-query head expansion, causal attention by burn's composed
//! path and the backend's fused kernel, attention over a cache with grouped heads, the
//! cache's in-place update, the LM head's argmax); the first decoder layer stage by stage (`trace_first_layer`); and the
//! whole model's logits and batched greedy generation (`compare_models`). Each training op's
//! own check lives in its folder (`ops/<op>/check.rs`); `compare_backends` runs them all in
//! the order `trainer compare-backends` prints them, so that a disagreement seen in the
//! whole model can be traced to one op.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::module::attention;

use crate::ModelBackend;
use crate::generate::{Sampling, generate};
use crate::model::Llama;
use crate::model::attention::{attention_options, attention_scale};
use crate::model::kv_cache::KvCache;
use crate::ops::attention::cached::cached_attention;
use crate::ops::check::{OpGap, TOLERANCE, host, relative_gap, tensor};
use crate::ops::kernels::Kernels;
use crate::ops::kv_write::Placement;

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

/// Runs every op on both backends with the same seeded inputs.
pub fn check_ops<R: ModelBackend, T: ModelBackend>(s: OpShapes, reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
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
    let mut add = |op: String, a: Vec<f32>, t: Vec<f32>| gaps.push(OpGap::new(op, &a, &t));

    add(
        "gqa head expansion (expand + reshape)".into(),
        run_repeat_kv::<R>(&k_cache, [b, kv, tk, d], h, reference),
        run_repeat_kv::<T>(&k_cache, [b, kv, tk, d], h, tested),
    );
    for (fused, path) in [(false, "composed"), (true, "fused kernel")] {
        let case = AttentionCase { q: &q_pre, mask: None, tq, keys: tq, fused };
        let a = run_attention::<R>(&case, (&k_cache, &v_cache), s, reference);
        add(format!("causal attention, prefill ({path})"), a, run_attention::<T>(&case, (&k_cache, &v_cache), s, tested));
    }
    let mut over_cache = |what: &str, q: &[f32], mask: &[bool], tq: usize| {
        let case = AttentionCase { q, mask: Some(mask), tq, keys: tk, fused: false };
        let a = run_cached_attention::<R>(&case, (&k_cache, &v_cache), s, reference);
        add(format!("attention over the cache, grouped heads, {what}"), a, run_cached_attention::<T>(&case, (&k_cache, &v_cache), s, tested));
    };
    over_cache("prefill", &q_pre, &prefill_mask, tq);
    over_cache("one decoding step", &q_step, &step_mask, 1);
    add(
        "cache write (in place, a position a row) and the view of its first positions".into(),
        run_cache_update::<R>(&k_cache, &k_new, s, reference),
        run_cache_update::<T>(&k_cache, &k_new, s, tested),
    );
    add("LM head on the last position + argmax".into(), run_last_argmax::<R>(&hidden, &head, s, reference), run_last_argmax::<T>(&hidden, &head, s, tested));
    let logits = floats(&mut rng, b * vocab);
    add("argmax over the vocabulary".into(), run_argmax::<R>(&logits, [b, vocab], reference), run_argmax::<T>(&logits, [b, vocab], tested));
    gaps
}

/// The first decoder layer taken apart, on both backends for the same ids (`[batch, seq]`):
/// the gap after each stage (every stage computed from the ids again, as the model chains
/// it), then the final hidden states and the logits, so that a whole-model disagreement
/// points at the first stage that shows it.
pub fn trace_first_layer<R: ModelBackend, T: ModelBackend>(reference: &Llama<R>, tested: &Llama<T>, ids: &[i64], shape: [usize; 2]) -> Vec<OpGap> {
    let expected = stages(reference, ids, shape);
    stages(tested, ids, shape).into_iter().zip(expected).map(|((op, t), (_, r))| OpGap::new(op.into(), &r, &t)).collect()
}

fn stages<B: ModelBackend>(m: &Llama<B>, ids: &[i64], [b, t]: [usize; 2]) -> Vec<(&'static str, Vec<f32>)> {
    let device = m.embed_tokens.weight.val().device();
    let ids = || Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [b, t]), &device);
    let at = m.causal_positions(t, &device);
    let layer = &m.layers[0];
    let attn = &layer.self_attn;
    let embedded = || m.embed_tokens.forward(ids());
    let normed = || crate::ops::rms_norm::apply_rms_norm(&layer.input_layernorm, embedded());
    let projected = || attn.project(normed(), &at);
    vec![
        ("embedding", host(embedded())),
        ("input norm", host(normed())),
        ("q projection", host(attn.q_proj.forward(normed()))),
        ("q by head, rope", host(projected().0)),
        ("k by head, rope", host(projected().1)),
        ("v by head", host(projected().2)),
        ("k heads repeated (gqa)", host(attn.repeat_kv(projected().1))),
        (
            "causal attention",
            host({
                let (q, k, v) = projected();
                attn.attend(q, k, v, None)
            }),
        ),
        ("attention block", host(attn.forward(normed(), &at, None))),
        ("layer 0", host(layer.forward(embedded(), &at, None))),
        ("final hidden states", host(m.hidden(ids()))),
        ("logits", host(m.forward(ids()))),
    ]
}

/// Whole-model agreement: the logits of a fixed batch, then batched, left-padded greedy
/// generation with the cache at 6 and 256 rows. Reports one line per check as it
/// finishes; every check runs, and an error names the first that failed (logits beyond a
/// relative gap of 1e-3, or a row generated differently where the reference's choice led
/// the other token by more than that: closer, it is a near-tie rounding decides).
pub fn compare_models<R: ModelBackend, T: ModelBackend>(reference: &Llama<R>, tested: &Llama<T>, mut report: impl FnMut(&str)) -> Result<()> {
    let vocab = reference.config.vocab_size as i64;
    let ids: Vec<i64> = (0..2 * 24).map(|i| (i * 7919 + 3) % vocab).collect();
    let logits = |ids: Vec<i64>| -> (Vec<f32>, Vec<f32>) {
        let r = reference.forward(Tensor::from_data(TensorData::new(ids.clone(), [2, 24]), &reference.embed_tokens.weight.val().device()));
        let t = tested.forward(Tensor::from_data(TensorData::new(ids, [2, 24]), &tested.embed_tokens.weight.val().device()));
        (host(r), host(t))
    };
    let (a, b) = logits(ids);
    let gap = relative_gap(&a, &b);
    report(&format!("logits of 2 x 24 tokens: max relative gap {gap:.3e} over {} values", a.len()));
    // Every check runs (a logits gap beyond the tolerance may still generate the same
    // tokens); the first failure is the verdict.
    let mut failures = Vec::new();
    if gap > TOLERANCE {
        failures.push(format!("the logits differ by {gap:.3e}: the backends disagree"));
    }
    let sampling = Sampling { max_new_tokens: 12, temperature: 0.0, top_p: 1.0, seed: 0, eos: None };
    for rows in [6u32, 256] {
        let prompts: Vec<Vec<u32>> = (0..rows).map(|r| (0..3 + (r % 7) * 15).map(|i| ((r * 31 + i * 17 + 1) as i64 % vocab) as u32).collect()).collect();
        let expected = generate(reference, &prompts, &sampling, false)?.tokens;
        let got = generate(tested, &prompts, &sampling, false)?.tokens;
        let same = expected.iter().zip(&got).filter(|(a, b)| a == b).count();
        // A row that parts where the reference's top two logits were within the tolerance
        // is a near-tie that rounding decides, not a disagreement. The reference's logits
        // there come from one forward pass of that row's prompt and common prefix (only
        // the rows that part; keeping every step's logits of 256 rows would take gigabytes
        // at a 128k vocabulary).
        let parted: Vec<(usize, f32)> = expected
            .iter()
            .zip(&got)
            .enumerate()
            .filter_map(|(row, (e, g))| {
                let at = e.iter().zip(g).position(|(a, b)| a != b)?;
                let logits = next_token_logits(reference, prompts[row].iter().chain(&e[..at]));
                Some((row, tie_gap(&logits, e[at], g[at])))
            })
            .collect();
        let near_ties = parted.iter().filter(|(_, gap)| *gap <= TOLERANCE).count();
        report(&format!(
            "greedy generation of {rows} left-padded prompts: {same} rows equal, {near_ties} parted at a near-tie (top two logits within {TOLERANCE:.0e} relative)"
        ));
        if let Some(&(row, gap)) = parted.iter().find(|(_, gap)| *gap > TOLERANCE) {
            failures.push(format!(
                "{rows} rows generated: row {row} differs where the reference's choice led by {gap:.3e} (relative): {:?} (reference) vs {:?}",
                expected[row], got[row]
            ));
        }
    }
    match failures.into_iter().next() {
        Some(first) => anyhow::bail!(first),
        None => Ok(()),
    }
}

/// The model's logits for the token after `ids` (one row, no cache).
fn next_token_logits<'a, B: ModelBackend>(model: &Llama<B>, ids: impl Iterator<Item = &'a u32>) -> Vec<f32> {
    let ids: Vec<i64> = ids.map(|&id| id as i64).collect();
    let len = ids.len();
    host(model.forward_range(Tensor::from_data(TensorData::new(ids, [1, len]), &model.embed_tokens.weight.val().device()), len - 1, 1))
}

/// How far the reference's choice `chosen` led the tested backend's `other` in the
/// reference's `logits`, relative to their largest magnitude (infinite for a token out of
/// range).
fn tie_gap(logits: &[f32], chosen: u32, other: u32) -> f32 {
    let scale = logits.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    match (logits.get(chosen as usize), logits.get(other as usize)) {
        (Some(a), Some(b)) => (a - b).abs() / scale,
        _ => f32::INFINITY,
    }
}

fn run_repeat_kv<B: Backend>(x: &[f32], [b, n, t, d]: [usize; 4], heads: usize, device: &B::Device) -> Vec<f32> {
    let rep = heads / n;
    host(tensor::<B, 4>(x, [b, n, t, d], device).unsqueeze_dim::<5>(2).expand([b, n, rep, t, d]).reshape([b, n * rep, t, d]))
}

/// One attention case of `check_ops`: `tq` queries over the first `keys` positions of the
/// cache, causal or under `mask`, by burn's fused kernel or its composed path.
struct AttentionCase<'a> {
    q: &'a [f32],
    mask: Option<&'a [bool]>,
    tq: usize,
    keys: usize,
    fused: bool,
}

fn run_attention<B: Backend>(case: &AttentionCase, (k, v): (&[f32], &[f32]), s: OpShapes, device: &B::Device) -> Vec<f32> {
    let AttentionCase { q, mask, tq, keys, fused } = *case;
    let OpShapes { batch: b, heads: h, kv_heads: kv, head_dim: d, capacity, .. } = s;
    let rep = h / kv;
    let expand = |x: &[f32]| {
        tensor::<B, 4>(x, [b, kv, capacity, d], device).narrow(2, 0, keys).unsqueeze_dim::<5>(2).expand([b, kv, rep, keys, d]).reshape([b, h, keys, d])
    };
    let q = tensor::<B, 4>(&q[..b * h * tq * d], [b, h, tq, d], device);
    let out = match mask {
        None => attention(q, expand(k), expand(v), None, None, attention_options(d, true, fused)),
        Some(m) => {
            let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(m.to_vec(), [b, 1, tq, keys]), device).expand([b, h, tq, keys]);
            attention(q, expand(k), expand(v), Some(mask), None, attention_options(d, false, fused))
        }
    };
    host(out)
}

fn run_cached_attention<B: ModelBackend>(case: &AttentionCase, (k, v): (&[f32], &[f32]), s: OpShapes, device: &B::Device) -> Vec<f32> {
    let AttentionCase { q, mask, tq, keys, .. } = *case;
    let OpShapes { batch: b, heads: h, kv_heads: kv, head_dim: d, capacity, .. } = s;
    let bias: Vec<f32> = mask.expect("a mask").iter().map(|&hidden| if hidden { f32::NEG_INFINITY } else { 0.0 }).collect();
    let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [b, 1, tq, keys]), device);
    let (k, v) = (tensor::<B, 4>(k, [b, kv, capacity, d], device).narrow(2, 0, keys), tensor::<B, 4>(v, [b, kv, capacity, d], device).narrow(2, 0, keys));
    let q = tensor::<B, 4>(&q[..b * h * tq * d], [b, h, tq, d], device);
    host(cached_attention(q, k, v, bias, attention_scale(d), Kernels::default()))
}

fn run_cache_update<B: ModelBackend>(cache: &[f32], new: &[f32], s: OpShapes, device: &B::Device) -> Vec<f32> {
    let OpShapes { batch: b, kv_heads: kv, head_dim: d, prompt, capacity, .. } = s;
    // The cache holds the prompt in blocks of 16, row r's blocks interleaved with the
    // others' (r, r + b, r + 2b, ...); every row's new token goes at its own position (row
    // r at `prompt - r % 8`), and reading the rows back shows one position more.
    const BLOCK: usize = 16;
    let per_row = capacity.div_ceil(BLOCK);
    let tables = |rows: &mut dyn Iterator<Item = usize>| -> Vec<Vec<usize>> { rows.map(|r| (0..per_row).map(|j| r + b * j).collect()).collect() };
    let mut layer = KvCache::<B>::new(b * per_row, BLOCK);
    let filled = || tensor::<B, 4>(cache, [b, kv, capacity, d], device).narrow(2, 0, prompt);
    layer.write(filled(), filled(), &Placement::new(tables(&mut (0..b)), vec![0; b], device));
    let new = tensor::<B, 4>(new, [b, kv, 1, d], device);
    layer.write(new.clone(), new, &Placement::new(tables(&mut (0..b).rev()), (0..b).map(|r| prompt - (b - 1 - r) % 8).collect(), device));
    host(layer.rows(&Placement::new(tables(&mut (0..b)), vec![0; b], device), prompt + 2).0)
}

fn run_last_argmax<B: Backend>(hidden: &[f32], head: &[f32], s: OpShapes, device: &B::Device) -> Vec<f32> {
    let OpShapes { batch: b, heads, head_dim, prompt, vocab, .. } = s;
    let width = heads * head_dim;
    let last = tensor::<B, 3>(hidden, [b, prompt, width], device).narrow(1, prompt - 1, 1);
    let weight = tensor::<B, 2>(head, [vocab, width], device);
    let logits = burn::tensor::module::linear(last, weight.transpose(), None);
    host(logits.reshape([b, vocab]).argmax(1).float())
}

fn run_argmax<B: Backend>(logits: &[f32], shape: [usize; 2], device: &B::Device) -> Vec<f32> {
    host(tensor::<B, 2>(logits, shape, device).argmax(1).float())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_tie_is_told_from_a_clear_choice() {
        let logits = [4.0, 3.9999, -8.0, 1.0];
        assert!(tie_gap(&logits, 0, 1) <= TOLERANCE, "0.0001 of 8 apart");
        assert!((tie_gap(&logits, 0, 3) - 3.0 / 8.0).abs() < 1e-6);
        assert!(tie_gap(&logits, 0, 9).is_infinite(), "a token out of the vocabulary");
    }

    #[test]
    fn a_backend_agrees_with_itself_and_gaps_are_relative() {
        let s = OpShapes { batch: 3, heads: 4, kv_heads: 2, head_dim: 8, prompt: 5, capacity: 9, vocab: 11 };
        let gaps = check_ops::<crate::Cpu, crate::Cpu>(s, &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 8);
        for g in &gaps {
            assert!(g.gap == 0.0, "{g:?}");
        }
        assert_eq!(relative_gap(&[1.0, -2.0], &[1.0, -1.0]), 0.5);
        assert!(relative_gap(&[1.0], &[1.0, 2.0]).is_infinite());
    }

    #[test]
    fn models_compare_equal_to_themselves_and_unequal_to_another() {
        let device = Default::default();
        let config = crate::model::tests::tiny_config();
        let model = Llama::<crate::Cpu>::random(&config, &device);
        let mut lines = Vec::new();
        compare_models(&model, &model, |l| lines.push(l.to_string())).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[2].contains("256 rows equal"), "{lines:?}");
        let trace = trace_first_layer(&model, &model, &[1, 5, 9, 2, 7, 3], [2, 3]);
        assert_eq!(trace.len(), 12);
        assert!(trace.iter().all(|g| g.gap == 0.0), "{trace:?}");
        let other = Llama::<crate::Cpu>::random(&config, &device);
        let err = compare_models(&model, &other, |_| ()).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
        let trace = trace_first_layer(&model, &other, &[1, 5, 9, 2, 7, 3], [2, 3]);
        assert!(trace.iter().all(|g| g.gap > 0.0), "{trace:?}");
    }
}
