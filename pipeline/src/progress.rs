//! Progress bars for long work (downloads in bytes, scans in documents), drawn on stderr
//! only when it is a terminal; logs carry the same facts for batch jobs.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over bytes with rate and ETA.
pub fn bytes_bar(total: u64, label: &str) -> ProgressBar {
    styled(total, label, "{msg:>10} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
}

/// A bar over counted items (documents, files) with rate and ETA.
pub fn count_bar(total: u64, label: &str) -> ProgressBar {
    styled(total, label, "{msg:>10} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} eta {eta}")
}

fn styled(total: u64, label: &str, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    bar.set_message(label.to_string());
    bar
}

/// Says when a progress log line is due (every `every`), so batch jobs without a terminal
/// still see the bar's facts in their logs.
pub struct Heartbeat {
    last: std::sync::Mutex<std::time::Instant>,
    every: std::time::Duration,
}

impl Heartbeat {
    pub fn new(every: std::time::Duration) -> Self {
        Heartbeat { last: std::sync::Mutex::new(std::time::Instant::now()), every }
    }

    /// True at most once per period.
    pub fn due(&self) -> bool {
        let mut last = self.last.lock().expect("heartbeat");
        if last.elapsed() >= self.every {
            *last = std::time::Instant::now();
            true
        } else {
            false
        }
    }
}

/// One log line with a bar's position, rate and ETA.
pub fn log_line(bar: &ProgressBar, what: &str) {
    let (pos, len) = (bar.position(), bar.length().unwrap_or(0));
    let rate = bar.per_sec();
    let eta = if rate > 0.0 { (len.saturating_sub(pos)) as f64 / rate } else { f64::NAN };
    tracing::info!("{what}: {pos}/{len} ({rate:.1}/s, eta {eta:.0}s) {}", bar.message());
}
