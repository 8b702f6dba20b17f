//! The `labels` table: one row per document, built from the journal after the requests:
//! the four counts (null when missing), problem/solution flags, each task's parse status
//! and raw answer, and the LLM usage. Also the study's statistics per behavior.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use super::parse::{parse_count, parse_problem_solution};
use super::prompts::{Answer, Prompt};
use crate::journal::Record;

/// Status of a task that has no journal record (e.g. a document added after the run).
pub const NOT_ASKED: &str = "not_asked";

/// The table's schema for the given tasks.
pub fn labels_schema(prompts: &[Prompt]) -> Arc<Schema> {
    let mut fields = vec![Field::new("doc_id", DataType::Utf8, false)];
    for p in prompts {
        match p.answer {
            Answer::Count => fields.push(Field::new(&p.task, DataType::Int32, true)),
            Answer::ProblemSolution => {
                fields.push(Field::new("has_problem", DataType::Boolean, true));
                fields.push(Field::new("has_solution", DataType::Boolean, true));
                fields.push(Field::new("domain", DataType::Utf8, true));
            }
        }
    }
    for p in prompts {
        fields.push(Field::new(format!("{}_status", p.task), DataType::Utf8, false));
        fields.push(Field::new(format!("{}_raw", p.task), DataType::Utf8, true));
    }
    fields.extend([
        Field::new("model", DataType::Utf8, false),
        Field::new("prompt_tokens", DataType::UInt64, false),
        Field::new("completion_tokens", DataType::UInt64, false),
        Field::new("latency_ms", DataType::UInt64, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Per-behavior statistics (the study's: % missing, % with count > 0, mean count).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BehaviorStats {
    pub documents: u64,
    pub missing: u64,
    pub positive: u64,
    pub count_sum: u64,
    pub pct_missing: f64,
    pub pct_positive: f64,
    pub mean_count: f64,
}

/// Totals over the table.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LabelStats {
    pub documents: u64,
    pub behaviors: BTreeMap<String, BehaviorStats>,
    pub has_problem: u64,
    pub has_solution: u64,
    pub problem_and_solution: u64,
    /// `<task>` -> `<status>` -> rows.
    pub statuses: BTreeMap<String, BTreeMap<String, u64>>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl LabelStats {
    pub fn finish(&mut self) {
        for b in self.behaviors.values_mut() {
            let known = b.documents - b.missing;
            b.pct_missing = pct(b.missing, b.documents);
            b.pct_positive = pct(b.positive, known);
            b.mean_count = if known == 0 { 0.0 } else { b.count_sum as f64 / known as f64 };
        }
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 }
}

/// Builds label rows batch by batch.
pub struct LabelsBuilder<'a> {
    prompts: &'a [Prompt],
    model: &'a str,
    max_count: u32,
    schema: Arc<Schema>,
    doc_id: StringBuilder,
    counts: Vec<Int32Builder>,
    has_problem: BooleanBuilder,
    has_solution: BooleanBuilder,
    domain: StringBuilder,
    status: Vec<StringBuilder>,
    raw: Vec<StringBuilder>,
    model_col: StringBuilder,
    prompt_tokens: UInt64Builder,
    completion_tokens: UInt64Builder,
    latency: UInt64Builder,
    pub stats: LabelStats,
}

impl<'a> LabelsBuilder<'a> {
    pub fn new(prompts: &'a [Prompt], model: &'a str, max_count: u32) -> Self {
        let n_counts = prompts.iter().filter(|p| p.answer == Answer::Count).count();
        let mut stats = LabelStats::default();
        for p in prompts.iter().filter(|p| p.answer == Answer::Count) {
            stats.behaviors.insert(p.task.clone(), BehaviorStats::default());
        }
        LabelsBuilder {
            prompts,
            model,
            max_count,
            schema: labels_schema(prompts),
            doc_id: StringBuilder::new(),
            counts: (0..n_counts).map(|_| Int32Builder::new()).collect(),
            has_problem: BooleanBuilder::new(),
            has_solution: BooleanBuilder::new(),
            domain: StringBuilder::new(),
            status: prompts.iter().map(|_| StringBuilder::new()).collect(),
            raw: prompts.iter().map(|_| StringBuilder::new()).collect(),
            model_col: StringBuilder::new(),
            prompt_tokens: UInt64Builder::new(),
            completion_tokens: UInt64Builder::new(),
            latency: UInt64Builder::new(),
            stats,
        }
    }

    pub fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    /// Adds a document's row from its records (by task index; None if never asked).
    pub fn push(&mut self, doc_id: &str, records: &[Option<&Record>]) {
        self.doc_id.append_value(doc_id);
        self.stats.documents += 1;
        let (mut pt, mut ct, mut lat) = (0, 0, 0);
        let mut count_col = 0;
        let (mut problem, mut solution) = (false, false);
        for (i, (p, rec)) in self.prompts.iter().zip(records).enumerate() {
            if let Some(r) = rec {
                pt += r.prompt_tokens;
                ct += r.completion_tokens;
                lat += r.latency_ms;
            }
            let content = rec.filter(|r| r.status == "ok").and_then(|r| r.content.as_deref());
            let status: String = match (rec, content) {
                (None, _) => NOT_ASKED.into(),
                (Some(r), None) => format!("failed:{}", r.failure.as_deref().unwrap_or("unknown")),
                (Some(_), Some(c)) => match p.answer {
                    Answer::Count => match parse_count(c, self.max_count) {
                        Ok(n) => {
                            self.counts[count_col].append_value(n as i32);
                            let b = self.stats.behaviors.get_mut(&p.task).expect("behavior");
                            b.count_sum += n as u64;
                            b.positive += (n > 0) as u64;
                            "ok".into()
                        }
                        Err(s) => s.into(),
                    },
                    Answer::ProblemSolution => match parse_problem_solution(c) {
                        Ok(ps) => {
                            self.has_problem.append_value(ps.has_problem);
                            self.has_solution.append_value(ps.has_solution);
                            self.domain.append_option(ps.domain);
                            (problem, solution) = (ps.has_problem, ps.has_solution);
                            "ok".into()
                        }
                        Err(s) => s.into(),
                    },
                },
            };
            if status != "ok" {
                match p.answer {
                    Answer::Count => {
                        self.counts[count_col].append_null();
                        self.stats.behaviors.get_mut(&p.task).expect("behavior").missing += 1;
                    }
                    Answer::ProblemSolution => {
                        self.has_problem.append_null();
                        self.has_solution.append_null();
                        self.domain.append_null();
                    }
                }
            }
            if p.answer == Answer::Count {
                self.stats.behaviors.get_mut(&p.task).expect("behavior").documents += 1;
                count_col += 1;
            }
            *self.stats.statuses.entry(p.task.clone()).or_default().entry(status.clone()).or_default() += 1;
            self.status[i].append_value(&status);
            self.raw[i].append_option(rec.and_then(|r| r.content.as_deref().or(r.reason.as_deref())));
        }
        self.stats.has_problem += problem as u64;
        self.stats.has_solution += solution as u64;
        self.stats.problem_and_solution += (problem && solution) as u64;
        self.stats.prompt_tokens += pt;
        self.stats.completion_tokens += ct;
        self.model_col.append_value(self.model);
        self.prompt_tokens.append_value(pt);
        self.completion_tokens.append_value(ct);
        self.latency.append_value(lat);
    }

    /// The rows added since the last call, as a batch.
    pub fn take_batch(&mut self) -> anyhow::Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.doc_id.finish())];
        let mut counts = self.counts.iter_mut();
        for p in self.prompts {
            match p.answer {
                Answer::Count => cols.push(Arc::new(counts.next().expect("count column").finish())),
                Answer::ProblemSolution => {
                    cols.push(Arc::new(self.has_problem.finish()));
                    cols.push(Arc::new(self.has_solution.finish()));
                    cols.push(Arc::new(self.domain.finish()));
                }
            }
        }
        for (s, r) in self.status.iter_mut().zip(self.raw.iter_mut()) {
            cols.push(Arc::new(s.finish()));
            cols.push(Arc::new(r.finish()));
        }
        cols.push(Arc::new(self.model_col.finish()));
        cols.push(Arc::new(self.prompt_tokens.finish()));
        cols.push(Arc::new(self.completion_tokens.finish()));
        cols.push(Arc::new(self.latency.finish()));
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

/// Looks up each task's record of a document.
pub fn records_of<'r>(journal: &'r HashMap<String, Record>, keys: &[String]) -> Vec<Option<&'r Record>> {
    keys.iter().map(|k| journal.get(k)).collect()
}

/// A readable report of the statistics.
pub fn render(stats: &LabelStats) -> String {
    let mut s = format!("{:<20} {:>9} {:>11} {:>10}\n", "behavior", "% missing", "% count > 0", "mean count");
    for (name, b) in &stats.behaviors {
        s.push_str(&format!("{:<20} {:>9.1} {:>11.1} {:>10.2}\n", name, b.pct_missing, b.pct_positive, b.mean_count));
    }
    s.push_str(&format!(
        "documents {}, with a problem {}, with a solution {}, with both {}; tokens {} prompt / {} completion\n",
        stats.documents, stats.has_problem, stats.has_solution, stats.problem_and_solution, stats.prompt_tokens, stats.completion_tokens
    ));
    for (task, by) in &stats.statuses {
        let bad: Vec<String> = by.iter().filter(|(k, _)| k.as_str() != "ok").map(|(k, v)| format!("{k} {v}")).collect();
        if !bad.is_empty() {
            s.push_str(&format!("  {task}: {}\n", bad.join(", ")));
        }
    }
    s
}
