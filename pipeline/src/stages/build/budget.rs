//! Which examples fill the two sets: both sets get the same number of completion tokens
//! (the budget, or what the smaller set can reach) within a tolerance. With length matching
//! on, examples are first taken in pairs (one rich, one control) from the same length bin,
//! so both sets end with the same length distribution; leftovers only close the last gap.
//! Everything is decided by seeded keys, never by input order.

use serde::{Deserialize, Serialize};

/// One candidate example: its set (0 = rich, 1 = control), counted tokens and shuffle key.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub set: usize,
    pub tokens: u64,
    pub key: u64,
}

/// What to aim for.
#[derive(Clone, Copy, Debug)]
pub struct Goal {
    pub budget: u64,
    pub tolerance: f64,
    pub match_lengths: bool,
    pub bins: usize,
}

/// The chosen examples (indices into the candidates, in key order) and how they were found.
#[derive(Clone, Debug, Default)]
pub struct Choice {
    pub chosen: [Vec<usize>; 2],
    pub report: ChoiceReport,
}

/// How the budget was met, for the manifest.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ChoiceReport {
    /// The budget both sets were filled to: the configured one, or less when a set ran out.
    pub target_tokens: u64,
    pub budget_met: bool,
    pub tokens: [u64; 2],
    pub within_tolerance: [bool; 2],
    /// Examples taken as length-matched pairs (per set).
    pub matched_examples: u64,
    /// Tokens taken outside pairs to close the gap to the target, per set.
    pub unmatched_tokens: [u64; 2],
}

/// Fills both sets. When one set cannot reach the budget, the target becomes what it holds,
/// and both sets are filled to that instead.
pub fn choose(cands: &[Candidate], goal: &Goal) -> Choice {
    let mut target = goal.budget;
    let mut choice = fill(cands, goal, target);
    for _ in 0..8 {
        if choice.report.within_tolerance.iter().all(|&ok| ok) {
            break;
        }
        let reachable = *choice.report.tokens.iter().min().expect("two sets");
        if reachable == 0 || reachable >= target {
            break;
        }
        target = reachable;
        choice = fill(cands, goal, target);
    }
    choice.report.budget_met = target == goal.budget && choice.report.within_tolerance.iter().all(|&ok| ok);
    choice
}

fn fill(cands: &[Candidate], goal: &Goal, target: u64) -> Choice {
    let floor = (target as f64 * (1.0 - goal.tolerance)).ceil() as u64;
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by_key(|&i| (cands[i].key, i));
    let mut taken = vec![false; cands.len()];
    let mut tokens = [0u64; 2];
    let mut matched = 0u64;
    if goal.match_lengths {
        for (a, b) in pairs(cands, &order, goal.bins) {
            if tokens.iter().all(|&t| t >= floor) {
                break;
            }
            let (ta, tb) = (cands[a].tokens, cands[b].tokens);
            if tokens[0] + ta <= target && tokens[1] + tb <= target {
                tokens[0] += ta;
                tokens[1] += tb;
                taken[a] = true;
                taken[b] = true;
                matched += 1;
            }
        }
    }
    let paired = tokens;
    for &i in &order {
        let c = &cands[i];
        if taken[i] || tokens[c.set] >= floor || tokens[c.set] + c.tokens > target {
            continue;
        }
        tokens[c.set] += c.tokens;
        taken[i] = true;
    }
    for (set, total) in tokens.iter_mut().enumerate() {
        if *total < floor {
            *total = close_gap(cands, &order, &mut taken, set, *total, floor, target);
        }
    }
    let mut chosen: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for &i in &order {
        if taken[i] {
            chosen[cands[i].set].push(i);
        }
    }
    let report = ChoiceReport {
        target_tokens: target,
        budget_met: false,
        tokens,
        within_tolerance: [tokens[0] >= floor && tokens[0] <= target, tokens[1] >= floor && tokens[1] <= target],
        matched_examples: matched,
        unmatched_tokens: [tokens[0] - paired[0], tokens[1] - paired[1]],
    };
    Choice { chosen, report }
}

/// The last few tokens: when no unused example fits the gap, swap chosen examples for
/// unused ones that are a little longer (each time the first swap in key order that closes
/// the gap, else the one that gains most), a bounded number of times.
fn close_gap(cands: &[Candidate], order: &[usize], taken: &mut [bool], set: usize, mut tokens: u64, floor: u64, target: u64) -> u64 {
    for _ in 0..64 {
        if tokens >= floor {
            break;
        }
        let (need, room) = (floor - tokens, target - tokens);
        let mut unused: Vec<(u64, usize)> = order.iter().filter(|&&i| !taken[i] && cands[i].set == set).map(|&i| (cands[i].tokens, i)).collect();
        unused.sort_unstable();
        let mut best: Option<(u64, usize, usize)> = None;
        for &i in order.iter().filter(|&&i| taken[i] && cands[i].set == set) {
            // The longest unused example that still fits when it replaces `i`.
            let at = unused.partition_point(|&(t, _)| t <= cands[i].tokens + room);
            let Some(&(t, j)) = at.checked_sub(1).and_then(|k| unused.get(k)) else {
                continue;
            };
            let gain = t.saturating_sub(cands[i].tokens);
            if gain > best.map_or(0, |b| b.0) {
                best = Some((gain, i, j));
            }
            if gain >= need {
                break;
            }
        }
        let Some((gain, i, j)) = best else { break };
        taken[i] = false;
        taken[j] = true;
        tokens += gain;
    }
    tokens
}

/// Rich/control pairs from the same length bin (bins: quantiles of both sets' lengths),
/// each bin's examples in key order, all pairs in key order.
fn pairs(cands: &[Candidate], order: &[usize], bins: usize) -> Vec<(usize, usize)> {
    let mut lengths: Vec<u64> = cands.iter().map(|c| c.tokens).collect();
    lengths.sort_unstable();
    let edges: Vec<u64> = (1..bins).map(|i| lengths[(i * lengths.len()) / bins]).collect();
    let bin_of = |t: u64| edges.partition_point(|&e| e <= t);
    let mut by_bin: Vec<[Vec<usize>; 2]> = vec![[Vec::new(), Vec::new()]; bins];
    for &i in order {
        by_bin[bin_of(cands[i].tokens)][cands[i].set].push(i);
    }
    let mut out: Vec<(usize, usize)> = by_bin.iter().flat_map(|[r, c]| r.iter().copied().zip(c.iter().copied())).collect();
    out.sort_by_key(|&(a, b)| (cands[a].key.min(cands[b].key), a));
    out
}

/// Length quantiles of one set, for the manifest.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LengthSummary {
    pub examples: u64,
    pub tokens: u64,
    pub mean: f64,
    /// Percentile (0, 5, 10, 25, 50, 75, 90, 95, 100) -> length (nearest rank).
    pub percentiles: std::collections::BTreeMap<u32, u64>,
}

const PERCENTILES: [u32; 9] = [0, 5, 10, 25, 50, 75, 90, 95, 100];

/// Summarises a list of lengths.
pub fn summarize(lengths: &[u64]) -> LengthSummary {
    let mut v = lengths.to_vec();
    v.sort_unstable();
    let tokens: u64 = v.iter().sum();
    let percentiles = if v.is_empty() { Default::default() } else { PERCENTILES.iter().map(|&q| (q, v[((q as usize * (v.len() - 1)) + 50) / 100])).collect() };
    LengthSummary { examples: v.len() as u64, tokens, mean: if v.is_empty() { 0.0 } else { tokens as f64 / v.len() as f64 }, percentiles }
}

/// The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical
/// length distributions (0 = identical, 1 = disjoint).
pub fn ks_statistic(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    let (mut i, mut j, mut worst) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        worst = worst.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rich examples are long (mean ~600), control short (mean ~250), and there are more
    /// than enough of both.
    fn skewed(n: usize) -> Vec<Candidate> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n)
            .map(|i| {
                let set = i % 2;
                let tokens = if set == 0 { rng.u64(100..1100) } else { rng.u64(20..480) };
                Candidate { set, tokens, key: rng.u64(..) }
            })
            .collect()
    }

    fn lengths(c: &[Candidate], ch: &Choice, set: usize) -> Vec<u64> {
        ch.chosen[set].iter().map(|&i| c[i].tokens).collect()
    }

    #[test]
    fn both_sets_meet_the_budget_within_tolerance() {
        let c = skewed(4000);
        for match_lengths in [false, true] {
            let ch = choose(&c, &Goal { budget: 200_000, tolerance: 0.001, match_lengths, bins: 32 });
            let r = &ch.report;
            assert!(r.budget_met, "{r:?}");
            for set in 0..2 {
                let sum: u64 = lengths(&c, &ch, set).iter().sum();
                assert_eq!(sum, r.tokens[set]);
                assert!((199_800..=200_000).contains(&sum), "set {set}: {sum}");
                assert!(ch.chosen[set].iter().all(|&i| c[i].set == set));
            }
        }
    }

    #[test]
    fn a_swap_closes_a_gap_no_single_example_fits() {
        // Lengths 50..=59 only: adding stalls up to 49 tokens short of the target.
        let c: Vec<Candidate> =
            (0..400).map(|i| Candidate { set: i % 2, tokens: 50 + (i as u64 * 7) % 10, key: i as u64 * 2_654_435_761 % 1_000_003 }).collect();
        for budget in [1_001, 2_017, 3_333] {
            let ch = choose(&c, &Goal { budget, tolerance: 0.001, match_lengths: true, bins: 4 });
            assert!(ch.report.budget_met, "{budget}: {:?}", ch.report);
        }
    }

    #[test]
    fn matching_makes_the_length_distributions_alike() {
        let c = skewed(4000);
        let goal = |m| Goal { budget: 200_000, tolerance: 0.001, match_lengths: m, bins: 32 };
        let plain = choose(&c, &goal(false));
        let matched = choose(&c, &goal(true));
        let ks = |ch: &Choice| ks_statistic(&lengths(&c, ch, 0), &lengths(&c, ch, 1));
        assert!(ks(&plain) > 0.4, "the candidates differ a lot: {}", ks(&plain));
        assert!(ks(&matched) < 0.1, "matched sets are alike: {}", ks(&matched));
        let (r, k) = (summarize(&lengths(&c, &matched, 0)), summarize(&lengths(&c, &matched, 1)));
        assert!((r.percentiles[&50] as f64 - k.percentiles[&50] as f64).abs() < 40.0, "{r:?} {k:?}");
        assert!(matched.report.matched_examples > 0);
    }

    #[test]
    fn a_short_set_lowers_the_target_for_both() {
        let mut c = skewed(400);
        c.retain(|x| x.set == 0 || x.key % 4 == 0); // few control examples
        let control_total: u64 = c.iter().filter(|x| x.set == 1).map(|x| x.tokens).sum();
        let ch = choose(&c, &Goal { budget: 10_000_000, tolerance: 0.001, match_lengths: false, bins: 8 });
        let r = &ch.report;
        assert!(!r.budget_met);
        assert_eq!(r.tokens[1], control_total, "the short set gives everything it has");
        assert_eq!(r.target_tokens, control_total);
        assert!(r.within_tolerance[0] && r.tokens[0] <= control_total, "{r:?}");
    }

    #[test]
    fn the_choice_depends_on_keys_not_on_order() {
        let c = skewed(1000);
        let goal = Goal { budget: 50_000, tolerance: 0.001, match_lengths: true, bins: 16 };
        let mut reversed = c.clone();
        reversed.reverse();
        let ids = |cands: &[Candidate], ch: &Choice| {
            let mut v: Vec<u64> = ch.chosen.iter().flatten().map(|&i| cands[i].key).collect();
            v.sort();
            v
        };
        assert_eq!(ids(&c, &choose(&c, &goal)), ids(&reversed, &choose(&reversed, &goal)));
    }

    #[test]
    fn summaries_and_ks() {
        let s = summarize(&[5, 1, 3, 2, 4]);
        assert_eq!((s.percentiles[&0], s.percentiles[&50], s.percentiles[&100], s.tokens), (1, 3, 5, 15));
        assert_eq!(ks_statistic(&[1, 2, 3], &[1, 2, 3]), 0.0);
        assert_eq!(ks_statistic(&[1, 2], &[3, 4]), 1.0);
        assert!((ks_statistic(&[1, 2, 3, 4], &[3, 4, 5, 6]) - 0.5).abs() < 1e-12);
    }
}
