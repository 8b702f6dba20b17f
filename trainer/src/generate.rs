//! Batched generation with a key/value cache: prompts are left-padded to one length (a
//! multiple of `PROMPT_BUCKET`), the prefill runs them at once, then one token per step;
//! each row has its own positions (padding does not count) and never attends to its
//! padding. The cache has its full capacity from the prefill on, so every decoding step
//! has the same shapes. Greedy picks, and sampling without a top-p cut (PPO's rollouts),
//! happen on the device: only the chosen ids come back, not `[rows, vocab]` logits each
//! step. Sampling there is the Gumbel-max draw (the argmax of logits / T plus Gumbel noise
//! is distributed as softmax(logits / T)) from the backend's generator, seeded per call.
//! A top-p cut draws on the host instead, rows in parallel, each from its own seeded
//! stream.

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::ModelBackend;
use crate::model::Llama;

/// Prompts are left-padded to a multiple of this, and the cache's capacity is rounded up to
/// a multiple of `CACHE_BUCKET`: a few shapes for all batches, so GPU kernels compiled for
/// one batch serve the next.
pub const PROMPT_BUCKET: usize = 16;
const CACHE_BUCKET: usize = 64;

/// How to pick tokens.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub max_new_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// A row stops after this token.
    pub eos: Option<u32>,
}

/// What came out.
#[derive(Clone, Debug, Default)]
pub struct Generated {
    /// The new tokens of each row (ending with eos when it came).
    pub tokens: Vec<Vec<u32>>,
    /// With `keep_logits`: the logits each new token was chosen from, per row and step.
    pub logits: Vec<Vec<Vec<f32>>>,
}

/// `n` rounded up to a multiple of `m`.
pub fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// Generates continuations of `prompts` (token ids, each non-empty).
pub fn generate<B: ModelBackend>(model: &Llama<B>, prompts: &[Vec<u32>], s: &Sampling, keep_logits: bool) -> Result<Generated> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        bail!("generation needs at least one prompt, and no empty prompt");
    }
    let device = model.embed_tokens.weight.val().device();
    let b = prompts.len();
    let longest = round_up(prompts.iter().map(Vec::len).max().unwrap_or(0), PROMPT_BUCKET);
    let capacity = round_up(longest + s.max_new_tokens, CACHE_BUCKET);
    let pad_len: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let pad = s.eos.unwrap_or(0);
    let mut rngs: Vec<fastrand::Rng> = (0..b as u64).map(|row| fastrand::Rng::with_seed(s.seed ^ row.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
    let mut caches = model.new_caches(capacity);
    let mut out = Generated { tokens: vec![Vec::new(); b], logits: vec![Vec::new(); b] };
    let mut done = vec![false; b];

    // Prefill: the padded prompts.
    let ids: Vec<i64> = prompts.iter().zip(&pad_len).flat_map(|(p, &n)| std::iter::repeat_n(pad as i64, n).chain(p.iter().map(|&t| t as i64))).collect();
    let positions: Vec<Vec<usize>> = pad_len.iter().map(|&n| (0..longest).map(|j| j.saturating_sub(n)).collect()).collect();
    let mut hidden = Vec::with_capacity(b * longest * capacity);
    for &n in &pad_len {
        for q in 0..longest {
            // A padding query sees only itself (its output is never used).
            hidden.extend((0..capacity).map(|k| k > q || (k < n && k != q)));
        }
    }
    let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(hidden, [b, 1, longest, capacity]), &device);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, longest]), &device);
    let mut logits = model.forward_cached(ids, &positions, mask, &mut caches);
    let mut next_pos: Vec<usize> = prompts.iter().map(Vec::len).collect();

    let on_device = !keep_logits && (s.temperature <= 0.0 || s.top_p >= 1.0);
    if on_device && s.temperature > 0.0 {
        B::seed(&device, s.seed);
    }
    for step in 0..s.max_new_tokens {
        let picked = if on_device {
            let vocab = logits.dims()[2];
            let ids =
                device_pick(logits.reshape([b, vocab]), s.temperature).into_data().convert::<i64>().to_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            ids.into_iter().map(|t| t as u32).collect()
        } else {
            let vocab = logits.dims()[2];
            let host = logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if keep_logits {
                for (row, row_logits) in host.chunks(vocab).enumerate() {
                    if !done[row] {
                        out.logits[row].push(row_logits.to_vec());
                    }
                }
            }
            pick_rows(&host, vocab, &done, s, &mut rngs)
        };
        let mut feed = Vec::with_capacity(b);
        for (row, token) in picked.into_iter().enumerate() {
            if done[row] {
                feed.push(pad as i64);
                continue;
            }
            out.tokens[row].push(token);
            done[row] = s.eos == Some(token);
            feed.push(token as i64);
        }
        if done.iter().all(|&d| d) || step + 1 == s.max_new_tokens {
            break;
        }
        // The new token sits at cache position `longest + step`.
        let filled = longest + step + 1;
        let hidden: Vec<bool> = pad_len.iter().flat_map(|&n| (0..capacity).map(move |k| k < n || k >= filled)).collect();
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(hidden, [b, 1, 1, capacity]), &device);
        let positions: Vec<Vec<usize>> = next_pos.iter().map(|&p| vec![p]).collect();
        next_pos.iter_mut().for_each(|p| *p += 1);
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(feed, [b, 1]), &device);
        logits = model.forward_cached(ids, &positions, mask, &mut caches);
    }
    Ok(out)
}

/// One token per row of `logits` (`[rows, vocab]`) on the device: the argmax (greedy,
/// `temperature` 0), or a draw from softmax(logits / temperature) by the Gumbel-max trick.
pub fn device_pick<B: Backend>(logits: Tensor<B, 2>, temperature: f64) -> Tensor<B, 1, Int> {
    if temperature <= 0.0 {
        return logits.argmax(1).flatten(0, 1);
    }
    // U strictly inside (0, 1), so that -ln(-ln U) is finite: an f32 uniform can round to
    // 1.0, which would give one token an infinite score (over 33 million draws a step, a
    // few would).
    let u = Tensor::<B, 2>::random(logits.shape(), Distribution::Uniform(0.0, 1.0), &logits.device()).clamp(1e-20, 1.0 - f64::from(f32::EPSILON) / 2.0);
    let gumbel = u.log().neg().log().neg();
    (logits / temperature + gumbel).argmax(1).flatten(0, 1)
}

/// One token per row that is not done (a placeholder for the others), rows split over the
/// machine's cores: a draw over a 128k vocabulary costs about a millisecond per row.
fn pick_rows(host: &[f32], vocab: usize, done: &[bool], s: &Sampling, rngs: &mut [fastrand::Rng]) -> Vec<u32> {
    let rows = rngs.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows).max(1);
    let per_thread = rows.div_ceil(threads);
    let mut picked = vec![0u32; rows];
    std::thread::scope(|scope| {
        for ((chunk, rngs), (first, out)) in host.chunks(per_thread * vocab).zip(rngs.chunks_mut(per_thread)).zip(picked.chunks_mut(per_thread).enumerate()) {
            let first = first * per_thread;
            scope.spawn(move || {
                for (i, ((row_logits, rng), slot)) in chunk.chunks(vocab).zip(rngs.iter_mut()).zip(out.iter_mut()).enumerate() {
                    if !done[first + i] {
                        *slot = pick(row_logits, s, rng);
                    }
                }
            });
        }
    });
    picked
}

/// Greedy, or a draw from the temperature-scaled distribution cut to its top-p mass.
fn pick(logits: &[f32], s: &Sampling, rng: &mut fastrand::Rng) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0 as u32;
    if s.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    if s.top_p >= 1.0 {
        // No cut: one pass over the vocabulary, no sort.
        let weights: Vec<f64> = logits.iter().map(|&x| ((x as f64 - max) / s.temperature).exp()).collect();
        let mut draw = rng.f64() * weights.iter().sum::<f64>();
        for (i, &w) in weights.iter().enumerate() {
            if draw < w {
                return i as u32;
            }
            draw -= w;
        }
        return argmax();
    }
    let mut probs: Vec<(usize, f64)> = logits.iter().enumerate().map(|(i, &x)| (i, ((x as f64 - max) / s.temperature).exp())).collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0.0;
    let cut = probs.iter().position(|p| {
        kept += p.1;
        kept >= s.top_p
    });
    probs.truncate(cut.map_or(probs.len(), |i| i + 1));
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut draw = rng.f64() * mass;
    for &(i, p) in &probs {
        if draw < p {
            return i as u32;
        }
        draw -= p;
    }
    probs.last().map(|p| p.0 as u32).unwrap_or_else(argmax)
}
