//! The learning rate at a step: linear warm-up from 0, then cosine decay to
//! `min_ratio * lr` at the last step (Hugging Face's cosine schedule with warm-up when
//! `min_ratio` is 0).

/// The rate for optimizer step `step` (0-based) of `total`.
pub fn learning_rate(step: usize, total: usize, warmup: usize, lr: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let decay = (total.saturating_sub(warmup)).max(1) as f64;
    let progress = ((step - warmup) as f64 / decay).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    lr * (min_ratio + (1.0 - min_ratio) * cosine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        let lr = |s| learning_rate(s, 100, 10, 1e-5, 0.0);
        assert!((lr(0) - 1e-6).abs() < 1e-18);
        assert!((lr(9) - 1e-5).abs() < 1e-18);
        assert!((lr(10) - 1e-5).abs() < 1e-18, "the peak right after warm-up");
        assert!((lr(55) - 0.5e-5).abs() < 1e-12, "half way down the cosine");
        assert!(lr(99) < 1e-8);
        assert!((learning_rate(99, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-3);
    }
}
