//! The token pick against a reference backend. `trainer compare-backends` runs it with the
//! CPU as the reference and CUDA as the backend under test; the tests here run it CPU
//! against CPU.

use super::{PickTokens, pick_tokens, row_key, step_hash};
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// `pick_tokens` on both backends, greedy and at temperatures 1 and 0.7, for `[rows,
/// vocab]` logits (ties in the greedy rows included): the picked ids, which must be equal
/// (a gap is a differing pick).
pub fn check_pick_tokens<R: PickTokens, T: PickTokens>([rows, vocab]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(41);
    // Logits on a grid of 1/8, so that greedy rows have ties the lowest id must win.
    let logits: Vec<f32> = (0..rows * vocab).map(|_| rng.i32(-40..40) as f32 / 8.0).collect();
    let keys: Vec<u32> = (0..rows).map(|row| step_hash(row_key(9, row), 3)).collect();
    fn run<B: PickTokens>(logits: &[f32], hashes: &[u32], [rows, vocab]: [usize; 2], device: &B::Device) -> Vec<Vec<f32>> {
        [0.0, 1.0, 0.7].iter().map(|&t| host(pick_tokens(tensor::<B, 2>(logits, [rows, vocab], device), hashes, t).float())).collect()
    }
    let expected = run::<R>(&logits, &keys, [rows, vocab], reference);
    let actual = run::<T>(&logits, &keys, [rows, vocab], tested);
    named_gaps(&format!("token pick [{rows}, {vocab}]"), &["greedy", "temperature 1", "temperature 0.7"], &expected, &actual)
}
