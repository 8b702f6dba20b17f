//! Generalised advantage estimation over one response (token by token), the KL-shaped
//! token rewards the study used (the score on the last response token, minus
//! `kl_coef * (log p - log p_ref)` on every token), and masked whitening of advantages.

/// Token rewards: `-kl_coef * (logp - ref_logp)` on each of the `n` response tokens, plus
/// the sequence's score on the last one.
pub fn shaped_rewards(score: f64, logp: &[f64], ref_logp: &[f64], kl_coef: f64) -> Vec<f64> {
    let mut r: Vec<f64> = logp.iter().zip(ref_logp).map(|(a, b)| -kl_coef * (a - b)).collect();
    if let Some(last) = r.last_mut() {
        *last += score;
    }
    r
}

/// Advantages and returns of one response: `delta_t = r_t + gamma V_{t+1} - V_t` (with
/// `V_T = 0` after the last token), `A_t = delta_t + gamma lambda A_{t+1}`, `R_t = A_t + V_t`.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Shifts and scales all advantages of a batch to mean 0 and variance 1 (unbiased, as the
/// reference implementation does); a batch of one value is only centred.
pub fn whiten(batch: &mut [Vec<f64>]) {
    let all: Vec<f64> = batch.iter().flatten().copied().collect();
    let n = all.len() as f64;
    if n == 0.0 {
        return;
    }
    let mean = all.iter().sum::<f64>() / n;
    let var = if n > 1.0 { all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let scale = 1.0 / (var + 1e-8).sqrt();
    for x in batch.iter_mut().flatten() {
        *x = (*x - mean) * if n > 1.0 { scale } else { 1.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn hand_computed_advantages() {
        // gamma = lambda = 1 (the study's): A_t = sum of future rewards - V_t.
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.2, 0.4], 1.0, 1.0);
        close(&adv, &[0.5, 0.8, 0.6]);
        close(&ret, &[1.0, 1.0, 1.0]);
        // gamma = 0.9, lambda = 0.5, by hand:
        // delta2 = 1 - 0.4 = 0.6; delta1 = 0 + 0.9*0.4 - 0.2 = 0.16; delta0 = 0 + 0.9*0.2 - 0.5 = -0.32
        // A2 = 0.6; A1 = 0.16 + 0.45*0.6 = 0.43; A0 = -0.32 + 0.45*0.43 = -0.1265
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.2, 0.4], 0.9, 0.5);
        close(&adv, &[-0.1265, 0.43, 0.6]);
        close(&ret, &[0.3735, 0.63, 1.0]);
    }

    #[test]
    fn kl_shaping_and_whitening() {
        let r = shaped_rewards(1.0, &[-1.0, -2.0], &[-1.5, -1.0], 0.001);
        close(&r, &[-0.0005, 1.0 + 0.001]);
        let mut batch = vec![vec![1.0, 2.0], vec![3.0]];
        whiten(&mut batch);
        close(&batch[0], &[-1.0 / (1.0 + 1e-8f64).sqrt(), 0.0]);
        assert!((batch[1][0] - 1.0).abs() < 1e-6);
    }
}
