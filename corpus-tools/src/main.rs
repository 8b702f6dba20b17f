//! The `corpus-tools` binary: SQL over a run, the statistics report with plots, one
//! document's story, verification of every checksum and lineage, and exports for other
//! trainers. Errors are one message and exit code 1 (`verify`: 1 also when a check fails).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use corpus_tools::{export, output, repl, show, sql, stats, verify};

#[derive(Parser)]
#[command(name = "corpus-tools", version, about = "Query, report on, verify and export a habits run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one SQL query over the run's tables; with no query, an interactive prompt.
    Sql {
        /// The run's folder, e.g. runs/demo.
        #[arg(long)]
        run: PathBuf,
        /// The query (one statement); omit it for the interactive prompt.
        query: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: output::Format,
        /// Write the result to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// In the table format, cut cells longer than this many characters (0: never).
        #[arg(long, default_value_t = 60)]
        max_width: usize,
    },
    /// Lists the run's tables and their columns.
    Tables {
        #[arg(long)]
        run: PathBuf,
    },
    /// Writes the statistics report: Markdown plus plots.
    Stats {
        #[arg(long)]
        run: PathBuf,
        /// A second run to put beside the first in every table and plot.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// The report's folder (default: <run>/report).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Image format of the plots.
        #[arg(long, value_enum, default_value = "png")]
        image: stats::plots::Image,
        /// Print the report's SQL queries (JSON: name, sql) for this run and stop.
        #[arg(long)]
        print_sql: bool,
    },
    /// Shows one document: its text, labels with the raw answers, its rewrite, and where it ended up.
    Show {
        /// The document's id (or a unique prefix of at least 6 characters).
        doc_id: String,
        #[arg(long)]
        run: PathBuf,
        /// Print the whole text and answers instead of cutting them at 2,000 characters.
        #[arg(long)]
        full: bool,
    },
    /// Recomputes every checksum and count in the manifests and checks lineage.
    Verify {
        #[arg(long)]
        run: PathBuf,
    },
    /// Writes the built sets in one format, with a manifest and a dataset card.
    Export {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, value_enum)]
        format: export::ExportFormat,
        #[arg(long)]
        out: PathBuf,
        /// Only this set (default: every set).
        #[arg(long)]
        set: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs a command; returns the exit code.
async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Sql { run, query, format, out, max_width } => {
            let catalog = sql::open(&run).await?;
            match query {
                Some(q) => sql::run_one(&catalog, &q, format, out.as_deref(), max_width).await,
                None => repl::run(&catalog, format, max_width).await.map(|_| 0),
            }
        }
        Command::Tables { run } => {
            let catalog = sql::open(&run).await?;
            print!("{}", catalog.describe());
            Ok(0)
        }
        Command::Stats { run, print_sql: true, .. } => {
            let catalog = sql::open(&run).await?;
            let queries: Vec<serde_json::Value> =
                stats::queries::standard(&catalog).iter().map(|q| serde_json::json!({"name": q.name, "sql": q.sql})).collect();
            println!("{}", serde_json::to_string_pretty(&queries)?);
            Ok(0)
        }
        Command::Stats { run, compare, out, image, .. } => {
            let out = out.unwrap_or_else(|| run.join("report"));
            stats::run(&run, compare.as_deref(), &out, image).await.map(|_| 0)
        }
        Command::Show { doc_id, run, full } => show::run(&run, &doc_id, full).await.map(|_| 0),
        Command::Verify { run } => verify::run(&run).await.map(|ok| if ok { 0 } else { 1 }),
        Command::Export { run, format, out, set } => export::run(&run, format, &out, set.as_deref()).await.map(|_| 0),
    }
}
