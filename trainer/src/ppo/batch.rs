//! Rows of prompt + response packed into one right-padded id tensor, so that scoring and the
//! PPO update run a few rows per forward pass instead of one. With causal attention, padding
//! after a row's tokens changes nothing before it. Widths are rounded to `WIDTH_BUCKET`, so
//! batches share a few shapes (GPU kernels are compiled and tuned once per shape).
//!
//! The *window* is the span of positions whose logits (or values) predict response tokens:
//! position `p` predicts token `p + 1`, so row `i`'s response is predicted from positions
//! `prompt_i - 1 ..`. Per-token values of a row (log-probs, advantages, ...) are placed at
//! their offset in the window by [`Packed::spread`] and read back by [`Packed::gather`].

use burn::prelude::*;

use crate::generate::round_up;

/// Row widths and the window's start are multiples of this.
pub const WIDTH_BUCKET: usize = 32;

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
