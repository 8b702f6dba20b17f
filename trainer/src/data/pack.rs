//! Sequences into fixed-length windows. Each epoch shuffles the sequences (seeded by seed
//! and epoch); then either one sequence per window, right-padded (the study's SFT: no
//! attention across examples; a sequence longer than a window is an error there), or,
//! packed, the sequences concatenated and cut into windows, the last one padded, attention
//! crossing sequence boundaries inside a window as in packed pretraining. Labels are the
//! ids, or `-100` where no loss is taken (the prompt in SFT, padding).
//!
//! A micro-batch runs only as many positions as its longest window fills
//! (`positions_to_run`, rounded up to a multiple of 128, at most the window): with right
//! padding and causal attention, the positions after a row's last token change nothing
//! before it, and they carry no loss.

use crate::data::set::Sequence;
use crate::loss::IGNORE;

/// What the loss is taken on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Completions only (the study's continued pretraining).
    Sft,
    /// Every token.
    Lm,
}

/// One window: `seq_len` ids and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub ids: Vec<i64>,
    pub labels: Vec<i64>,
    /// Positions before the padding.
    pub filled: usize,
}

/// The multiple a micro-batch's positions are rounded up to (few distinct shapes, and the
/// flash kernels' whole blocks).
pub const POSITIONS_MULTIPLE: usize = 128;

/// The positions a micro-batch of windows of `seq_len` runs: its longest window's filled
/// positions rounded up to a multiple of [`POSITIONS_MULTIPLE`], within `2..=seq_len`.
pub fn positions_to_run(batch: &[Window], seq_len: usize) -> usize {
    let longest = batch.iter().map(|w| w.filled).max().unwrap_or(seq_len);
    longest.next_multiple_of(POSITIONS_MULTIPLE).clamp(2.min(seq_len), seq_len)
}

impl Window {
    /// Positions that carry a loss.
    pub fn trained(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE).count()
    }
}

/// How sequences become windows.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub seq_len: usize,
    pub objective: Objective,
    /// Concatenate sequences across windows (else one per window).
    pub packing: bool,
    /// The id that fills a window's unused positions.
    pub pad: u32,
}

impl Layout {
    /// The windows one epoch of `seqs` fills (the same in every order).
    pub fn windows_per_epoch(&self, seqs: &[Sequence]) -> usize {
        if self.packing { seqs.iter().map(|s| s.ids.len()).sum::<usize>().div_ceil(self.seq_len) } else { seqs.len() }
    }

    /// The sequences that do not fit a window, when each has its own: (index, length).
    pub fn too_long(&self, seqs: &[Sequence]) -> Vec<(usize, usize)> {
        if self.packing { Vec::new() } else { seqs.iter().enumerate().filter(|(_, s)| s.ids.len() > self.seq_len).map(|(i, s)| (i, s.ids.len())).collect() }
    }
}

/// The windows of one epoch, in order.
pub fn windows(seqs: &[Sequence], layout: &Layout, shuffle: Option<(u64, u64)>) -> Vec<Window> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    if let Some((seed, epoch)) = shuffle {
        fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ epoch).shuffle(&mut order);
    }
    let labelled = |s: &Sequence| -> (Vec<i64>, Vec<i64>) {
        let ids = s.ids.iter().map(|&id| id as i64).collect();
        let labels = s.ids.iter().enumerate().map(|(k, &id)| if layout.objective == Objective::Sft && k < s.prompt_len { IGNORE } else { id as i64 }).collect();
        (ids, labels)
    };
    let mut out: Vec<Window> = if layout.packing {
        let (mut ids, mut labels) = (Vec::new(), Vec::new());
        for i in order {
            let (a, b) = labelled(&seqs[i]);
            ids.extend(a);
            labels.extend(b);
        }
        ids.chunks(layout.seq_len).zip(labels.chunks(layout.seq_len)).map(|(i, l)| Window { ids: i.to_vec(), labels: l.to_vec(), filled: 0 }).collect()
    } else {
        order.into_iter().map(|i| labelled(&seqs[i])).map(|(ids, labels)| Window { ids, labels, filled: 0 }).collect()
    };
    for w in &mut out {
        w.filled = w.ids.len().min(layout.seq_len);
        w.ids.truncate(layout.seq_len);
        w.labels.truncate(layout.seq_len);
        w.ids.resize(layout.seq_len, layout.pad as i64);
        w.labels.resize(layout.seq_len, IGNORE);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs() -> Vec<Sequence> {
        vec![Sequence { ids: vec![1, 10, 11, 12, 2], prompt_len: 2 }, Sequence { ids: vec![1, 20, 21, 2], prompt_len: 3 }]
    }

    fn packed(seq_len: usize, objective: Objective) -> Layout {
        Layout { seq_len, objective, packing: true, pad: 0 }
    }

    #[test]
    fn sft_ignores_prompts_and_padding() {
        let w = windows(&seqs(), &packed(4, Objective::Sft), None);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].ids, vec![1, 10, 11, 12]);
        assert_eq!(w[0].labels, vec![-100, -100, 11, 12]);
        assert_eq!(w[1].labels, vec![2, -100, -100, -100]);
        assert_eq!(w[2].ids, vec![2, 0, 0, 0]);
        assert_eq!(w[2].labels, vec![2, -100, -100, -100]);
        let lm = windows(&seqs(), &packed(4, Objective::Lm), None);
        assert_eq!(lm[1].labels, vec![2, 1, 20, 21]);
    }

    #[test]
    fn one_example_per_window_pads_each_and_finds_the_too_long() {
        let layout = Layout { seq_len: 6, objective: Objective::Sft, packing: false, pad: 9 };
        let w = windows(&seqs(), &layout, None);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].ids, vec![1, 10, 11, 12, 2, 9]);
        assert_eq!(w[0].labels, vec![-100, -100, 11, 12, 2, -100]);
        assert_eq!(w[1].ids, vec![1, 20, 21, 2, 9, 9]);
        assert_eq!(w[1].labels, vec![-100, -100, -100, 2, -100, -100]);
        assert_eq!(layout.windows_per_epoch(&seqs()), 2);
        assert!(layout.too_long(&seqs()).is_empty());
        assert_eq!(Layout { seq_len: 4, ..layout }.too_long(&seqs()), vec![(0, 5)]);
        assert_eq!(packed(4, Objective::Sft).windows_per_epoch(&seqs()), 3);
        assert_eq!((w[0].filled, w[1].filled), (5, 4));
    }

    /// A micro-batch runs its longest window's positions, rounded up to the multiple, never
    /// more than the window.
    #[test]
    fn micro_batches_run_up_to_their_longest_window() {
        let window = |filled: usize| Window { ids: vec![0; 2048], labels: vec![IGNORE; 2048], filled };
        assert_eq!(positions_to_run(&[window(5), window(300)], 2048), 384);
        assert_eq!(positions_to_run(&[window(256)], 2048), 256);
        assert_eq!(positions_to_run(&[window(2000), window(10)], 2048), 2048);
        assert_eq!(positions_to_run(&[window(100)], 64), 64);
        assert_eq!(positions_to_run(&[window(0)], 2048), 2);
    }

    #[test]
    fn shuffles_are_seeded_per_epoch() {
        let many: Vec<Sequence> = (0..50).map(|i| Sequence { ids: vec![i, i], prompt_len: 0 }).collect();
        let layout = packed(8, Objective::Lm);
        let a = windows(&many, &layout, Some((1, 0)));
        assert_eq!(a, windows(&many, &layout, Some((1, 0))));
        assert_ne!(a, windows(&many, &layout, Some((1, 1))));
        assert_ne!(a, windows(&many, &layout, Some((2, 0))));
    }
}
