//! The k smallest ranks per source, shared by the threads that scan input files.
//!
//! A document's rank is `(sample key, file ordinal, row)`: a total order that depends only
//! on the document and the seed. Each source keeps a max-heap of its `quota` smallest ranks
//! seen so far; a row is a *candidate* when it enters the heap. Every row of the final
//! sample enters the heap when it is seen (nothing smaller than it can have filled the
//! heap), so the candidates always contain the sample, whatever the order of the files.

use std::collections::BinaryHeap;
use std::sync::Mutex;

/// `(sample key, file ordinal, row)`.
pub type Rank = (u64, u32, u64);

/// Per-source bounded heaps.
pub struct Selector {
    heaps: Vec<Mutex<BinaryHeap<Rank>>>,
    quotas: Vec<u64>,
}

impl Selector {
    pub fn new(quotas: Vec<u64>) -> Self {
        Selector { heaps: quotas.iter().map(|_| Mutex::new(BinaryHeap::new())).collect(), quotas }
    }

    /// Offers a batch of ranks of one source; `true` for each that is a candidate.
    pub fn offer(&self, source: usize, ranks: &[Rank]) -> Vec<bool> {
        let quota = self.quotas[source] as usize;
        let mut heap = self.heaps[source].lock().expect("selector lock");
        ranks
            .iter()
            .map(|&r| {
                if heap.len() < quota {
                    heap.push(r);
                    true
                } else if quota > 0 && heap.peek().is_some_and(|top| r < *top) {
                    heap.pop();
                    heap.push(r);
                    true
                } else {
                    false
                }
            })
            .collect()
    }
}

/// Splits `total` over the weights by largest remainder (ties to the earlier source), so
/// the quotas add up to `total` exactly.
pub fn quotas(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut q: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let mut rest = total.saturating_sub(q.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for i in order.into_iter().cycle() {
        if rest == 0 {
            break;
        }
        q[i] += 1;
        rest -= 1;
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_add_up() {
        assert_eq!(quotas(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(quotas(200_000, &[0.5, 0.5]), vec![100_000, 100_000]);
        assert_eq!(quotas(7, &[3.0, 1.0]).iter().sum::<u64>(), 7);
    }

    #[test]
    fn candidates_contain_the_k_smallest_in_any_order() {
        let ranks: Vec<Rank> = (0..500u64).map(|i| ((i * 7919) % 1009, 0, i)).collect();
        let mut expected = ranks.clone();
        expected.sort();
        expected.truncate(20);
        for seed in 0..5u64 {
            let mut shuffled = ranks.clone();
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut shuffled);
            let s = Selector::new(vec![20]);
            let mut cands = Vec::new();
            for chunk in shuffled.chunks(37) {
                for (r, c) in chunk.iter().zip(s.offer(0, chunk)) {
                    if c {
                        cands.push(*r);
                    }
                }
            }
            cands.sort();
            cands.truncate(20);
            assert_eq!(cands, expected);
        }
    }
}
