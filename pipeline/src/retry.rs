//! Retry policy shared by every network client: exponential backoff with full jitter,
//! a cap, and `Retry-After` (seconds or an HTTP date) honoured when a server sends it.

use std::time::{Duration, SystemTime};

/// How often and how long to retry a retryable failure.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt (before jitter); doubles each attempt.
    pub base: Duration,
    /// Ceiling of any one delay, `Retry-After` included.
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt + 1` (attempt counts from 1): a uniformly random
    /// value in `[base * 2^(attempt-1) / 2, base * 2^(attempt-1)]`, capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let top = exp.min(self.max);
        let half = top / 2;
        half + top.saturating_sub(half).mul_f64(fastrand::f64())
    }

    /// The delay a server asked for, capped at `max`; falls back to [`Backoff::delay`].
    pub fn delay_with_hint(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max),
            None => self.delay(attempt),
        }
    }

    /// Whether another attempt is allowed after `attempt` failed.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

/// Parses a `Retry-After` header: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let b = Backoff { max_attempts: 5, base: Duration::from_millis(100), max: Duration::from_millis(1000) };
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(b.delay(30) <= Duration::from_millis(1000));
        }
        assert!(b.allows_another(4) && !b.allows_another(5));
    }

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        let future = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28));
        assert_eq!(parse_retry_after("soon"), None);
        let b = Backoff { max_attempts: 3, base: Duration::from_secs(1), max: Duration::from_secs(10) };
        assert_eq!(b.delay_with_hint(1, Some(Duration::from_secs(99))), Duration::from_secs(10));
    }
}
