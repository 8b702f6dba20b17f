//! `[select]`: the selection rules' settings and their defaults.

use serde::{Deserialize, Serialize};

/// `[select]`: the rules that make the two sets (expressions over the labels columns).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SelectConfig {
    /// Both sets need this.
    pub require: String,
    /// The habit-rich set.
    pub rich: String,
    /// The control set.
    pub control: String,
    /// Only documents of these `[[sources]]` (by name) may enter a set; empty: every
    /// source. The study classified FineMath but built its sets from OpenWebMath alone.
    pub sources: Vec<String>,
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            require: "has_problem && has_solution".into(),
            rich: "backtracking >= 1".into(),
            control: "backtracking == 0 && verification == 0 && subgoal_setting == 0 && backward_chaining == 0".into(),
            sources: Vec::new(),
        }
    }
}
