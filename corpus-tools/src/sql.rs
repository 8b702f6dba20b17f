//! The `sql` command: one statement over the run's tables, or (see `repl`) many. A failed
//! statement prints DataFusion's own message, then the tables and their columns.

use std::path::Path;

use anyhow::Result;

use crate::catalog::Catalog;
use crate::output::{self, Format};

/// Opens the run's catalog and prints its warnings.
pub async fn open(run: &Path) -> Result<Catalog> {
    let catalog = Catalog::open(run).await?;
    for w in &catalog.warnings {
        eprintln!("warning: {w}");
    }
    Ok(catalog)
}

/// Runs one statement and writes its result; returns the exit code (1 when the SQL failed).
pub async fn run_one(catalog: &Catalog, query: &str, format: Format, out: Option<&Path>, max_width: usize) -> Result<i32> {
    match execute(catalog, query, format, out, max_width).await {
        Ok(_) => Ok(0),
        Err(report) => {
            eprintln!("{report}");
            Ok(1)
        }
    }
}

/// Runs a statement; on failure returns the message to show (the error and the tables).
pub async fn execute(catalog: &Catalog, query: &str, format: Format, out: Option<&Path>, max_width: usize) -> Result<u64, String> {
    let df = catalog.sql(query).await.map_err(|e| failure(catalog, &e.to_string()))?;
    let rows = output::write(df, format, out, max_width).await.map_err(|e| failure(catalog, &format!("{e:#}")))?;
    if let Some(path) = out {
        eprintln!("{rows} rows written to {}", path.display());
    }
    Ok(rows)
}

fn failure(catalog: &Catalog, error: &str) -> String {
    format!("error: {error}\n\ntables of {} (name (files): columns):\n{}", catalog.run.display(), catalog.describe())
}
