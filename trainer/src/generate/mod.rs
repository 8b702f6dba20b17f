//! Batched generation with a key/value cache: prompts are left-padded to one length (a
//! multiple of `PROMPT_BUCKET`), the prefill runs them at once, then one token per step;
//! each row has its own positions (padding does not count) and never attends to its
//! padding. The cache is written in place and each step reads only its first positions
//! (rounded up to `CACHE_BUCKET`, so that a few shapes serve every step). The weights are
//! held in the compute dtype for the whole call (`Llama::for_generation`). Rows that
//! finished leave the batch once a quarter of it has (their cache rows are dropped), so
//! they stop costing every remaining step. Greedy picks, and sampling without a top-p cut
//! (PPO's rollouts), happen on the device (`sample`): only the chosen ids come back, not
//! `[rows, vocab]` logits each step, and a row's draws come from its own key (the seed and
//! its index in `prompts`), whatever other rows share the batch.

mod sample;

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::ModelBackend;
use crate::model::Llama;
use crate::ops::pick_tokens::row_key;

pub use self::sample::device_pick;
use self::sample::pick_rows;

/// Prompts are left-padded to a multiple of this, and the cache's capacity and the
/// positions a step reads are rounded up to a multiple of `CACHE_BUCKET`: a few shapes for
/// all batches, so GPU kernels compiled for one batch serve the next.
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

/// The rows still generating, in batch order, and what each one needs.
struct Live {
    /// Each slot's row in the caller's batch.
    row: Vec<usize>,
    /// Left padding of each slot's prompt.
    pad_len: Vec<usize>,
    /// Each slot's next position (its padding does not count).
    next_pos: Vec<usize>,
    /// Whether each slot's row has finished (it stays until the batch is compacted).
    done: Vec<bool>,
    /// Each slot's sampling stream (host draws).
    rngs: Vec<fastrand::Rng>,
    /// Each slot's key for device draws (`ops::pick_tokens::row_key`).
    keys: Vec<u32>,
}

impl Live {
    fn len(&self) -> usize {
        self.row.len()
    }

    /// Keeps the slots that are not done; returns their old slot indices.
    fn compact(&mut self) -> Vec<usize> {
        let kept: Vec<usize> = (0..self.len()).filter(|&i| !self.done[i]).collect();
        let take = |v: &[usize]| kept.iter().map(|&i| v[i]).collect::<Vec<usize>>();
        (self.row, self.pad_len, self.next_pos) = (take(&self.row), take(&self.pad_len), take(&self.next_pos));
        self.keys = kept.iter().map(|&i| self.keys[i]).collect();
        let mut rngs = std::mem::take(&mut self.rngs).into_iter().map(Some).collect::<Vec<_>>();
        self.rngs = kept.iter().map(|&i| rngs[i].take().expect("each slot kept once")).collect();
        self.done = vec![false; kept.len()];
        kept
    }

    /// `[slots, 1, queries, visible]` f32 of what each query sees: 0 for the row's own
    /// positions up to the query's, -inf for its padding and later positions. The queries
    /// sit at cache positions `first..first + queries`; a padding query sees only itself
    /// (its output is never used).
    fn bias<B: Backend>(&self, first: usize, queries: usize, visible: usize, device: &B::Device) -> Tensor<B, 4> {
        let mut values = Vec::with_capacity(self.len() * queries * visible);
        for &pad in &self.pad_len {
            for q in first..first + queries {
                let seen = |k: usize| if q < pad { k == q } else { k >= pad && k <= q };
                values.extend((0..visible).map(|k| if seen(k) { 0.0f32 } else { f32::NEG_INFINITY }));
            }
        }
        Tensor::from_data(TensorData::new(values, [self.len(), 1, queries, visible]), device)
    }
}

/// Generates continuations of `prompts` (token ids, each non-empty).
pub fn generate<B: ModelBackend>(model: &Llama<B>, prompts: &[Vec<u32>], s: &Sampling, keep_logits: bool) -> Result<Generated> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        bail!("generation needs at least one prompt, and no empty prompt");
    }
    let model = model.for_generation();
    let device = model.embed_tokens.weight.val().device();
    let b = prompts.len();
    let longest = round_up(prompts.iter().map(Vec::len).max().unwrap_or(0), PROMPT_BUCKET);
    let capacity = round_up(longest + s.max_new_tokens, CACHE_BUCKET);
    let visible = |filled: usize| round_up(filled, CACHE_BUCKET).min(capacity);
    let pad = s.eos.unwrap_or(0);
    let mut live = Live {
        row: (0..b).collect(),
        pad_len: prompts.iter().map(|p| longest - p.len()).collect(),
        next_pos: prompts.iter().map(Vec::len).collect(),
        done: vec![false; b],
        rngs: (0..b as u64).map(|row| fastrand::Rng::with_seed(s.seed ^ row.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect(),
        keys: (0..b).map(|row| row_key(s.seed, row)).collect(),
    };
    let mut caches = model.new_caches(capacity);
    let mut out = Generated { tokens: vec![Vec::new(); b], logits: vec![Vec::new(); b] };

    // Prefill: the padded prompts.
    let ids: Vec<i64> = prompts.iter().zip(&live.pad_len).flat_map(|(p, &n)| std::iter::repeat_n(pad as i64, n).chain(p.iter().map(|&t| t as i64))).collect();
    let positions: Vec<Vec<usize>> = live.pad_len.iter().map(|&n| (0..longest).map(|j| j.saturating_sub(n)).collect()).collect();
    let bias = live.bias(0, longest, visible(longest), &device);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, longest]), &device);
    let mut logits = model.forward_cached(ids, &positions, bias, &mut caches);

    let on_device = !keep_logits && (s.temperature <= 0.0 || s.top_p >= 1.0);
    for step in 0..s.max_new_tokens {
        let [slots, _, vocab] = logits.dims();
        let picked: Vec<u32> = if on_device {
            let ids = device_pick(logits.reshape([slots, vocab]), &live.keys, step, s.temperature).into_data().convert::<i64>().to_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            ids.into_iter().map(|t| t as u32).collect()
        } else {
            let host = logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if keep_logits {
                for (slot, row_logits) in host.chunks(vocab).enumerate() {
                    if !live.done[slot] {
                        out.logits[live.row[slot]].push(row_logits.to_vec());
                    }
                }
            }
            pick_rows(&host, vocab, &live.done, s, &mut live.rngs)
        };
        let mut feed = Vec::with_capacity(slots);
        for (slot, token) in picked.into_iter().enumerate() {
            if live.done[slot] {
                feed.push(pad as i64);
                continue;
            }
            out.tokens[live.row[slot]].push(token);
            live.done[slot] = s.eos == Some(token);
            feed.push(token as i64);
        }
        let finished = live.done.iter().filter(|&&d| d).count();
        if finished == slots || step + 1 == s.max_new_tokens {
            break;
        }
        // Rows that finished leave once they are a quarter of the batch: dropping them
        // copies the others' caches, which costs about as much as a few steps.
        if finished * 4 >= slots {
            let kept = live.compact();
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(kept.iter().map(|&i| i as i64).collect::<Vec<_>>(), [kept.len()]), &device);
            caches.iter_mut().for_each(|cache| cache.keep_rows(index.clone()));
            feed = kept.iter().map(|&i| feed[i]).collect();
        }
        // The new token sits at cache position `longest + step`.
        let position = longest + step;
        let bias = live.bias(position, 1, visible(position + 1), &device);
        let positions: Vec<Vec<usize>> = live.next_pos.iter().map(|&p| vec![p]).collect();
        live.next_pos.iter_mut().for_each(|p| *p += 1);
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(feed, [live.len(), 1]), &device);
        logits = model.forward_cached(ids, &positions, bias, &mut caches);
    }
    Ok(out)
}

