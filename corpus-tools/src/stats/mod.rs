//! `corpus-tools stats`: the report a curator reads after a run, as `report.md` with plots
//! beside it: the sources, behavior prevalence per source (the study's Figure 7), the count
//! distributions, problem/solution rates, parse failures per prompt, LLM usage and
//! failures, and the two sets' lengths and composition. With `--compare`, a second run
//! sits beside the first in every table and plot. The report is written to a staging
//! folder and swapped in whole.

pub mod plots;
pub mod queries;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use crate::catalog::Catalog;
use plots::{Bars, Image, Lines, Series};
use queries::Query;

type Row = Map<String, Value>;

/// A run with the label the report gives it.
struct Labeled {
    label: String,
    catalog: Catalog,
}

/// Results of one query for each run (rows tagged with `run` when comparing).
struct Results {
    rows: Vec<(String, Vec<Row>)>,
}

impl Results {
    fn all(&self) -> impl Iterator<Item = (&str, &Row)> {
        self.rows.iter().flat_map(|(label, rows)| rows.iter().map(move |r| (label.as_str(), r)))
    }
}

pub async fn run(run: &Path, compare: Option<&Path>, out: &Path, image: Image) -> Result<()> {
    plots::ensure_font()?;
    let mut runs = vec![open(run).await?];
    if let Some(other) = compare {
        let b = open(other).await?;
        if b.label == runs[0].label {
            runs[0].label = format!("A {}", runs[0].label);
            runs.push(Labeled { label: format!("B {}", b.label), catalog: b.catalog });
        } else {
            runs.push(b);
        }
    }
    let staging = pipeline::run_dir::staging_for(out)?;
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let report = Report { runs: &runs, dir: &staging, image };
    let md = report.render().await?;
    pipeline::run_dir::write_atomic(&staging.join("report.md"), md.as_bytes())?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    std::fs::rename(&staging, out).with_context(|| format!("cannot move the report to {}", out.display()))?;
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

async fn open(run: &Path) -> Result<Labeled> {
    let catalog = crate::sql::open(run).await?;
    let label =
        std::fs::canonicalize(run).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| run.display().to_string());
    Ok(Labeled { label, catalog })
}

struct Report<'a> {
    runs: &'a [Labeled],
    dir: &'a Path,
    image: Image,
}

impl Report<'_> {
    fn comparing(&self) -> bool {
        self.runs.len() > 1
    }

    /// Runs the named standard query on every run that has it.
    async fn results(&self, name: &str) -> Result<Option<Results>> {
        let mut rows = Vec::new();
        for r in self.runs {
            if let Some(q) = queries::standard(&r.catalog).into_iter().find(|q: &Query| q.name == name) {
                rows.push((r.label.clone(), r.catalog.rows(&q.sql).await?));
            }
        }
        Ok((!rows.is_empty()).then_some(Results { rows }))
    }

    /// A Markdown table of the results (a `run` column first when comparing).
    fn table(&self, res: &Results, columns: &[&str]) -> String {
        let mut head: Vec<&str> = Vec::new();
        if self.comparing() {
            head.push("run");
        }
        head.extend_from_slice(columns);
        let mut s = format!("| {} |\n|{}|\n", head.join(" | "), head.iter().map(|_| " --- ").collect::<Vec<_>>().join("|"));
        for (label, row) in res.all() {
            let mut cells: Vec<String> = Vec::new();
            if self.comparing() {
                cells.push(label.to_string());
            }
            cells.extend(columns.iter().map(|c| cell(row.get(*c))));
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        s
    }

    fn series_name(&self, label: &str, name: &str) -> String {
        if self.comparing() { format!("{label}: {name}") } else { name.to_string() }
    }

    async fn render(&self) -> Result<String> {
        let mut md = String::new();
        let names: Vec<&str> = self.runs.iter().map(|r| r.label.as_str()).collect();
        let _ = writeln!(md, "# habits run report: {}\n", names.join(" vs "));
        let _ = writeln!(
            md,
            "Made by `corpus-tools stats` from {}. Every number below is a SQL query over the run's tables (`corpus-tools sql`); the queries are in `corpus-tools/src/stats/queries.rs`.\n",
            self.runs.iter().map(|r| format!("`{}`", r.catalog.run.display())).collect::<Vec<_>>().join(" and ")
        );
        self.sources(&mut md).await?;
        self.prevalence(&mut md).await?;
        self.counts(&mut md).await?;
        self.behaviors_by_step(&mut md).await?;
        self.problem_solution(&mut md).await?;
        self.statuses(&mut md).await?;
        self.usage(&mut md).await?;
        self.sets(&mut md).await?;
        Ok(md)
    }

    async fn sources(&self, md: &mut String) -> Result<()> {
        let Some(res) = self.results("sources").await? else { return Ok(()) };
        md.push_str("## Sources\n\n");
        md.push_str(&self.table(&res, &["source", "documents", "characters", "mean_characters"]));
        md.push('\n');
        Ok(())
    }

    async fn prevalence(&self, md: &mut String) -> Result<()> {
        let Some(res) = self.results("prevalence").await? else { return Ok(()) };
        md.push_str("## Behavior prevalence per source (the study's Figure 7)\n\nShare of classified documents with a count above 0 (documents whose label is missing are left out of the share; their number is in the `_missing` columns).\n\n");
        let behaviors: Vec<&str> = queries::BEHAVIORS.iter().copied().filter(|b| res.all().any(|(_, r)| r.contains_key(*b))).collect();
        let mut columns = vec!["source", "documents"];
        columns.extend(&behaviors);
        let missing: Vec<String> = behaviors.iter().map(|b| format!("{b}_missing")).collect();
        columns.extend(missing.iter().map(String::as_str));
        md.push_str(&self.table(&res, &columns));
        let categories: Vec<String> = behaviors.iter().map(|b| b.replace('_', " ")).collect();
        let series: Vec<Series<f64>> = res
            .all()
            .map(|(label, r)| Series { name: self.series_name(label, &cell(r.get("source"))), values: behaviors.iter().map(|b| num(r.get(*b))).collect() })
            .collect();
        let file =
            Bars { title: "Documents showing each behavior, per source", y_label: "% of documents with count > 0", categories: &categories, series: &series }
                .save(self.dir, "prevalence", self.image)?;
        let _ = writeln!(md, "\n![prevalence]({file})\n");
        Ok(())
    }

    async fn counts(&self, md: &mut String) -> Result<()> {
        let Some(res) = self.results("count_distribution").await? else { return Ok(()) };
        md.push_str("## Count distributions\n\nHow many times a document shows each behavior (10 = 10 or more), as a share of its classified documents.\n\n");
        let mut pivot: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
        for (label, r) in res.all() {
            pivot.entry((label.to_string(), cell(r.get("behavior")))).or_default().insert(num(r.get("bucket")) as i64, num(r.get("percent")));
        }
        let buckets: Vec<String> = (0..=10).map(|b| if b == 10 { "10+".to_string() } else { b.to_string() }).collect();
        let mut head = if self.comparing() { "| run | behavior |".to_string() } else { "| behavior |".to_string() };
        buckets.iter().for_each(|b| head.push_str(&format!(" {b} |")));
        let _ = writeln!(md, "{head}\n|{}", " --- |".repeat(buckets.len() + if self.comparing() { 2 } else { 1 }));
        let mut series = Vec::new();
        for ((label, behavior), by_bucket) in &pivot {
            let values: Vec<f64> = (0..=10).map(|b| by_bucket.get(&b).copied().unwrap_or(0.0)).collect();
            let mut row = if self.comparing() { format!("| {label} | {behavior} |") } else { format!("| {behavior} |") };
            values.iter().for_each(|v| row.push_str(&format!(" {v:.1} |")));
            let _ = writeln!(md, "{row}");
            series.push(Series { name: self.series_name(label, behavior), values });
        }
        let file = Bars { title: "Behavior counts per document", y_label: "% of classified documents", categories: &buckets, series: &series }.save(
            self.dir,
            "count_distribution",
            self.image,
        )?;
        let _ = writeln!(md, "\n![counts]({file})\n");
        Ok(())
    }

    async fn behaviors_by_step(&self, md: &mut String) -> Result<()> {
        let Some(res) = self.results("behaviors_by_step").await? else { return Ok(()) };
        md.push_str(
            "## Behaviors over PPO steps (the study's Figure 1, middle)\n\nThe tracked rollouts of each step (`rollouts` joined with their `labels`): mean count per response of each behavior (a missing count taken as 0, as the study measured), the share of responses with a count above 0 (`_share`, %) and the share whose count is missing (`_missing`, %).\n\n",
        );
        let behaviors: Vec<&str> = queries::BEHAVIORS.iter().copied().filter(|b| res.all().any(|(_, r)| r.contains_key(*b))).collect();
        let mut columns = vec!["step", "rollouts", "reward_mean", "response_tokens"];
        columns.extend(&behaviors);
        let shares: Vec<String> = behaviors.iter().flat_map(|b| [format!("{b}_share"), format!("{b}_missing")]).collect();
        columns.extend(shares.iter().map(String::as_str));
        md.push_str(&self.table(&res, &columns));
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (label, r) in res.all() {
            for b in &behaviors {
                by_series.entry(self.series_name(label, &b.replace('_', " "))).or_default().push((num(r.get("step")), num(r.get(*b))));
            }
        }
        let series: Vec<Series<(f64, f64)>> = by_series.into_iter().map(|(name, values)| Series { name, values }).collect();
        let file = Lines { title: "Behaviors in PPO rollouts", x_label: "PPO step", y_label: "mean count per response", series: &series }.save(
            self.dir,
            "behaviors_by_step",
            self.image,
        )?;
        let _ = writeln!(md, "\n![behaviors over steps]({file})\n");
        Ok(())
    }

    async fn problem_solution(&self, md: &mut String) -> Result<()> {
        let Some(res) = self.results("problem_solution").await? else { return Ok(()) };
        md.push_str("## Problem and solution\n\nShare of classified documents that contain a problem, a solution, and both.\n\n");
        md.push_str(&self.table(&res, &["source", "documents", "has_problem", "has_solution", "both", "missing"]));
        let categories: Vec<String> = ["has problem", "has solution", "both"].iter().map(|s| s.to_string()).collect();
        let series: Vec<Series<f64>> = res
            .all()
            .map(|(label, r)| Series {
                name: self.series_name(label, &cell(r.get("source"))),
                values: ["has_problem", "has_solution", "both"].iter().map(|k| num(r.get(*k))).collect(),
            })
            .collect();
        let file = Bars { title: "Problems and solutions, per source", y_label: "% of documents", categories: &categories, series: &series }.save(
            self.dir,
            "problem_solution",
            self.image,
        )?;
        let _ = writeln!(md, "\n![problem and solution]({file})\n");
        Ok(())
    }

    async fn statuses(&self, md: &mut String) -> Result<()> {
        if let Some(res) = self.results("label_status").await? {
            md.push_str("## Parse failures per prompt\n\nEvery classifier prompt (task) and how its answers ended: `ok`, or why the value is missing.\n\n");
            md.push_str(&self.table(&res, &["task", "status", "documents", "percent"]));
            let mut failed: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
            for (label, r) in res.all() {
                let share = failed.entry(label.to_string()).or_default().entry(cell(r.get("task"))).or_insert(0.0);
                if cell(r.get("status")) != "ok" {
                    *share += num(r.get("percent"));
                }
            }
            let categories: Vec<String> = failed.values().flat_map(|m| m.keys().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            let series: Vec<Series<f64>> = failed
                .iter()
                .map(|(label, m)| Series {
                    name: self.series_name(label, "not ok"),
                    values: categories.iter().map(|c| m.get(c).copied().unwrap_or(0.0)).collect(),
                })
                .collect();
            let file = Bars { title: "Answers that did not parse, per prompt", y_label: "% of documents", categories: &categories, series: &series }.save(
                self.dir,
                "parse_failures",
                self.image,
            )?;
            let _ = writeln!(md, "\n![parse failures]({file})\n");
        }
        if let Some(res) = self.results("rewrite_status").await? {
            md.push_str("### Rewrites\n\n");
            md.push_str(&self.table(&res, &["set", "status", "documents", "percent"]));
            md.push('\n');
        }
        Ok(())
    }

    async fn usage(&self, md: &mut String) -> Result<()> {
        let Some(res) = self.results("llm_usage").await? else { return Ok(()) };
        md.push_str("## LLM usage\n\nEvery finished request in the journals (a retried failure counts each time it was sent).\n\n");
        md.push_str(&self.table(
            &res,
            &["stage", "task", "requests", "failed", "prompt_tokens", "completion_tokens", "seconds", "mean_latency_ms", "max_latency_ms", "attempts"],
        ));
        let mut tokens: BTreeMap<String, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
        for (label, r) in res.all() {
            let (stage, task) = (cell(r.get("stage")), cell(r.get("task")));
            let name = if stage == "classify" { task } else { format!("{stage}: {task}") };
            let e = tokens.entry(label.to_string()).or_default().entry(name).or_insert((0.0, 0.0));
            e.0 += num(r.get("prompt_tokens"));
            e.1 += num(r.get("completion_tokens"));
        }
        let categories: Vec<String> = tokens.values().flat_map(|m| m.keys().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let mut series = Vec::new();
        for (label, m) in &tokens {
            series.push(Series { name: self.series_name(label, "prompt tokens"), values: categories.iter().map(|c| m.get(c).map_or(0.0, |v| v.0)).collect() });
            series.push(Series {
                name: self.series_name(label, "completion tokens"),
                values: categories.iter().map(|c| m.get(c).map_or(0.0, |v| v.1)).collect(),
            });
        }
        let file = Bars { title: "Tokens per stage and prompt", y_label: "tokens", categories: &categories, series: &series }.save(
            self.dir,
            "llm_tokens",
            self.image,
        )?;
        let _ = writeln!(md, "\n![tokens]({file})\n");
        if let Some(res) = self.results("failures").await? {
            md.push_str("### Failed requests by class\n\n");
            if res.all().next().is_none() {
                md.push_str("none\n\n");
            } else {
                md.push_str(&self.table(&res, &["stage", "failure", "requests", "documents"]));
                md.push('\n');
            }
        }
        Ok(())
    }

    async fn sets(&self, md: &mut String) -> Result<()> {
        let Some(res) = self.results("set_lengths").await? else { return Ok(()) };
        md.push_str("## The two sets\n\nCompletion tokens (the Llama-3 tokenizer, counted up to the clip) per set and split.\n\n");
        md.push_str(&self.table(&res, &["set", "split", "rows", "completion_tokens", "prompt_tokens", "min", "median", "mean", "max", "truncated"]));
        if let Some(cdf) = self.results("length_cdf").await? {
            let mut counts: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for (label, r) in cdf.all() {
                counts.entry(self.series_name(label, &cell(r.get("set")))).or_default().push((num(r.get("tokens")), num(r.get("rows"))));
            }
            let series: Vec<Series<(f64, f64)>> = counts.into_iter().map(|(name, points)| Series { name, values: cumulative_steps(&points) }).collect();
            let file = Lines {
                title: "Completion lengths of the sets (cumulative)",
                x_label: "completion tokens",
                y_label: "% of the set's rows at or below",
                series: &series,
            }
            .save(self.dir, "set_lengths", self.image)?;
            let _ = writeln!(md, "\n![set lengths]({file})\n");
        }
        if let Some(comp) = self.results("set_composition").await? {
            md.push_str("### Composition by source\n\n");
            md.push_str(&self.table(&comp, &["set", "source", "rows", "completion_tokens", "percent_tokens"]));
            let sources: Vec<String> = comp.all().map(|(_, r)| cell(r.get("source"))).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            let mut by_set: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
            for (label, r) in comp.all() {
                by_set.entry(self.series_name(label, &cell(r.get("set")))).or_default().insert(cell(r.get("source")), num(r.get("percent_tokens")));
            }
            let series: Vec<Series<f64>> =
                by_set.into_iter().map(|(name, m)| Series { name, values: sources.iter().map(|s| m.get(s).copied().unwrap_or(0.0)).collect() }).collect();
            let file = Bars { title: "Where each set's tokens come from", y_label: "% of completion tokens", categories: &sources, series: &series }.save(
                self.dir,
                "set_composition",
                self.image,
            )?;
            let _ = writeln!(md, "\n![composition]({file})\n");
        }
        Ok(())
    }
}

/// (length, rows) sorted by length -> the steps of the cumulative share in percent.
fn cumulative_steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let total: f64 = points.iter().map(|p| p.1).sum::<f64>().max(1.0);
    let mut out = Vec::with_capacity(points.len() * 2 + 1);
    let mut seen = 0.0;
    if let Some(first) = points.first() {
        out.push((first.0, 0.0));
    }
    for &(x, n) in points {
        out.push((x, 100.0 * seen / total));
        seen += n;
        out.push((x, 100.0 * seen / total));
    }
    out
}

fn num(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// A value as a table cell: floats with 2 decimals.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
        Some(other) => other.to_string(),
    }
}
