//! Adaptive concurrency per endpoint (AIMD): each success widens the window by about one
//! request per window's worth of successes; a 429 or 503 halves it (at most once a
//! second); the window stays within `[min, max]`. A pool of endpoints hands out a permit
//! on the endpoint with the most free room.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Debug)]
struct Window {
    limit: f64,
    in_flight: usize,
    last_cut: Option<Instant>,
}

/// One endpoint's window.
#[derive(Debug)]
pub struct Limiter {
    window: Mutex<Window>,
    min: f64,
    max: f64,
}

impl Limiter {
    pub fn new(start: usize, min: usize, max: usize) -> Self {
        let (min, max) = (min.max(1) as f64, max.max(min.max(1)) as f64);
        Limiter { window: Mutex::new(Window { limit: (start as f64).clamp(min, max), in_flight: 0, last_cut: None }), min, max }
    }

    /// The current window (rounded down) and the requests in flight.
    pub fn snapshot(&self) -> (usize, usize) {
        let w = self.window.lock().expect("limiter");
        (w.limit as usize, w.in_flight)
    }

    fn free(&self) -> f64 {
        let w = self.window.lock().expect("limiter");
        w.limit.floor() - w.in_flight as f64
    }

    fn try_take(&self) -> bool {
        let mut w = self.window.lock().expect("limiter");
        if (w.in_flight as f64) < w.limit.floor() {
            w.in_flight += 1;
            true
        } else {
            false
        }
    }

    fn release(&self) {
        let mut w = self.window.lock().expect("limiter");
        w.in_flight = w.in_flight.saturating_sub(1);
    }

    /// Additive increase.
    pub fn on_success(&self) {
        let mut w = self.window.lock().expect("limiter");
        w.limit = (w.limit + 1.0 / w.limit.max(1.0)).min(self.max);
    }

    /// Multiplicative decrease, once per second at most (one burst of 429s is one signal).
    pub fn on_overload(&self) {
        let mut w = self.window.lock().expect("limiter");
        let now = Instant::now();
        if w.last_cut.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            w.limit = (w.limit / 2.0).max(self.min);
            w.last_cut = Some(now);
        }
    }
}

/// Endpoints and their windows.
#[derive(Debug)]
pub struct Pool {
    pub endpoints: Vec<(String, Limiter)>,
    notify: Notify,
}

/// A slot on one endpoint, given back when dropped.
pub struct Permit {
    pool: Arc<Pool>,
    pub index: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.endpoints[self.index].1.release();
        self.pool.notify.notify_waiters();
    }
}

impl Pool {
    pub fn new(endpoints: Vec<(String, Limiter)>) -> Arc<Self> {
        Arc::new(Pool { endpoints, notify: Notify::new() })
    }

    /// Waits for room on some endpoint; prefers the one with the most free room.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut order: Vec<usize> = (0..self.endpoints.len()).collect();
            order.sort_by(|&a, &b| self.endpoints[b].1.free().total_cmp(&self.endpoints[a].1.free()));
            for i in order {
                if self.endpoints[i].1.try_take() {
                    return Permit { pool: self.clone(), index: i };
                }
            }
            // Wake up on a release, or re-check after a while (a window may have grown).
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Requests in flight over all endpoints.
    pub fn in_flight(&self) -> usize {
        self.endpoints.iter().map(|(_, l)| l.snapshot().1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aimd_grows_slowly_and_halves_on_overload() {
        let l = Limiter::new(8, 1, 64);
        for _ in 0..10 {
            l.on_success();
        }
        assert_eq!(l.snapshot().0, 9, "about one more per window of successes");
        l.on_overload();
        assert_eq!(l.snapshot().0, 4);
        l.on_overload(); // within the same second: one signal
        assert_eq!(l.snapshot().0, 4);
        let tiny = Limiter::new(1, 1, 4);
        tiny.on_overload();
        assert_eq!(tiny.snapshot().0, 1, "never below min");
    }

    #[tokio::test]
    async fn permits_respect_windows_and_spread_over_endpoints() {
        let pool = Pool::new(vec![("a".into(), Limiter::new(2, 1, 2)), ("b".into(), Limiter::new(2, 1, 2))]);
        let p: Vec<Permit> = futures_util::future::join_all((0..4).map(|_| pool.acquire())).await;
        assert_eq!(p.iter().filter(|x| x.index == 0).count(), 2);
        assert_eq!(pool.in_flight(), 4);
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire().await.index }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a fifth request must wait");
        drop(p);
        assert!(waiting.await.unwrap() < 2);
    }
}
