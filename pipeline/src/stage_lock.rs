//! One process per stage of a run folder (and shard): a stage takes an exclusive lock on
//! `runs/<name>/locks/<stage>[.shard-i-of-n].lock` before it reads or sends anything, and
//! writes who holds it (pid, host, start time, command) into the file. A second process
//! stops at once with a message naming the holder, or waits with `--wait`. The lock is
//! the kernel's (`flock`): it goes when its process dies, however it dies, so a lock left
//! by a dead process is simply taken, and its stale text replaced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::shard::Shard;

/// A held lock; released when dropped (or when the process ends).
pub struct StageLock {
    _file: File,
}

/// The lock file of `stage` (and `shard`) of the run at `run_root`.
pub fn lock_path(run_root: &Path, stage: &str, shard: Shard) -> PathBuf {
    let name = if shard.is_all() { format!("{stage}.lock") } else { format!("{stage}.shard-{}-of-{}.lock", shard.index, shard.count) };
    run_root.join("locks").join(name)
}

impl StageLock {
    /// Takes the lock of `stage` (and `shard`) of the run at `run_root`; with `wait`,
    /// blocks until the process holding it is done, else fails at once naming it.
    pub fn acquire(run_root: &Path, stage: &str, shard: Shard, wait: bool) -> Result<StageLock> {
        let path = lock_path(run_root, stage, shard);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if !wait {
                    bail!(
                        "{stage} of run {} is being worked on by {holder} (lock {}); a second process would pay for the same requests. \
                         Wait for it or stop it, or pass --wait to start when it is done",
                        run_root.display(),
                        path.display()
                    );
                }
                tracing::warn!("{stage}: waiting for {holder} to finish (lock {})", path.display());
                file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {} (does this file system support locks?)", path.display()));
            }
        }
        write_holder(&mut file).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(StageLock { _file: file })
    }
}

/// Who holds a lock, as its file says.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    let info: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    match (info["pid"].as_u64(), info["host"].as_str()) {
        (Some(pid), Some(host)) => {
            let started = UNIX_EPOCH + std::time::Duration::from_secs(info["started"].as_u64().unwrap_or(0));
            format!("pid {pid} on host {host} (since {}: {})", httpdate::fmt_http_date(started), info["command"].as_str().unwrap_or("?"))
        }
        _ => "another process (it has not written its name yet)".to_string(),
    }
}

fn write_holder(file: &mut File) -> std::io::Result<()> {
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let command: Vec<String> = std::env::args().collect();
    let info = serde_json::json!({"pid": std::process::id(), "host": host_name(), "started": started, "command": command.join(" ")});
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(format!("{info}\n").as_bytes())?;
    file.sync_data()
}

/// This machine's name (for the message another process shows).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_by_name_and_the_lock_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StageLock::acquire(dir.path(), "classify", Shard::ALL, false).unwrap();
        let err = StageLock::acquire(dir.path(), "classify", Shard::ALL, false).err().unwrap().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("--wait"), "{err}");
        let other_shard = Shard { index: 1, count: 2 };
        let _shard = StageLock::acquire(dir.path(), "classify", other_shard, false).expect("shards lock apart");
        let _other_stage = StageLock::acquire(dir.path(), "rewrite", Shard::ALL, false).expect("stages lock apart");
        drop(first);
        StageLock::acquire(dir.path(), "classify", Shard::ALL, false).expect("free again once dropped");
    }
}
