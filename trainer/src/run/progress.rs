//! A training run's progress on stderr: a bar on a terminal, a line per step otherwise
//! (logs, CI, Slurm).

use std::io::IsTerminal;

pub struct Progress {
    total: usize,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// `total` steps, `done` of them already (a resumed run).
    pub fn new(total: usize, done: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64).with_position(done as u64);
            bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]").expect("a valid template"));
            bar
        });
        Progress { total, bar }
    }

    /// Step `step` is done; `line` tells how it went.
    pub fn step(&self, step: usize, line: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(line);
            }
            None => eprintln!("step {step}/{}  {line}", self.total),
        }
    }

    /// A line of its own (an evaluation's result).
    pub fn note(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}
