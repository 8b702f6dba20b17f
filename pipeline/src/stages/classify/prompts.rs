//! The classification tasks and their prompt files, `configs/prompts/classify/<task>.md`.

use std::path::Path;

use anyhow::Result;

use crate::stages::template::Template;

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

/// A task with its template.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub task: String,
    pub answer: Answer,
    pub hash: String,
    template: Template,
}

impl Prompt {
    /// Loads `<dir>/<task>.md`.
    pub fn load(dir: &Path, task: &str, answer: Answer) -> Result<Self> {
        let template = Template::load(dir, task, "classify.prompts_dir")?;
        Ok(Prompt { task: task.to_string(), answer, hash: template.hash.clone(), template })
    }

    pub fn render(&self, document: &str) -> String {
        self.template.render(document)
    }
}
