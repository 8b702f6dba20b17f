//! The interactive prompt of `corpus-tools sql`: statements end with `;` and may span
//! lines; history persists in `${HABITS_CACHE:-~/.cache/habits}/corpus-tools/history`.
//! `\d` lists the tables, `\f FORMAT` switches the output format, `\q` quits.

use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::catalog::Catalog;
use crate::output::Format;
use crate::sql;

const HELP: &str = "statements end with ';'.  \\d: tables and columns   \\f table|csv|json|jsonl: output format   \\q: quit";

/// Reads statements until end of input or `\q`.
pub async fn run(catalog: &Catalog, mut format: Format, max_width: usize) -> Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = history_path();
    if let Some(path) = &history {
        editor.load_history(path).ok();
    }
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    if interactive {
        eprintln!("corpus-tools sql over {} ({} tables). {HELP}", catalog.run.display(), catalog.tables.len());
    }
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "sql> " } else { "...> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if pending.is_empty() && trimmed.starts_with('\\') {
            editor.add_history_entry(trimmed).ok();
            match meta(catalog, trimmed, &mut format) {
                Meta::Quit => break,
                Meta::Continue => continue,
            }
        }
        if trimmed.is_empty() {
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let statement = std::mem::take(&mut pending);
        editor.add_history_entry(statement.trim()).ok();
        if let Err(report) = sql::execute(catalog, statement.trim().trim_end_matches(';'), format, None, max_width).await {
            eprintln!("{report}");
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        editor.save_history(path).ok();
    }
    Ok(())
}

enum Meta {
    Quit,
    Continue,
}

fn meta(catalog: &Catalog, command: &str, format: &mut Format) -> Meta {
    let mut words = command.split_whitespace();
    match (words.next().unwrap_or(""), words.next()) {
        ("\\q", _) => return Meta::Quit,
        ("\\d", _) => print!("{}", catalog.describe()),
        ("\\f", Some(name)) => match Format::from_str(name, true) {
            Ok(Format::Parquet) | Err(_) => eprintln!("unknown format {name:?}: table, csv, json or jsonl"),
            Ok(f) => *format = f,
        },
        _ => eprintln!("{HELP}"),
    }
    Meta::Continue
}

fn history_path() -> Option<PathBuf> {
    Some(pipeline::config::habits_cache().join("corpus-tools").join("history"))
}
