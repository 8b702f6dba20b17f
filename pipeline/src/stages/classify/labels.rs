//! The `labels` table: one row per document, built from the journal after the requests.
//! The four behavior counts (null when missing) come from the per-behavior tasks, or from
//! the joint task when only it ran; `joint_*` columns keep the joint answer when both ran.
//! Also the study's statistics per behavior, and the agreement of the two modes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use super::parse::{ProblemSolution, parse_count, parse_joint, parse_problem_solution, study_count};
use super::prompts::{Answer, BEHAVIORS, Prompt};
use crate::journal::Record;

/// Status of a task that has no journal record (e.g. a document added after the run).
pub const NOT_ASKED: &str = "not_asked";

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
    /// Answers the study's stricter, uncapped reading (`parse::study_count`) reads
    /// otherwise: a count with spaces inside, one above `max_count`.
    #[serde(default)]
    pub study_reading_differs: u64,
}

/// How often the per-behavior and the joint answers agree, over documents where both parsed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Agreement {
    pub documents: u64,
    pub same_presence: u64,
    pub same_count: u64,
    pub abs_diff_sum: u64,
    pub pct_same_presence: f64,
    pub pct_same_count: f64,
    pub mean_abs_diff: f64,
}

/// Totals over the table.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LabelStats {
    pub documents: u64,
    pub behaviors: BTreeMap<String, BehaviorStats>,
    /// Per behavior, when both modes ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agreement: BTreeMap<String, Agreement>,
    pub has_problem: u64,
    pub has_solution: u64,
    pub problem_and_solution: u64,
    /// `<task>` -> `<status>` -> rows.
    pub statuses: BTreeMap<String, BTreeMap<String, u64>>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens per task, to compare the cost of the two modes.
    pub prompt_tokens_by_task: BTreeMap<String, u64>,
}

impl LabelStats {
    pub fn finish(&mut self) {
        for b in self.behaviors.values_mut() {
            let known = b.documents - b.missing;
            b.pct_missing = pct(b.missing, b.documents);
            b.pct_positive = pct(b.positive, known);
            b.mean_count = ratio(b.count_sum, known);
        }
        for a in self.agreement.values_mut() {
            a.pct_same_presence = pct(a.same_presence, a.documents);
            a.pct_same_count = pct(a.same_count, a.documents);
            a.mean_abs_diff = ratio(a.abs_diff_sum, a.documents);
        }
    }
}

fn pct(a: u64, b: u64) -> f64 {
    100.0 * ratio(a, b)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A task's answer, parsed.
enum Parsed {
    Count(u32),
    ProblemSolution(ProblemSolution),
    Joint([u32; 4]),
}

impl Parsed {
    fn count(&self) -> Option<u64> {
        match self {
            Parsed::Count(n) => Some(u64::from(*n)),
            _ => None,
        }
    }
}

fn parse(answer: Answer, content: &str, max_count: u32) -> Result<Parsed, &'static str> {
    match answer {
        Answer::Count => parse_count(content, max_count).map(Parsed::Count),
        Answer::ProblemSolution => parse_problem_solution(content).map(Parsed::ProblemSolution),
        Answer::Joint => parse_joint(content, max_count).map(Parsed::Joint),
    }
}

/// Builds label rows batch by batch.
pub struct LabelsBuilder<'a> {
    prompts: &'a [Prompt],
    model: &'a str,
    max_count: u32,
    schema: Arc<Schema>,
    has_ps: bool,
    /// Joint columns are kept apart only when per-behavior tasks also ran.
    joint_columns: bool,
    doc_id: StringBuilder,
    counts: [Int32Builder; 4],
    joint: [Int32Builder; 4],
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
        let has = |a: Answer| prompts.iter().any(|p| p.answer == a);
        let (has_ps, joint_columns) = (has(Answer::ProblemSolution), has(Answer::Joint) && has(Answer::Count));
        let mut fields = vec![Field::new("doc_id", DataType::Utf8, false)];
        fields.extend(BEHAVIORS.iter().map(|b| Field::new(*b, DataType::Int32, true)));
        if has_ps {
            fields.push(Field::new("has_problem", DataType::Boolean, true));
            fields.push(Field::new("has_solution", DataType::Boolean, true));
            fields.push(Field::new("domain", DataType::Utf8, true));
        }
        if joint_columns {
            fields.extend(BEHAVIORS.iter().map(|b| Field::new(format!("joint_{b}"), DataType::Int32, true)));
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
        let mut stats = LabelStats::default();
        for b in BEHAVIORS {
            stats.behaviors.insert(b.to_string(), BehaviorStats::default());
            if joint_columns && prompts.iter().any(|p| p.task == b) {
                stats.agreement.insert(b.to_string(), Agreement::default());
            }
        }
        LabelsBuilder {
            prompts,
            model,
            max_count,
            schema: Arc::new(Schema::new(fields)),
            has_ps,
            joint_columns,
            doc_id: StringBuilder::new(),
            counts: Default::default(),
            joint: Default::default(),
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

    /// Adds a document's row from its records (in prompt order; None if never asked).
    /// Parses an answer to prompt `p`, counting a count answer the study would read
    /// otherwise.
    fn parse_and_compare(&mut self, p: &Prompt, content: &str) -> Result<Parsed, &'static str> {
        let parsed = parse(p.answer, content, self.max_count);
        if p.answer == Answer::Count && study_count(content) != parsed.as_ref().ok().and_then(Parsed::count) {
            self.stats.behaviors.get_mut(&p.task).expect("a behavior").study_reading_differs += 1;
        }
        parsed
    }

    pub fn push(&mut self, doc_id: &str, records: &[Option<&Record>]) {
        self.doc_id.append_value(doc_id);
        self.stats.documents += 1;
        let (mut per_behavior, mut joint, mut ps): ([Option<u32>; 4], Option<[u32; 4]>, Option<ProblemSolution>) = ([None; 4], None, None);
        let (mut pt, mut ct, mut lat) = (0, 0, 0);
        for (i, (p, rec)) in self.prompts.iter().zip(records).enumerate() {
            let content = rec.filter(|r| r.status == "ok").and_then(|r| r.content.as_deref());
            let status: String = match (rec, content) {
                (None, _) => NOT_ASKED.into(),
                (Some(r), None) => format!("failed:{}", r.failure.as_deref().unwrap_or("unknown")),
                (Some(_), Some(c)) => match self.parse_and_compare(p, c) {
                    Ok(Parsed::Count(n)) => {
                        per_behavior[BEHAVIORS.iter().position(|b| *b == p.task).expect("a behavior")] = Some(n);
                        "ok".into()
                    }
                    Ok(Parsed::ProblemSolution(x)) => {
                        ps = Some(x);
                        "ok".into()
                    }
                    Ok(Parsed::Joint(x)) => {
                        joint = Some(x);
                        "ok".into()
                    }
                    Err(s) => s.into(),
                },
            };
            if let Some(r) = rec {
                pt += r.prompt_tokens;
                ct += r.completion_tokens;
                lat += r.latency_ms;
                *self.stats.prompt_tokens_by_task.entry(p.task.clone()).or_default() += r.prompt_tokens;
            }
            *self.stats.statuses.entry(p.task.clone()).or_default().entry(status.clone()).or_default() += 1;
            self.status[i].append_value(&status);
            self.raw[i].append_option(rec.and_then(|r| r.content.as_deref().or(r.reason.as_deref())));
        }
        let ran_per_behavior = |b: &str| self.prompts.iter().any(|p| p.task == b);
        for (k, b) in BEHAVIORS.iter().enumerate() {
            let value = if ran_per_behavior(b) { per_behavior[k] } else { joint.map(|j| j[k]) };
            self.counts[k].append_option(value.map(|n| n as i32));
            let s = self.stats.behaviors.get_mut(*b).expect("behavior");
            s.documents += 1;
            match value {
                Some(n) => {
                    s.count_sum += n as u64;
                    s.positive += (n > 0) as u64;
                }
                None => s.missing += 1,
            }
            if self.joint_columns {
                self.joint[k].append_option(joint.map(|j| j[k] as i32));
            }
            if let (Some(a), Some(n), Some(j)) = (self.stats.agreement.get_mut(*b), per_behavior[k], joint) {
                a.documents += 1;
                a.same_presence += ((n > 0) == (j[k] > 0)) as u64;
                a.same_count += (n == j[k]) as u64;
                a.abs_diff_sum += n.abs_diff(j[k]) as u64;
            }
        }
        if self.has_ps {
            self.has_problem.append_option(ps.as_ref().map(|x| x.has_problem));
            self.has_solution.append_option(ps.as_ref().map(|x| x.has_solution));
            self.domain.append_option(ps.as_ref().and_then(|x| x.domain.clone()));
            if let Some(x) = &ps {
                self.stats.has_problem += x.has_problem as u64;
                self.stats.has_solution += x.has_solution as u64;
                self.stats.problem_and_solution += (x.has_problem && x.has_solution) as u64;
            }
        }
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
        cols.extend(self.counts.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
        if self.has_ps {
            cols.push(Arc::new(self.has_problem.finish()));
            cols.push(Arc::new(self.has_solution.finish()));
            cols.push(Arc::new(self.domain.finish()));
        }
        if self.joint_columns {
            cols.extend(self.joint.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
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
    if !stats.agreement.is_empty() {
        s.push_str(&format!("{:<20} {:>9} {:>11} {:>10}\n", "per-behavior vs joint", "% same >0", "% same n", "mean |d|"));
        for (name, a) in &stats.agreement {
            s.push_str(&format!("{:<20} {:>9.1} {:>11.1} {:>10.2}\n", name, a.pct_same_presence, a.pct_same_count, a.mean_abs_diff));
        }
        let joint = stats.prompt_tokens_by_task.get("joint").copied().unwrap_or(0);
        let per: u64 = BEHAVIORS.iter().filter_map(|b| stats.prompt_tokens_by_task.get(*b)).sum();
        s.push_str(&format!("prompt tokens: per-behavior {per}, joint {joint} ({:.1}x fewer)\n", ratio(per, joint)));
    }
    s.push_str(&format!(
        "documents {}, with a problem {}, with a solution {}, with both {}; tokens {} prompt / {} completion\n",
        stats.documents, stats.has_problem, stats.has_solution, stats.problem_and_solution, stats.prompt_tokens, stats.completion_tokens
    ));
    let differ: Vec<String> =
        stats.behaviors.iter().filter(|(_, b)| b.study_reading_differs > 0).map(|(n, b)| format!("{n} {}", b.study_reading_differs)).collect();
    if !differ.is_empty() {
        s.push_str(&format!("answers the study's strict, uncapped count reading reads otherwise: {}\n", differ.join(", ")));
    }
    for (task, by) in &stats.statuses {
        let bad: Vec<String> = by.iter().filter(|(k, _)| k.as_str() != "ok").map(|(k, v)| format!("{k} {v}")).collect();
        if !bad.is_empty() {
            s.push_str(&format!("  {task}: {}\n", bad.join(", ")));
        }
    }
    s
}
