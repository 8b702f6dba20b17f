//! Where the host's time goes during training (`trainer pretrain --host-profile FILE`): a
//! sampling profile of the process's threads over the steady-state steps, written as folded
//! stacks (`thread;outermost;...;innermost count` per line, the input of flame-graph tools;
//! `scripts/host_profile.py` summarises one). Built only with the `host-profile` cargo
//! feature (pprof's SIGPROF sampler); without it asking for a profile is an error.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// How often each thread is sampled, per second of its CPU time.
#[cfg(feature = "host-profile")]
const SAMPLES_PER_SECOND: i32 = 1000;

/// A running profile; `finish` writes it.
pub struct HostProfile {
    path: PathBuf,
    #[cfg(feature = "host-profile")]
    guard: pprof::ProfilerGuard<'static>,
}

impl HostProfile {
    /// Starts sampling; its samples go to `path` at `finish`.
    #[cfg(feature = "host-profile")]
    pub fn start(path: &Path) -> Result<Self> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(SAMPLES_PER_SECOND)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| anyhow::anyhow!("could not start the host profiler: {e}"))?;
        Ok(HostProfile { path: path.to_path_buf(), guard })
    }

    #[cfg(not(feature = "host-profile"))]
    pub fn start(path: &Path) -> Result<Self> {
        anyhow::bail!("a host profile ({}) needs the `host-profile` feature: cargo build --release -p trainer --features cuda,host-profile", path.display())
    }

    /// Stops sampling and writes the folded stacks, most frequent first; returns how many
    /// samples were written.
    #[cfg(feature = "host-profile")]
    pub fn finish(self) -> Result<u64> {
        use anyhow::Context;
        use std::fmt::Write as _;
        let report = self.guard.report().build().map_err(|e| anyhow::anyhow!("could not read the host profile: {e}"))?;
        let mut lines: Vec<(isize, String)> = report
            .data
            .iter()
            .map(|(frames, &count)| {
                let mut line = frames.thread_name.replace([';', ' '], "_");
                // pprof lists the innermost frame first; folded stacks start at the outermost.
                for symbol in frames.frames.iter().rev().flat_map(|inlined| inlined.iter().rev()) {
                    let _ = write!(line, ";{}", symbol.name().replace(';', ":"));
                }
                (count, line)
            })
            .collect();
        lines.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let text: String = lines.iter().map(|(count, line)| format!("{line} {count}\n")).collect();
        std::fs::write(&self.path, text).with_context(|| format!("writing the host profile {}", self.path.display()))?;
        Ok(lines.iter().map(|(count, _)| *count as u64).sum())
    }

    #[cfg(not(feature = "host-profile"))]
    pub fn finish(self) -> Result<u64> {
        unreachable!("a profile of {} cannot start without the host-profile feature", self.path.display())
    }
}

#[cfg(all(test, not(feature = "host-profile")))]
mod tests {
    use super::*;

    #[test]
    fn without_the_feature_a_profile_is_refused_with_the_build_command() {
        let err = HostProfile::start(Path::new("/tmp/x.folded")).err().expect("refused").to_string();
        assert!(err.contains("host-profile") && err.contains("--features"), "{err}");
    }
}
