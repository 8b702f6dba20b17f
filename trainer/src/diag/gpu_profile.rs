//! Where the GPU's time goes during training (`trainer pretrain --gpu-profile FILE`, `trainer
//! ppo --gpu-profile FILE`): every kernel the process runs over the profiled steps,
//! recorded by CUPTI's activity API (`libcupti`, already loaded to find cubecl's stream),
//! cuBLAS's kernels and cubecl's alike.
//!
//! The file is JSON lines: first the window (wall time, the time the GPU ran at least one
//! kernel, the kernels' summed time, their count), then one line per kernel name, most
//! time first (count, total and mean time, share of the busy time). A GPU busy for most of
//! the window is the limit; one idle for much of it waits for the host. Where the work
//! names its parts ([`mark`]: PPO's generation, scoring and updates), the same follows for
//! each part (`"piece": "part"`, then its kernels, each line with `"part"`): a kernel
//! belongs to the part last marked before it started, so marks go where the host has
//! waited for the device. Only kernels are recorded (no copies or memsets). Needs a CUDA
//! build (`--features cuda`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

/// One kernel's run on the GPU (nanoseconds on CUPTI's clock).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRun {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// The time covered by at least one of `runs` (overlapping kernels counted once).
pub fn busy_ns(runs: &[KernelRun]) -> u64 {
    let mut spans: Vec<(u64, u64)> = runs.iter().map(|r| (r.start, r.end.max(r.start))).collect();
    spans.sort_unstable();
    let (mut busy, mut reach) = (0u64, 0u64);
    for (start, end) in spans {
        let from = start.max(reach);
        if end > from {
            busy += end - from;
        }
        reach = reach.max(end);
    }
    busy
}

/// The profile's JSON lines: the window (`window_ns` of wall time over `steps` steps), then
/// one line per kernel name, most time first.
pub fn summary_lines(runs: &[KernelRun], window_ns: u64, steps: usize) -> Vec<serde_json::Value> {
    let busy = busy_ns(runs);
    let mut by_name: std::collections::HashMap<&str, (u64, u64)> = std::collections::HashMap::new();
    for r in runs {
        let entry = by_name.entry(&r.name).or_default();
        entry.0 += 1;
        entry.1 += r.end.saturating_sub(r.start);
    }
    let mut names: Vec<(&str, (u64, u64))> = by_name.into_iter().collect();
    names.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(b.0)));
    let ms = |ns: u64| ns as f64 / 1e6;
    let per_step = |ns: u64| ms(ns) / steps.max(1) as f64;
    let summed: u64 = names.iter().map(|(_, (_, total))| total).sum();
    let mut lines = vec![json!({
        "piece": "window", "steps": steps, "wall_ms": ms(window_ns), "busy_ms": ms(busy), "kernels_ms": ms(summed),
        "kernels": runs.len(), "busy_share": busy as f64 / window_ns.max(1) as f64,
        "wall_ms_per_step": per_step(window_ns), "busy_ms_per_step": per_step(busy), "kernels_per_step": runs.len() as f64 / steps.max(1) as f64,
    })];
    lines.extend(names.into_iter().map(|(name, (count, total))| {
        json!({
            "piece": "kernel", "name": name, "count": count, "total_ms": ms(total), "ms_per_step": per_step(total),
            "mean_us": total as f64 / count as f64 / 1e3, "share_of_busy": total as f64 / busy.max(1) as f64,
        })
    }));
    lines
}

/// The lines of each marked part (`marks`: a part's name and where it starts, in time order;
/// a part runs to the next mark or to `ended_ns`, and a name marked again adds its spans):
/// each part as `summary_lines` over its kernels and its spans' wall time, its window line
/// `"piece": "part"`, every line with its `"part"`; parts in order of their first mark.
/// Kernels that started before the first mark belong to none.
pub fn part_lines(runs: &[KernelRun], marks: &[(String, u64)], ended_ns: u64, steps: usize) -> Vec<serde_json::Value> {
    // Per part: its name, its spans' wall time and its kernels.
    let mut parts: Vec<(&str, u64, Vec<KernelRun>)> = Vec::new();
    let mut part_of_mark = Vec::with_capacity(marks.len());
    for (i, (name, at)) in marks.iter().enumerate() {
        let part = parts.iter().position(|(n, _, _)| n == name).unwrap_or_else(|| {
            parts.push((name, 0, Vec::new()));
            parts.len() - 1
        });
        parts[part].1 += marks.get(i + 1).map_or(ended_ns, |next| next.1).saturating_sub(*at);
        part_of_mark.push(part);
    }
    for r in runs {
        let after = marks.partition_point(|(_, at)| *at <= r.start);
        if after > 0 {
            parts[part_of_mark[after - 1]].2.push(r.clone());
        }
    }
    let mut lines = Vec::new();
    for (name, wall_ns, kernels) in parts {
        let mut part = summary_lines(&kernels, wall_ns, steps);
        part[0]["piece"] = json!("part");
        for line in &mut part {
            line["part"] = json!(name);
        }
        lines.extend(part);
    }
    lines
}

/// Marks the start of a part of the work being profiled (PPO's `generation`, `critic
/// update`, ...); nothing while no profile records. The device should have finished what
/// the host asked before (the part before ended reading its results).
pub fn mark(part: &str) {
    #[cfg(feature = "cuda")]
    cupti_activity::mark(part);
    #[cfg(not(feature = "cuda"))]
    let _ = part;
}

/// A running profile; `finish` writes it.
pub struct GpuProfile {
    path: PathBuf,
    #[cfg(feature = "cuda")]
    started_ns: u64,
}

impl GpuProfile {
    /// Whether this build can record a profile into `path` (checked before long work that
    /// starts one later).
    pub fn can_record(path: &Path) -> Result<()> {
        if cfg!(feature = "cuda") {
            return Ok(());
        }
        anyhow::bail!("a GPU profile ({}) needs a CUDA build: cargo build --release -p trainer --features cuda", path.display())
    }

    /// Starts recording kernels; the profile goes to `path` at `finish`.
    #[cfg(feature = "cuda")]
    pub fn start(path: &Path) -> Result<Self> {
        let started_ns = cupti_activity::start()?;
        Ok(GpuProfile { path: path.to_path_buf(), started_ns })
    }

    #[cfg(not(feature = "cuda"))]
    pub fn start(path: &Path) -> Result<Self> {
        Self::can_record(path)?;
        unreachable!("can_record refuses a build without the cuda feature")
    }

    /// Stops recording (the device synchronised by the caller) and writes the profile over
    /// `steps` steps; returns its window line.
    #[cfg(feature = "cuda")]
    pub fn finish(self, steps: usize) -> Result<serde_json::Value> {
        use anyhow::Context;
        let cupti_activity::Recorded { runs, marks, ended_ns } = cupti_activity::stop()?;
        let mut lines = summary_lines(&runs, ended_ns.saturating_sub(self.started_ns), steps);
        lines.extend(part_lines(&runs, &marks, ended_ns, steps));
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&self.path, text).with_context(|| format!("writing the GPU profile {}", self.path.display()))?;
        Ok(lines[0].clone())
    }

    #[cfg(not(feature = "cuda"))]
    pub fn finish(self, _steps: usize) -> Result<serde_json::Value> {
        unreachable!("a profile of {} cannot start without the cuda feature", self.path.display())
    }
}

/// CUPTI's activity API: buffers handed to CUPTI, kernel records read back when it
/// returns them.
#[cfg(feature = "cuda")]
mod cupti_activity {
    use std::alloc::Layout;
    use std::ffi::CStr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use anyhow::{Result, bail};
    use cudarc::cupti::sys as cupti;

    use super::KernelRun;

    /// Bytes per activity buffer (CUPTI asks for more as they fill).
    const BUFFER_BYTES: usize = 8 << 20;
    /// The records' alignment CUPTI requires.
    const ALIGN: usize = 8;

    static RUNS: Mutex<Vec<KernelRun>> = Mutex::new(Vec::new());
    /// The parts marked while recording (`super::mark`), in time order.
    static MARKS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    static RECORDING: AtomicBool = AtomicBool::new(false);

    fn layout() -> Layout {
        Layout::from_size_align(BUFFER_BYTES, ALIGN).expect("a valid layout")
    }

    unsafe extern "C" fn requested(buffer: *mut *mut u8, size: *mut usize, max_records: *mut usize) {
        // SAFETY: CUPTI passes valid out-pointers; the buffer is freed in `completed`.
        unsafe {
            *buffer = std::alloc::alloc(layout());
            *size = if (*buffer).is_null() { 0 } else { BUFFER_BYTES };
            *max_records = 0;
        }
    }

    unsafe extern "C" fn completed(_context: cudarc::driver::sys::CUcontext, _stream: u32, buffer: *mut u8, _size: usize, valid: usize) {
        let mut runs = Vec::new();
        let mut record: *mut cupti::CUpti_Activity = std::ptr::null_mut();
        // SAFETY: `buffer` is one of ours with `valid` bytes of records; a kernel record is
        // read as the CUDA 13 layout, whose leading fields every later one keeps.
        unsafe {
            while cupti::cuptiActivityGetNextRecord(buffer, valid, &mut record) == cupti::CUptiResult::CUPTI_SUCCESS {
                if (*record).kind == cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL {
                    let kernel = std::ptr::read_unaligned(record as *const cupti::CUpti_ActivityKernel10);
                    let name = if kernel.name.is_null() { "?".to_string() } else { CStr::from_ptr(kernel.name).to_string_lossy().into_owned() };
                    runs.push(KernelRun { name, start: kernel.start, end: kernel.end });
                }
            }
            std::alloc::dealloc(buffer, layout());
        }
        if let Ok(mut all) = RUNS.lock() {
            all.extend(runs);
        }
    }

    fn timestamp() -> u64 {
        let mut now = 0u64;
        // SAFETY: an out-pointer to a live u64.
        unsafe { cupti::cuptiGetTimestamp(&mut now) };
        now
    }

    /// Starts recording kernels; returns the start on CUPTI's clock.
    pub(super) fn start() -> Result<u64> {
        // SAFETY: only tries to open the library.
        if !unsafe { cupti::is_culib_present() } {
            bail!("a GPU profile needs libcupti (CUDA 13: libcupti.so.13) on the library path (PyTorch ships it under site-packages/nvidia/cu13/lib)");
        }
        RUNS.lock().map(|mut runs| runs.clear()).ok();
        MARKS.lock().map(|mut marks| marks.clear()).ok();
        // SAFETY: callbacks of the signatures CUPTI expects, living for the process.
        let status = unsafe {
            let registered = cupti::cuptiActivityRegisterCallbacks(Some(requested), Some(completed));
            if registered == cupti::CUptiResult::CUPTI_SUCCESS {
                cupti::cuptiActivityEnable(cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)
            } else {
                registered
            }
        };
        if status != cupti::CUptiResult::CUPTI_SUCCESS {
            bail!("CUPTI's activity API refused to record kernels ({status:?}; is another profiler attached?)");
        }
        RECORDING.store(true, Ordering::Release);
        Ok(timestamp())
    }

    /// Notes that `part` starts now, while recording.
    pub(super) fn mark(part: &str) {
        if RECORDING.load(Ordering::Acquire) {
            let at = timestamp();
            MARKS.lock().map(|mut marks| marks.push((part.to_string(), at))).ok();
        }
    }

    /// What a recording holds: the kernels, the parts marked and the end on CUPTI's clock.
    pub(super) struct Recorded {
        pub runs: Vec<KernelRun>,
        pub marks: Vec<(String, u64)>,
        pub ended_ns: u64,
    }

    /// Stops recording; returns what was recorded.
    pub(super) fn stop() -> Result<Recorded> {
        RECORDING.store(false, Ordering::Release);
        let ended = timestamp();
        // SAFETY: plain calls; flushing hands every buffer back through `completed`.
        unsafe {
            cupti::cuptiActivityDisable(cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
            cupti::cuptiActivityFlushAll(1);
        }
        let runs = RUNS.lock().map(|mut runs| std::mem::take(&mut *runs)).unwrap_or_default();
        let marks = MARKS.lock().map(|mut marks| std::mem::take(&mut *marks)).unwrap_or_default();
        Ok(Recorded { runs, marks, ended_ns: ended })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, start: u64, end: u64) -> KernelRun {
        KernelRun { name: name.into(), start, end }
    }

    #[test]
    fn overlapping_kernels_count_once_toward_busy_time() {
        let runs = [run("a", 0, 10), run("b", 5, 15), run("a", 20, 30), run("c", 22, 25), run("d", 40, 40)];
        assert_eq!(busy_ns(&runs), 25);
        assert_eq!(busy_ns(&[]), 0);
    }

    #[test]
    fn kernels_are_summed_by_name_most_time_first() {
        let runs = [run("gemm", 0, 4_000_000), run("softmax", 4_000_000, 5_000_000), run("gemm", 6_000_000, 10_000_000)];
        let lines = summary_lines(&runs, 20_000_000, 2);
        assert_eq!(lines[0]["wall_ms"], 20.0);
        assert_eq!(lines[0]["busy_ms"], 9.0);
        assert_eq!(lines[0]["busy_share"], 0.45);
        assert_eq!(lines[0]["wall_ms_per_step"], 10.0);
        assert_eq!(lines[1]["name"], "gemm");
        assert_eq!(lines[1]["count"], 2);
        assert_eq!(lines[1]["total_ms"], 8.0);
        assert_eq!(lines[1]["mean_us"], 4000.0);
        assert_eq!(lines[2]["name"], "softmax");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn kernels_go_to_the_part_marked_last_before_they_started() {
        // Scoring alternates between the actor's and the reference's passes; the update follows.
        let marks: Vec<(String, u64)> =
            [("actor", 0), ("reference", 10_000_000), ("actor", 20_000_000), ("update", 30_000_000)].iter().map(|(n, at)| (n.to_string(), *at)).collect();
        let runs = [
            run("early", 0, 0),
            run("gemm", 1_000_000, 5_000_000),
            run("gemm", 12_000_000, 14_000_000),
            // Started in the actor's second span, ended in the update's: the actor's.
            run("softmax", 25_000_000, 31_000_000),
            run("adamw", 32_000_000, 40_000_000),
        ];
        // `early` starts at the first mark: the actor's (a kernel of no length).
        let lines = part_lines(&runs, &marks, 50_000_000, 1);
        let parts: Vec<&serde_json::Value> = lines.iter().filter(|l| l["piece"] == "part").collect();
        assert_eq!(parts.iter().map(|l| l["part"].as_str().unwrap()).collect::<Vec<_>>(), ["actor", "reference", "update"]);
        assert_eq!((parts[0]["wall_ms"].as_f64(), parts[0]["busy_ms"].as_f64(), parts[0]["kernels"].as_u64()), (Some(20.0), Some(10.0), Some(3)));
        assert_eq!((parts[1]["wall_ms"].as_f64(), parts[1]["busy_ms"].as_f64()), (Some(10.0), Some(2.0)));
        assert_eq!((parts[2]["wall_ms"].as_f64(), parts[2]["busy_ms"].as_f64()), (Some(20.0), Some(8.0)));
        let actor_kernels: Vec<&str> = lines.iter().filter(|l| l["piece"] == "kernel" && l["part"] == "actor").map(|l| l["name"].as_str().unwrap()).collect();
        assert_eq!(actor_kernels, ["softmax", "gemm", "early"], "most time first");
        assert!(lines.iter().all(|l| l["part"].is_string()), "every line names its part");
        // Kernels before the first mark belong to no part; no marks, no parts.
        assert_eq!(part_lines(&runs, &marks[3..], 50_000_000, 1).iter().filter(|l| l["piece"] == "kernel").count(), 1);
        assert!(part_lines(&runs, &[], 50_000_000, 1).is_empty());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_cuda_a_profile_is_refused_with_the_build_command() {
        let err = GpuProfile::start(Path::new("/tmp/x.jsonl")).err().expect("refused").to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
