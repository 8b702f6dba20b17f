//! The `pipeline` binary: parses the command line, sets up logging, runs, and turns an
//! error into one message and exit code 1.

use clap::Parser;
use pipeline::cli::{Cli, run};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: page-sized decode buffers are reused instead of being
/// mapped and unmapped per page (a third less time in the sample scan, see docs/PERF.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("HABITS_LOG").unwrap_or_else(|_| EnvFilter::new(format!("pipeline={level},warn")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    // Ctrl-C drops the running command, so what it started (a local llama-server) stops too.
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => r.map(|_| true),
            _ = tokio::signal::ctrl_c() => Ok(false),
        }
    });
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("interrupted: finished work is kept; rerun the same command to resume");
            std::process::exit(130);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
