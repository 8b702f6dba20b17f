//! A `llama-server` started for a run (the offline demo profile): on a free loopback port,
//! health-checked before use, its log in the run folder, and stopped with the run: when
//! the handle is dropped (also on Ctrl-C, which drops the running stage), and by the
//! kernel if the pipeline itself is killed (`PR_SET_PDEATHSIG`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::llm::config::ServeConfig;

/// A running server; stopped when dropped.
pub struct LocalServer {
    child: tokio::process::Child,
    /// `http://127.0.0.1:<port>/v1`.
    pub endpoint: String,
    pub log: PathBuf,
}

impl LocalServer {
    /// Starts the server and waits until `/health` says it is ready.
    pub async fn start(cfg: &ServeConfig, binary: &Path, model_file: &Path, log: &Path) -> Result<Self> {
        if !binary.is_file() {
            bail!("llama-server not found at {}: run `make llm-assets` (scripts/prepare_llm.sh) or set llm.serve.binary", binary.display());
        }
        if !model_file.is_file() {
            bail!("model file {} not found: run `make llm-assets` or set llm.serve.model_file", model_file.display());
        }
        let port = free_port()?;
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("-m")
            .arg(model_file)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", &cfg.context.to_string(), "-np", &cfg.parallel.to_string(), "-t", &cfg.threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child
        // when this process dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let mut server = LocalServer { child, endpoint: format!("http://127.0.0.1:{port}/v1"), log: log.to_path_buf() };
        server.wait_ready(port, Duration::from_secs(cfg.startup_timeout_s)).await?;
        tracing::info!("llama-server ready at {} (log: {})", server.endpoint, log.display());
        Ok(server)
    }

    async fn wait_ready(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let http = crate::http_client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("http://127.0.0.1:{port}/health");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("llama-server exited with {status} while starting; its log: {}\n{}", self.log.display(), tail(&self.log));
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!("llama-server was not ready after {:?} (llm.serve.startup_timeout_s); its log: {}\n{}", timeout, self.log.display(), tail(&self.log));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A port that was free a moment ago (the server's bind is checked by the health probe).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
