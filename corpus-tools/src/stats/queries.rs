//! The report's queries, as SQL that DataFusion and DuckDB both run unchanged (the bench
//! and the DuckDB agreement test use this list). A query that needs a table or column the
//! run lacks is left out.

use crate::catalog::Catalog;

pub const BEHAVIORS: [&str; 4] = ["backtracking", "verification", "subgoal_setting", "backward_chaining"];
/// The label tasks whose `<task>_status` columns say how parsing went.
pub const TASKS: [&str; 6] = ["backtracking", "verification", "subgoal_setting", "backward_chaining", "problem_solution", "joint"];

/// The share (%) of labelled rows whose count of `behavior` is above 0; missing labels are
/// left out of the share.
fn positive_share(behavior: &str, alias: &str) -> String {
    format!("100.0 * avg(CASE WHEN l.{behavior} IS NULL THEN NULL WHEN l.{behavior} > 0 THEN 1.0 ELSE 0.0 END) AS {alias}")
}

/// A named report query.
#[derive(Clone, Debug)]
pub struct Query {
    pub name: &'static str,
    pub sql: String,
}

/// Every query the run's tables allow, in report order.
pub fn standard(c: &Catalog) -> Vec<Query> {
    [documents(c), behaviors(c), problems(c), statuses(c), llm_usage(c), sets(c)].concat()
}

/// The sampled documents by source.
fn documents(c: &Catalog) -> Vec<Query> {
    let mut q = Vec::new();
    let mut add = |name: &'static str, sql: String| q.push(Query { name, sql });
    if c.has("docs") {
        add(
            "sources",
            "SELECT source, count(*) AS documents, sum(n_chars) AS characters, avg(n_chars) AS mean_characters FROM docs GROUP BY source ORDER BY source"
                .into(),
        );
    }
    q
}

/// How common each behavior is, by source and by count, and in a PPO run's rollouts.
fn behaviors(c: &Catalog) -> Vec<Query> {
    let mut q = Vec::new();
    let mut add = |name: &'static str, sql: String| q.push(Query { name, sql });
    let behaviors: Vec<&str> = BEHAVIORS.iter().copied().filter(|b| c.has_column("labels", b)).collect();
    if c.has("docs") && !behaviors.is_empty() {
        let missing = |b: &str| format!("sum(CASE WHEN l.{b} IS NULL THEN 1 ELSE 0 END) AS {b}_missing");
        add(
            "prevalence",
            format!(
                "SELECT d.source, count(*) AS documents, {}, {} FROM labels l JOIN docs d ON l.doc_id = d.doc_id GROUP BY d.source ORDER BY d.source",
                behaviors.iter().map(|b| positive_share(b, b)).collect::<Vec<_>>().join(", "),
                behaviors.iter().map(|b| missing(b)).collect::<Vec<_>>().join(", ")
            ),
        );
        let union = behaviors.iter().map(|b| format!("SELECT '{b}' AS behavior, {b} AS n FROM labels")).collect::<Vec<_>>().join(" UNION ALL ");
        add(
            "count_distribution",
            format!(
                "SELECT behavior, CASE WHEN n >= 10 THEN 10 ELSE n END AS bucket, count(*) AS documents, \
                 100.0 * count(*) / sum(count(*)) OVER (PARTITION BY behavior) AS percent \
                 FROM ({union}) u WHERE n IS NOT NULL GROUP BY behavior, CASE WHEN n >= 10 THEN 10 ELSE n END ORDER BY behavior, bucket"
            ),
        );
    }
    if c.has("rollouts") && !behaviors.is_empty() {
        // The study's metric: a missing count is taken as 0; its share is reported beside it.
        let mean = |b: &str| format!("avg(coalesce(l.{b}, 0)) AS {b}");
        let missing = |b: &str| format!("100.0 * avg(CASE WHEN l.{b} IS NULL THEN 1.0 ELSE 0.0 END) AS {b}_missing");
        add(
            "behaviors_by_step",
            format!(
                "SELECT r.step, count(*) AS rollouts, avg(r.score) AS reward_mean, avg(r.response_tokens) AS response_tokens, {}, {}, {} \
                 FROM rollouts r JOIN labels l ON r.doc_id = l.doc_id GROUP BY r.step ORDER BY r.step",
                behaviors.iter().map(|b| mean(b)).collect::<Vec<_>>().join(", "),
                behaviors.iter().map(|b| positive_share(b, &format!("{b}_share"))).collect::<Vec<_>>().join(", "),
                behaviors.iter().map(|b| missing(b)).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    q
}

/// Documents with a problem and a solution, by source.
fn problems(c: &Catalog) -> Vec<Query> {
    let mut q = Vec::new();
    let mut add = |name: &'static str, sql: String| q.push(Query { name, sql });
    if c.has("docs") && c.has_column("labels", "has_problem") {
        let pct = |e: &str| format!("100.0 * avg(CASE WHEN l.has_problem IS NULL THEN NULL WHEN {e} THEN 1.0 ELSE 0.0 END)");
        add(
            "problem_solution",
            format!(
                "SELECT d.source, count(*) AS documents, {} AS has_problem, {} AS has_solution, {} AS both, sum(CASE WHEN l.has_problem IS NULL THEN 1 ELSE 0 END) AS missing \
                 FROM labels l JOIN docs d ON l.doc_id = d.doc_id GROUP BY d.source ORDER BY d.source",
                pct("l.has_problem"),
                pct("l.has_solution"),
                pct("l.has_problem AND l.has_solution")
            ),
        );
    }
    q
}

/// How the label requests and the rewrites ended.
fn statuses(c: &Catalog) -> Vec<Query> {
    let mut q = Vec::new();
    let mut add = |name: &'static str, sql: String| q.push(Query { name, sql });
    let tasks: Vec<&str> = TASKS.iter().copied().filter(|t| c.has_column("labels", &format!("{t}_status"))).collect();
    if !tasks.is_empty() {
        let union = tasks.iter().map(|t| format!("SELECT '{t}' AS task, {t}_status AS status FROM labels")).collect::<Vec<_>>().join(" UNION ALL ");
        add(
            "label_status",
            format!(
                "SELECT task, status, count(*) AS documents, 100.0 * count(*) / sum(count(*)) OVER (PARTITION BY task) AS percent FROM ({union}) u GROUP BY task, status ORDER BY task, status"
            ),
        );
    }
    if c.has("rewrites") {
        add(
            "rewrite_status",
            "SELECT \"set\", status, count(*) AS documents, 100.0 * count(*) / sum(count(*)) OVER (PARTITION BY \"set\") AS percent FROM rewrites GROUP BY \"set\", status ORDER BY \"set\", status"
                .into(),
        );
    }
    q
}

/// What the LLM requests cost and how they failed.
fn llm_usage(c: &Catalog) -> Vec<Query> {
    let mut q = Vec::new();
    let mut add = |name: &'static str, sql: String| q.push(Query { name, sql });
    if c.has("requests") {
        add(
            "llm_usage",
            "SELECT stage, task, prompt_hash, count(*) AS requests, sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed, \
             sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, sum(latency_ms) / 1000.0 AS seconds, \
             avg(latency_ms) AS mean_latency_ms, max(latency_ms) AS max_latency_ms, sum(attempts) AS attempts \
             FROM requests GROUP BY stage, task, prompt_hash ORDER BY stage, task, prompt_hash"
                .into(),
        );
        add(
            "failures",
            "SELECT stage, failure, count(*) AS requests, count(DISTINCT doc_id) AS documents FROM requests WHERE status = 'failed' GROUP BY stage, failure ORDER BY stage, failure".into(),
        );
    }
    q
}

/// The built sets: lengths, composition and their distribution.
fn sets(c: &Catalog) -> Vec<Query> {
    let mut q = Vec::new();
    let mut add = |name: &'static str, sql: String| q.push(Query { name, sql });
    if c.has("sets") {
        add(
            "set_lengths",
            "SELECT \"set\", split, count(*) AS rows, sum(completion_tokens) AS completion_tokens, sum(prompt_tokens) AS prompt_tokens, \
             min(completion_tokens) AS min, median(CAST(completion_tokens AS DOUBLE)) AS median, avg(completion_tokens) AS mean, max(completion_tokens) AS max, \
             sum(CASE WHEN truncated THEN 1 ELSE 0 END) AS truncated FROM sets GROUP BY \"set\", split ORDER BY \"set\", split"
                .into(),
        );
        add(
            "set_composition",
            "SELECT \"set\", source, count(*) AS rows, sum(completion_tokens) AS completion_tokens, \
             100.0 * sum(completion_tokens) / sum(sum(completion_tokens)) OVER (PARTITION BY \"set\") AS percent_tokens \
             FROM sets GROUP BY \"set\", source ORDER BY \"set\", source"
                .into(),
        );
        add(
            "length_cdf",
            "SELECT \"set\", completion_tokens AS tokens, count(*) AS rows FROM sets GROUP BY \"set\", completion_tokens ORDER BY \"set\", tokens".into(),
        );
    }
    q
}
