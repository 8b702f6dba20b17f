//! Packing sequences into fixed-length windows: each epoch shuffles the sequences (seeded
//! by seed and epoch), concatenates them and cuts the stream into `seq_len` windows; the
//! last window is padded with ignored positions. Labels are the ids, or `-100` where no
//! loss is taken (the prompt in SFT, padding). Attention may cross sequence boundaries
//! inside a window, as in standard packed pretraining.

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
}

impl Window {
    /// Positions that carry a loss.
    pub fn trained(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE).count()
    }
}

/// The windows of one epoch, in order.
pub fn windows(seqs: &[Sequence], seq_len: usize, objective: Objective, shuffle: Option<(u64, u64)>, pad: u32) -> Vec<Window> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    if let Some((seed, epoch)) = shuffle {
        fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ epoch).shuffle(&mut order);
    }
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for i in order {
        let s = &seqs[i];
        for (k, &id) in s.ids.iter().enumerate() {
            ids.push(id as i64);
            labels.push(if objective == Objective::Sft && k < s.prompt_len { IGNORE } else { id as i64 });
        }
    }
    let mut out: Vec<Window> = ids.chunks(seq_len).zip(labels.chunks(seq_len)).map(|(i, l)| Window { ids: i.to_vec(), labels: l.to_vec() }).collect();
    if let Some(last) = out.last_mut() {
        while last.ids.len() < seq_len {
            last.ids.push(pad as i64);
            last.labels.push(IGNORE);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs() -> Vec<Sequence> {
        vec![Sequence { ids: vec![1, 10, 11, 12, 2], prompt_len: 2 }, Sequence { ids: vec![1, 20, 21, 2], prompt_len: 3 }]
    }

    #[test]
    fn sft_ignores_prompts_and_padding() {
        let w = windows(&seqs(), 4, Objective::Sft, None, 0);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].ids, vec![1, 10, 11, 12]);
        assert_eq!(w[0].labels, vec![-100, -100, 11, 12]);
        assert_eq!(w[1].labels, vec![2, -100, -100, -100]);
        assert_eq!(w[2].ids, vec![2, 0, 0, 0]);
        assert_eq!(w[2].labels, vec![2, -100, -100, -100]);
        let lm = windows(&seqs(), 4, Objective::Lm, None, 0);
        assert_eq!(lm[1].labels, vec![2, 1, 20, 21]);
    }

    #[test]
    fn shuffles_are_seeded_per_epoch() {
        let many: Vec<Sequence> = (0..50).map(|i| Sequence { ids: vec![i, i], prompt_len: 0 }).collect();
        let a = windows(&many, 8, Objective::Lm, Some((1, 0)), 0);
        assert_eq!(a, windows(&many, 8, Objective::Lm, Some((1, 0)), 0));
        assert_ne!(a, windows(&many, 8, Objective::Lm, Some((1, 1)), 0));
        assert_ne!(a, windows(&many, 8, Objective::Lm, Some((2, 0)), 0));
    }
}
