//! How a token is picked on the host from a row's logits (a top-p cut, or logits kept):
//! greedy or by sampling, rows in parallel, each from its own seeded stream. Without either,
//! picks happen on the device (`ops::pick_tokens`).

use crate::generate::Sampling;

/// A token for each `(row, stream)` in `rows` from that row of `host` (`[rows, vocab]`
/// logits), drawn from the row's own stream; rows split over the machine's cores (a draw
/// over a 128k vocabulary costs about a millisecond).
pub(crate) fn pick_rows(host: &[f32], vocab: usize, rows: &mut [(usize, &mut fastrand::Rng)], s: &Sampling) -> Vec<u32> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows.len()).max(1);
    let per_thread = rows.len().div_ceil(threads).max(1);
    let mut picked = vec![0u32; rows.len()];
    std::thread::scope(|scope| {
        for (rows, out) in rows.chunks_mut(per_thread).zip(picked.chunks_mut(per_thread)) {
            scope.spawn(move || {
                for ((row, rng), slot) in rows.iter_mut().zip(out.iter_mut()) {
                    *slot = pick(&host[*row * vocab..(*row + 1) * vocab], s, rng);
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
