//! Each row's next token from its logits as one backend op: the argmax (greedy), or a draw
//! from softmax(logits / T) by the Gumbel-max trick (the argmax of logits / T plus Gumbel
//! noise is distributed as softmax(logits / T)).
//!
//! The noise of token `j` at decoding step `step` of a row comes from a counter-based hash
//! of the row's key (`row_key`: the sampling seed and the row's index in its batch), the
//! step (`step_hash`, made on the host for each row) and `j`, not from the backend's
//! generator: a row's draws depend on its key and its
//! logits only, never on which other rows share its batch, and the CPU and the GPU draw
//! the same noise. Ties go to the lowest token id.
//!
//! CUDA without fusion runs one kernel (`kernel`: one cube per row, the logits read once
//! in their dtype); the other backends pick on the host from the same formula.
//!
//! The picks come back to the host through a `PicksReader`: CUDA without fusion queues
//! their copy at once and waits only when asked (`early_read`), so that generation can
//! issue the next step before it waits for this one's tokens; the others read when asked.

pub mod check;

#[cfg(feature = "cuda")]
mod early_read;
#[cfg(feature = "cuda")]
mod kernel;

use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, TensorPrimitive};

/// A backend that picks each row's next token.
pub trait PickTokens: Backend {
    /// For `logits` `[rows, vocab]` (any float dtype) and `hashes` `[rows]` (each row's
    /// `step_hash` of its key and step, in `0..2^31`): each row's token, `[rows]`; greedy
    /// when `temperature` is 0. On the host unless the backend has its own.
    fn pick_tokens(logits: FloatTensor<Self>, hashes: IntTensor<Self>, temperature: f32) -> IntTensor<Self> {
        host_pick::<Self>(logits, hashes, temperature)
    }

    /// What brings this backend's picks to the host (on `device`).
    fn picks_reader(_device: &Self::Device) -> Box<dyn PicksReader<Self>> {
        Box::new(ReadWhenWaited)
    }
}

/// Picks on their way to the host: calling it waits for them.
pub type PendingPicks<'a> = Box<dyn FnOnce() -> anyhow::Result<Vec<u32>> + 'a>;

/// What brings picked tokens (`[rows]` ids) to the host.
pub trait PicksReader<B: Backend> {
    /// Starts bringing `picked` to the host; what it returns waits for them.
    fn start(&self, picked: Tensor<B, 1, Int>) -> PendingPicks<'_>;
}

/// Reads the picks when they are waited for.
pub struct ReadWhenWaited;

impl<B: Backend> PicksReader<B> for ReadWhenWaited {
    fn start(&self, picked: Tensor<B, 1, Int>) -> PendingPicks<'_> {
        Box::new(move || {
            let ids = picked.into_data().convert::<i64>().to_vec::<i64>().map_err(|e| anyhow::anyhow!("picked tokens: {e:?}"))?;
            Ok(ids.into_iter().map(|t| t as u32).collect())
        })
    }
}

/// [`PickTokens::pick_tokens`] on tensors: row `i` draws with `hashes[i]` (`step_hash`).
pub fn pick_tokens<B: PickTokens>(logits: Tensor<B, 2>, hashes: &[u32], temperature: f64) -> Tensor<B, 1, Int> {
    let device = logits.device();
    let hashes = Tensor::<B, 1, Int>::from_data(TensorData::new(hashes.iter().map(|&k| i64::from(k)).collect::<Vec<_>>(), [hashes.len()]), &device);
    Tensor::from_primitive(B::pick_tokens(logits.into_primitive().tensor(), hashes.into_primitive(), temperature.max(0.0) as f32))
}

/// The key of row `row` of a batch sampled with `seed` (31 bits, so that every backend's
/// integers hold it).
pub fn row_key(seed: u64, row: usize) -> u32 {
    // SplitMix64's finaliser of the seed offset by the row.
    let mut z = seed.wrapping_add((row as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 33) as u32
}

/// A 32-bit integer hash (an avalanching finaliser: each input bit flips each output bit
/// with probability about one half).
pub fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// The hash a row draws its tokens' noise from at a step (31 bits, as keys).
pub fn step_hash(key: u32, step: u32) -> u32 {
    mix(key ^ mix(step.wrapping_add(0x9e37_79b9))) >> 1
}

/// The Gumbel noise of token `token` from the row's step hash: `-ln(-ln u)` with `u` in
/// (0, 1) from the top 24 bits of the token's hash.
pub fn gumbel(step_hash: u32, token: u32) -> f32 {
    let u = ((mix(step_hash ^ token.wrapping_mul(0x9e37_79b9)) >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0);
    -(-u.ln()).ln()
}

/// One row's pick with its step hash: the highest `x / temperature + gumbel` (or `x`,
/// greedy), lowest id on ties.
pub fn pick_row(logits: &[f32], hash: u32, temperature: f32) -> u32 {
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (j, &x) in logits.iter().enumerate() {
        let score = if temperature > 0.0 { x / temperature + gumbel(hash, j as u32) } else { x };
        if score > best.0 {
            best = (score, j as u32);
        }
    }
    best.1
}

/// [`PickTokens::pick_tokens`] on the host.
pub(crate) fn host_pick<B: Backend>(logits: FloatTensor<B>, hashes: IntTensor<B>, temperature: f32) -> IntTensor<B> {
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    let hashes = Tensor::<B, 1, Int>::from_primitive(hashes);
    let (device, [rows, vocab]) = (logits.device(), logits.dims());
    let host: Vec<f32> = logits.cast(FloatDType::F32).into_data().convert::<f32>().to_vec().expect("f32 logits");
    let hashes: Vec<i64> = hashes.into_data().convert::<i64>().to_vec().expect("integer hashes");
    let picked: Vec<i64> = host.chunks(vocab.max(1)).zip(&hashes).map(|(row, &hash)| i64::from(pick_row(row, hash as u32, temperature))).collect();
    Tensor::<B, 1, Int>::from_data(TensorData::new(picked, [rows]), &device).into_primitive()
}

impl PickTokens for crate::Cpu {}
#[cfg(feature = "cuda")]
impl PickTokens for crate::CudaFused {}
impl<B: PickTokens, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> PickTokens for burn::backend::Autodiff<B, C> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The uniform draws behind the noise are spread evenly over (0, 1): a chi-squared test
    /// over 16 bins of 160,000 consecutive tokens, and no two steps or keys alike.
    #[test]
    fn the_noise_is_uniform_and_differs_between_steps_and_keys() {
        let draws = 160_000u32;
        let mut bins = [0u32; 16];
        let hash = step_hash(row_key(7, 3), 11);
        for j in 0..draws {
            let g = gumbel(hash, j);
            let u = (-(-g).exp()).exp();
            assert!(u > 0.0 && u < 1.0 && g.is_finite());
            bins[((u * 16.0) as usize).min(15)] += 1;
        }
        let expected = f64::from(draws) / 16.0;
        let chi2: f64 = bins.iter().map(|&n| (f64::from(n) - expected).powi(2) / expected).sum();
        // 15 degrees of freedom: the 99.9th percentile is 37.7.
        assert!(chi2 < 37.7, "chi-squared {chi2:.1} over {bins:?}");
        assert_ne!(step_hash(row_key(7, 3), 11), step_hash(row_key(7, 3), 12));
        assert_ne!(row_key(7, 3), row_key(7, 4));
        assert_ne!(row_key(7, 3), row_key(8, 3));
        assert!((0..1000).all(|row| row_key(u64::MAX, row) < 1 << 31 && step_hash(row_key(3, row), row as u32) < 1 << 31));
    }

    /// Greedy picks the first of equal maxima; a draw is the same whatever rows come with it.
    #[test]
    fn greedy_takes_the_lowest_id_and_draws_follow_their_row_alone() {
        assert_eq!(pick_row(&[0.5, 2.0, 2.0, -1.0], 1, 0.0), 1);
        let device = Default::default();
        let rows: Vec<f32> = (0..3 * 50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let logits = Tensor::<crate::Cpu, 2>::from_data(TensorData::new(rows.clone(), [3, 50]), &device);
        let hashes = [0, 1, 2].map(|row| step_hash(row_key(5, row), 4));
        let together: Vec<i64> = pick_tokens(logits, &hashes, 1.0).into_data().to_vec().unwrap();
        for (row, &hash) in hashes.iter().enumerate() {
            let alone = Tensor::<crate::Cpu, 2>::from_data(TensorData::new(rows[row * 50..(row + 1) * 50].to_vec(), [1, 50]), &device);
            let picked: Vec<i64> = pick_tokens(alone, &[hash], 1.0).into_data().to_vec().unwrap();
            assert_eq!(picked[0], together[row]);
        }
    }
}
