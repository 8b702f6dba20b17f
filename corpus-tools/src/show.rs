//! `corpus-tools show DOC_ID`: one document's story through the run: the text and where it
//! came from, the classifier's labels with the raw answers, whether it was selected, its
//! rewrite, the set and split it ended up in, and the requests spent on it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Map, Value};

use datafusion::prelude::{col, lit};

use crate::catalog::{Catalog, json_rows, parquet_files, set_names};
use crate::sql;

const CUT: usize = 2000;

pub async fn run(run: &Path, doc_id: &str, full: bool) -> Result<()> {
    let catalog = sql::open(run).await?;
    let id = resolve(&catalog, doc_id).await?;
    print!("{}", render(&catalog, &id, if full { 0 } else { CUT }).await?);
    Ok(())
}

/// The full id for an id or a unique prefix (hex only, so it can go into SQL as is).
async fn resolve(catalog: &Catalog, given: &str) -> Result<String> {
    let given = given.trim().to_lowercase();
    if given.len() < 6 || !given.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "{given:?} is not a document id: ids are 32 hex digits (give at least 6); list some with `corpus-tools sql --run {} \"SELECT doc_id FROM docs LIMIT 10\"`",
            catalog.run.display()
        );
    }
    if !catalog.has("docs") {
        bail!("{} has no docs table yet: run the sample stage first", catalog.run.display());
    }
    let rows = catalog.rows(&format!("SELECT doc_id FROM docs WHERE starts_with(doc_id, '{given}') ORDER BY doc_id LIMIT 6")).await?;
    match rows.len() {
        0 => bail!("no document {given} in {}/docs", catalog.run.display()),
        1 => Ok(rows[0]["doc_id"].as_str().unwrap_or_default().to_string()),
        _ => {
            let ids: Vec<&str> = rows.iter().filter_map(|r| r["doc_id"].as_str()).collect();
            bail!("{given} is the start of several ids ({}{}): give more digits", ids.join(", "), if ids.len() == 6 { ", ..." } else { "" })
        }
    }
}

async fn render(catalog: &Catalog, id: &str, cut: usize) -> Result<String> {
    let mut s = String::new();
    render_document(catalog, id, cut, &mut s).await?;
    render_labels(catalog, id, cut, &mut s).await?;
    render_choice(catalog, id, cut, &mut s).await?;
    render_sets(catalog, id, &mut s).await?;
    render_requests(catalog, id, &mut s).await?;
    Ok(s)
}

/// The document: where it came from, and its text.
async fn render_document(catalog: &Catalog, id: &str, cut: usize, s: &mut String) -> Result<()> {
    let one = |rows: Vec<Map<String, Value>>| rows.into_iter().next();
    let doc = one(catalog.rows(&format!("SELECT * FROM docs WHERE doc_id = '{id}'")).await?).unwrap_or_default();
    let _ = writeln!(s, "# document {id}\n");
    for k in ["source", "revision", "file", "row", "url", "n_chars"] {
        let _ = writeln!(s, "{k}: {}", plain(doc.get(k)));
    }
    let _ = writeln!(s, "\n## text\n\n{}\n", clip(&plain(doc.get("text")), cut));

    Ok(())
}

/// Its labels: each task's values, status and raw answer.
async fn render_labels(catalog: &Catalog, id: &str, cut: usize, s: &mut String) -> Result<()> {
    let one = |rows: Vec<Map<String, Value>>| rows.into_iter().next();
    s.push_str("## labels\n\n");
    match catalog.has("labels").then_some(()) {
        None => s.push_str("(no labels table: the classify stage has not run)\n\n"),
        Some(()) => match one(catalog.rows(&format!("SELECT * FROM labels WHERE doc_id = '{id}'")).await?) {
            None => s.push_str("(not classified)\n\n"),
            Some(l) => {
                let _ = writeln!(
                    s,
                    "model: {}, prompt tokens {}, completion tokens {}, latency {} ms\n",
                    plain(l.get("model")),
                    plain(l.get("prompt_tokens")),
                    plain(l.get("completion_tokens")),
                    plain(l.get("latency_ms"))
                );
                for (task, value_cols) in [
                    ("backtracking", &["backtracking"][..]),
                    ("verification", &["verification"][..]),
                    ("subgoal_setting", &["subgoal_setting"][..]),
                    ("backward_chaining", &["backward_chaining"][..]),
                    ("problem_solution", &["has_problem", "has_solution"][..]),
                    ("joint", &["joint_backtracking", "joint_verification", "joint_subgoal_setting", "joint_backward_chaining"][..]),
                ] {
                    let Some(status) = l.get(&format!("{task}_status")) else { continue };
                    let values: Vec<String> = value_cols.iter().filter(|c| l.contains_key(**c)).map(|c| format!("{c} = {}", plain(l.get(*c)))).collect();
                    let _ = writeln!(s, "### {task}: {} ({})\n", values.join(", "), plain(Some(status)));
                    let _ = writeln!(s, "{}\n", clip(&plain(l.get(&format!("{task}_raw"))), cut));
                }
            }
        },
    }

    Ok(())
}

/// Its selection and its rewrite.
async fn render_choice(catalog: &Catalog, id: &str, cut: usize, s: &mut String) -> Result<()> {
    let one = |rows: Vec<Map<String, Value>>| rows.into_iter().next();
    s.push_str("## selection\n\n");
    let chosen = if catalog.has("selection") { one(catalog.rows(&format!("SELECT \"set\" FROM selection WHERE doc_id = '{id}'")).await?) } else { None };
    let _ = writeln!(s, "{}\n", chosen.map_or("not selected for either set".to_string(), |r| format!("selected for the {} set", plain(r.get("set")))));

    s.push_str("## rewrite\n\n");
    match if catalog.has("rewrites") { one(catalog.rows(&format!("SELECT * FROM rewrites WHERE doc_id = '{id}'")).await?) } else { None } {
        None => s.push_str("(no rewrite)\n\n"),
        Some(r) => {
            let _ = writeln!(s, "status: {}, model {}, prompt sha256 {}\n", plain(r.get("status")), plain(r.get("model")), plain(r.get("prompt_hash")));
            if r.get("status").and_then(Value::as_str) == Some("ok") {
                for k in ["question", "thoughts", "answer"] {
                    let _ = writeln!(s, "### {k}\n\n{}\n", clip(&plain(r.get(k)), cut));
                }
            } else {
                let _ = writeln!(s, "### raw answer\n\n{}\n", clip(&plain(r.get("raw")), cut));
            }
        }
    }

    Ok(())
}

/// The set shards that hold it.
async fn render_sets(catalog: &Catalog, id: &str, s: &mut String) -> Result<()> {
    s.push_str("## in the sets\n\n");
    let places = shards_holding(catalog, id).await?;
    if places.is_empty() {
        s.push_str("in no set (not chosen for the token budget, a duplicate, or the build has not run)\n\n");
    }
    for (file, split, tokens) in places {
        let _ = writeln!(s, "- {file} (split {split}, {tokens} tokens)");
    }

    Ok(())
}

/// The LLM requests about it.
async fn render_requests(catalog: &Catalog, id: &str, s: &mut String) -> Result<()> {
    if catalog.has("requests") {
        s.push_str("\n## requests\n\n");
        let rows = catalog
            .rows(&format!(
                "SELECT stage, task, status, count(*) AS n, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, sum(latency_ms) AS latency_ms \
                 FROM requests WHERE doc_id = '{id}' GROUP BY stage, task, status ORDER BY stage, task, status"
            ))
            .await?;
        for r in rows {
            let _ = writeln!(
                s,
                "- {} {} {}: {} request(s), {} prompt + {} completion tokens, {} ms",
                plain(r.get("stage")),
                plain(r.get("task")),
                plain(r.get("status")),
                plain(r.get("n")),
                plain(r.get("prompt_tokens")),
                plain(r.get("completion_tokens")),
                plain(r.get("latency_ms"))
            );
        }
    }
    Ok(())
}

/// The set shards (relative paths) that hold the document, with split and packed tokens.
async fn shards_holding(catalog: &Catalog, id: &str) -> Result<Vec<(String, String, u64)>> {
    let mut out = Vec::new();
    for set in set_names(&catalog.run) {
        for file in parquet_files(&catalog.run.join(run_contract::tables::SETS).join(&set).join(run_contract::set::DATA))? {
            let df = catalog.ctx.read_parquet(file.display().to_string(), Default::default()).await?;
            let df = df.filter(col("doc_id").eq(lit(id)))?.select(vec![col("split"), (col("prompt_tokens") + col("completion_tokens")).alias("tokens")])?;
            let rel = file.strip_prefix(&catalog.run).unwrap_or(&file).display().to_string();
            for row in json_rows(df).await? {
                out.push((rel.clone(), plain(row.get("split")), row.get("tokens").and_then(Value::as_u64).unwrap_or(0)));
            }
        }
    }
    Ok(out)
}

fn plain(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn clip(text: &str, cut: usize) -> String {
    if cut == 0 || text.chars().count() <= cut {
        return text.to_string();
    }
    let head: String = text.chars().take(cut).collect();
    format!("{head}\n[... {} more characters; --full shows all]", text.chars().count() - cut)
}
