//! Rows of prompt + response packed into one right-padded id tensor, so that scoring and the
//! PPO update run a few rows per forward pass instead of one. With causal attention, padding
//! after a row's tokens changes nothing before it. Widths are rounded to `WIDTH_BUCKET`, so
//! batches share a few shapes (GPU kernels are compiled and tuned once per shape).
//!
//! The *window* is the span of positions whose logits (or values) predict response tokens:
//! position `p` predicts token `p + 1`, so row `i`'s response is predicted from positions
//! `prompt_i - 1 ..`. Per-token values of a row (log-probs, advantages, ...) are placed at
//! their offset in the window by [`Packed::spread`] and read back by [`Packed::gather`].

use std::ops::Range;

use burn::prelude::*;

use crate::generate::round_up;

/// Row widths and the window's start are multiples of this.
pub const WIDTH_BUCKET: usize = 32;

/// How a batch's rows are cut into micro-batches, the rows packed into one pass (a forward
/// pass in scoring, a forward and backward pass in the update). Memory only: every row's
/// results are the same however the rows are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicroBatching {
    /// Rows per micro-batch (`ppo.micro_batch`), the memory plan's at the longest rows.
    pub rows: usize,
    /// `ppo.micro_batch_by_positions`: a micro-batch of shorter rows takes more of them, as
    /// many as pad to no more positions than `rows` of the longest rows would (veRL's
    /// dynamic batch size), so short responses run in fuller passes within the plan's memory.
    pub by_positions: bool,
}

impl MicroBatching {
    /// Consecutive ranges of rows, in order, for rows of `widths` positions (prompt +
    /// response) when a row can be `longest` positions at most; every range holds one row
    /// at least.
    pub fn cut(&self, widths: &[usize], longest: usize) -> Vec<Range<usize>> {
        let rows = self.rows.max(1);
        if !self.by_positions {
            return (0..widths.len()).step_by(rows).map(|start| start..(start + rows).min(widths.len())).collect();
        }
        let budget = rows * round_up(longest.max(1), WIDTH_BUCKET);
        let (mut out, mut start, mut widest) = (Vec::new(), 0, 0);
        for (i, &width) in widths.iter().enumerate() {
            let width = round_up(width.max(1), WIDTH_BUCKET);
            if i > start && (i - start + 1) * widest.max(width) > budget {
                out.push(start..i);
                (start, widest) = (i, 0);
            }
            widest = widest.max(width);
        }
        if start < widths.len() {
            out.push(start..widths.len());
        }
        out
    }
}

/// A right-padded batch and where each row's response sits in the window.
pub struct Packed<B: Backend> {
    pub ids: Tensor<B, 2, Int>,
    /// The first position of the window.
    pub start: usize,
    /// The window's length: positions `start..start + len`.
    pub len: usize,
    /// Per row: the response's first prediction, relative to `start`.
    offsets: Vec<usize>,
    /// Per row: the response's length.
    lens: Vec<usize>,
}

impl<B: Backend> Packed<B> {
    /// Packs `(prompt, response)` rows (prompts non-empty), padding with `pad`.
    pub fn new(rows: &[(&[u32], &[u32])], pad: u32, device: &B::Device) -> Self {
        let width = round_up(rows.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(1), WIDTH_BUCKET);
        let first = rows.iter().map(|(p, _)| p.len() - 1).min().unwrap_or(0);
        let start = first / WIDTH_BUCKET * WIDTH_BUCKET;
        let ids: Vec<i64> = rows
            .iter()
            .flat_map(|(p, r)| p.iter().chain(r.iter()).map(|&t| t as i64).chain(std::iter::repeat_n(pad as i64, width - p.len() - r.len())))
            .collect();
        Packed {
            ids: Tensor::from_data(TensorData::new(ids, [rows.len(), width]), device),
            start,
            len: width - 1 - start,
            offsets: rows.iter().map(|(p, _)| p.len() - 1 - start).collect(),
            lens: rows.iter().map(|(_, r)| r.len()).collect(),
        }
    }

    /// The token each window position predicts: `[rows, len]`.
    pub fn targets(&self) -> Tensor<B, 2, Int> {
        self.ids.clone().narrow(1, self.start + 1, self.len)
    }

    /// `[rows, len]`: row `i`'s values `per_row(i)` (one per response token) at its response
    /// positions, 0 elsewhere.
    pub fn spread<'a>(&self, per_row: impl Fn(usize) -> &'a [f64]) -> Tensor<B, 2> {
        let mut data = vec![0f32; self.offsets.len() * self.len];
        for (i, (&offset, &n)) in self.offsets.iter().zip(&self.lens).enumerate() {
            let values = per_row(i);
            assert_eq!(values.len(), n, "row {i}: one value per response token");
            for (slot, &v) in data[i * self.len + offset..][..n].iter_mut().zip(values) {
                *slot = v as f32;
            }
        }
        Tensor::from_data(TensorData::new(data, [self.offsets.len(), self.len]), &self.ids.device())
    }

    /// 1 on every row's response positions, 0 on prompts and padding.
    pub fn mask(&self) -> Tensor<B, 2> {
        let ones: Vec<Vec<f64>> = self.lens.iter().map(|&n| vec![1.0; n]).collect();
        self.spread(|i| &ones[i])
    }

    /// Each row's response positions of a `[rows, len]` window tensor.
    pub fn gather(&self, t: Tensor<B, 2>) -> Vec<Vec<f64>> {
        let all = t.into_data().convert::<f64>().to_vec::<f64>().expect("f64 values");
        self.offsets.iter().zip(&self.lens).enumerate().map(|(i, (&offset, &n))| all[i * self.len + offset..][..n].to_vec()).collect()
    }

    /// Response tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.lens.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = crate::Cpu;

    #[test]
    fn micro_batches_take_rows_by_count_or_by_positions() {
        let by_rows = MicroBatching { rows: 3, by_positions: false };
        assert_eq!(by_rows.cut(&[10; 7], 100), vec![0..3, 3..6, 6..7]);
        assert_eq!(by_rows.cut(&[], 100), Vec::<Range<usize>>::new());
        // 2 rows of the longest (100 -> 128 positions) is a budget of 256 positions.
        let by_positions = MicroBatching { rows: 2, by_positions: true };
        assert_eq!(by_positions.cut(&[100, 100, 100], 100), vec![0..2, 2..3], "the longest rows: 2 a pass, as by count");
        // Rows of 20 pad to 32: 8 fit in 256; a row of 90 pads the next pass to 96 a row.
        let widths = [20, 20, 20, 20, 20, 20, 20, 20, 20, 90, 20, 20];
        assert_eq!(by_positions.cut(&widths, 100), vec![0..8, 8..10, 10..12]);
        // A row longer than `longest` (not expected) still gets a pass of its own.
        assert_eq!(by_positions.cut(&[20, 500, 20], 100), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn rows_are_right_padded_and_their_responses_found_again() {
        let (p0, r0) = (vec![1u32, 2, 3], vec![10u32, 11]);
        let (p1, r1) = (vec![4u32; 40], vec![12u32, 13, 14]);
        let packed = Packed::<B>::new(&[(&p0, &r0), (&p1, &r1)], 0, &Default::default());
        assert_eq!(packed.ids.dims(), [2, 64], "43 tokens round up to 64");
        assert_eq!((packed.start, packed.len), (0, 63));
        // Targets: the predicted tokens at the response positions are the responses.
        let targets = packed.targets().float();
        assert_eq!(packed.gather(targets), vec![vec![10.0, 11.0], vec![12.0, 13.0, 14.0]]);
        let spread = packed.spread(|i| if i == 0 { &[0.5, -1.0] } else { &[1.0, 2.0, 3.0] });
        assert_eq!(packed.gather(spread), vec![vec![0.5, -1.0], vec![1.0, 2.0, 3.0]]);
        assert_eq!(packed.mask().sum().into_scalar(), 5.0);
        assert_eq!(packed.tokens(), 5);
        // Long prompts start the window later, at a multiple of the bucket.
        let long = vec![7u32; 70];
        let packed = Packed::<B>::new(&[(&long, &r0), (&p1, &r1)], 0, &Default::default());
        assert_eq!((packed.start, packed.len), (32, 63));
        assert_eq!(packed.gather(packed.targets().float()), vec![vec![10.0, 11.0], vec![12.0, 13.0, 14.0]]);
    }
}
