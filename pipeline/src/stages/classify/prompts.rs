//! Prompt templates: `configs/prompts/classify/<task>.md`, with `{{document}}` where the
//! document goes. The sha256 of a file is part of every result's key, so editing a prompt
//! re-asks exactly the requests made with it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The placeholder replaced by the document.
pub const PLACEHOLDER: &str = "{{document}}";

/// What a task's answer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `<count>N</count>`: one of the four behaviors.
    Count,
    /// `<has_problem>`, `<has_solution>`, `<domain>`.
    ProblemSolution,
    /// One JSON object with the four counts.
    Joint,
}

/// The four behaviors, in table order.
pub const BEHAVIORS: [&str; 4] = ["backtracking", "verification", "subgoal_setting", "backward_chaining"];

/// Every task: the four behaviors, the problem/solution task, and the joint task.
pub const TASKS: [(&str, Answer); 6] = [
    ("backtracking", Answer::Count),
    ("verification", Answer::Count),
    ("subgoal_setting", Answer::Count),
    ("backward_chaining", Answer::Count),
    ("problem_solution", Answer::ProblemSolution),
    ("joint", Answer::Joint),
];

/// A loaded template.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub task: String,
    pub answer: Answer,
    pub hash: String,
    before: String,
    after: String,
}

impl Prompt {
    /// Loads `<dir>/<task>.md`.
    pub fn load(dir: &Path, task: &str, answer: Answer) -> Result<Self> {
        let path = dir.join(format!("{task}.md"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read prompt {}: is classify.prompts_dir right?", path.display()))?;
        let Some((before, after)) = text.split_once(PLACEHOLDER) else {
            bail!("prompt {} has no {PLACEHOLDER} placeholder: add it where the document goes", path.display());
        };
        if after.contains(PLACEHOLDER) {
            bail!("prompt {} has {PLACEHOLDER} more than once", path.display());
        }
        Ok(Prompt {
            task: task.to_string(),
            answer,
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            before: before.to_string(),
            after: after.to_string(),
        })
    }

    /// The prompt with the document in place. The document is inserted as is, once; no
    /// part of it is interpreted.
    pub fn render(&self, document: &str) -> String {
        let mut s = String::with_capacity(self.before.len() + document.len() + self.after.len());
        s.push_str(&self.before);
        s.push_str(document);
        s.push_str(&self.after);
        s
    }
}
