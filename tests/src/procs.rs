//! Running the project's binaries and the Python readers from tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

/// The workspace's `target/<profile>/` folder, found from the running test binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// The path of a workspace binary (built by `cargo test --workspace`).
pub fn binary(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(p.is_file(), "{} is not built; run the tests with `cargo test --workspace` (make test)", p.display());
    p
}

/// The cache the project's scripts fill (`$HABITS_CACHE`, else `~/.cache/habits`).
pub fn habits_cache() -> PathBuf {
    match std::env::var("HABITS_CACHE") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/habits"),
    }
}

/// A file under the cache, e.g. `tokenizers/llama3/tokenizer.json`; panics with the fix
/// when `make llm-assets` has not fetched it.
pub fn cached_asset(relative: &str) -> PathBuf {
    let p = habits_cache().join(relative);
    assert!(p.is_file(), "{} is missing: run `make llm-assets` (make test does)", p.display());
    p
}

/// The Llama-3 tokenizer `make llm-assets` fetched.
pub fn llama3_tokenizer() -> PathBuf {
    cached_asset("tokenizers/llama3/tokenizer.json")
}

/// A `pipeline` command with a clean hub environment.
pub fn pipeline() -> Command {
    let mut c = Command::new(binary("pipeline"));
    for k in ["HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_TOKEN_PATH", "HABITS_LOG"] {
        c.env_remove(k);
    }
    c
}

/// Runs and returns the output; panics with both streams when the exit code differs.
pub fn run_expect(cmd: &mut Command, success: bool) -> Output {
    let out = cmd.output().expect("spawn");
    if out.status.success() != success {
        panic!(
            "{:?} exited with {} (expected {}):\n--- stdout\n{}\n--- stderr\n{}",
            cmd,
            out.status,
            if success { "success" } else { "failure" },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a Python snippet (argv after the script is `args`); returns stdout.
pub fn python(script: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    cmd.arg("-c").arg(script).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3 is needed for the reader checks");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("ModuleNotFoundError") {
            panic!("a Python package is missing: run `pip install -r tests/requirements.txt` (make test does)\n{err}");
        }
        panic!("python failed:\n{err}\n{}", String::from_utf8_lossy(&out.stdout));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sha256 of a file.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

/// Waits for `child` while sampling its peak resident set (`VmHWM` in
/// `/proc/<pid>/status`, read until the process is gone); returns its exit status and the
/// last peak read, in bytes.
pub fn wait_with_peak_memory(child: &mut Child) -> (ExitStatus, u64) {
    let status_file = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib * 1024);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
