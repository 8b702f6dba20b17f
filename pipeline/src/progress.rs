//! Progress bars for long work (downloads in bytes, scans in documents), drawn on stderr
//! only when it is a terminal; logs carry the same facts for batch jobs.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over bytes with rate and ETA.
pub fn bytes_bar(total: u64, label: &str) -> ProgressBar {
    styled(
        total,
        label,
        "{msg:>10} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
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
