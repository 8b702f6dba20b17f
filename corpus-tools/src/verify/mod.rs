//! `corpus-tools verify`: recomputes what the manifests promise (every listed file exists
//! with its size, sha256, rows and tokens; no unlisted file sits beside them; the set
//! totals add up) and checks lineage (every row of a later table traces back through the
//! earlier ones to a `docs` row). Prints one line per check; the exit code is the verdict.

mod files;
mod lineage;

use std::path::Path;

use anyhow::Result;

use crate::manifests;
use crate::sql;

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub problems: Vec<String>,
}

impl Check {
    pub fn new(name: impl Into<String>) -> Self {
        Check { name: name.into(), problems: Vec::new() }
    }

    pub fn fail(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }
}

/// Runs every check and prints the report; true when all pass.
pub async fn run(run: &Path) -> Result<bool> {
    let found = manifests::find(run)?;
    if found.is_empty() {
        anyhow::bail!("{} has no manifests to verify: is it a run folder? (`pipeline run` makes one)", run.display());
    }
    let mut checks = files::check(run, &found)?;
    let catalog = sql::open(run).await?;
    checks.extend(lineage::check(&catalog).await?);
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.problems.is_empty()).collect();
    for c in &checks {
        if c.problems.is_empty() {
            println!("ok      {}", c.name);
        } else {
            println!("FAILED  {}", c.name);
            for p in c.problems.iter().take(10) {
                println!("        - {p}");
            }
            if c.problems.len() > 10 {
                println!("        - ... and {} more", c.problems.len() - 10);
            }
        }
    }
    let listed: usize = found.iter().map(|m| m.files.len()).sum();
    if failed.is_empty() {
        println!("verified: {} checks over {} manifests and {listed} listed files", checks.len(), found.len());
    } else {
        println!(
            "verification FAILED: {} of {} checks (rerun the stage that wrote a damaged file; `pipeline run` redoes what is missing)",
            failed.len(),
            checks.len()
        );
    }
    Ok(failed.is_empty())
}
