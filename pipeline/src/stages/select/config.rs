//! `[select]`: the selection rules' settings and their defaults.

use serde::{Deserialize, Serialize};

/// `[select]`: the rules that make the two sets (expressions over the labels columns).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// Both sets need this.
    #[serde(default = "default_require")]
    pub require: String,
    /// The habit-rich set.
    #[serde(default = "default_rich")]
    pub rich: String,
    /// The control set.
    #[serde(default = "default_control")]
    pub control: String,
}

fn default_require() -> String {
    "has_problem && has_solution".into()
}

fn default_rich() -> String {
    "backtracking >= 1".into()
}

fn default_control() -> String {
    "backtracking == 0 && verification == 0 && subgoal_setting == 0 && backward_chaining == 0".into()
}

impl Default for SelectConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
