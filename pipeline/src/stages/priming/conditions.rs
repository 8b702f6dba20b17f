//! The study's priming conditions and which replies each keeps: five conditions whose
//! reasoning the LLM writes with its own prompt (the study kept every reply as given;
//! checked, the answer must also be correct and well formed), a variant of "all
//! strategies" whose answer must not be correct, and two controls derived from the "all
//! strategies" traces (no thoughts; the thoughts replaced by as many placeholder tokens).

use countdown::reward::{Verdict, judge};
use countdown::task::{Task, prompt};
use serde::{Deserialize, Serialize};

/// The condition every derived control is made from.
pub const ALL_STRATEGIES: &str = "all_strategies";
/// The wrong-answer condition (sampled from a model, or asked of the LLM).
pub const ALL_STRATEGIES_WRONG: &str = "all_strategies_wrong";

/// How a condition's traces come about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Asked of the LLM with `<prompts_dir>/<name>.md`; `correct` says which answers count.
    Llm { correct: bool },
    /// The "all strategies" answer with empty thoughts.
    EmptyThoughts,
    /// The "all strategies" answer after as many placeholder tokens as its thoughts had.
    Placeholder,
}

/// Every condition, in the study's order.
pub const CONDITIONS: [(&str, Source); 8] = [
    (ALL_STRATEGIES, Source::Llm { correct: true }),
    ("backtracking", Source::Llm { correct: true }),
    ("backtracking_verification", Source::Llm { correct: true }),
    ("backtracking_subgoals", Source::Llm { correct: true }),
    ("backtracking_backward", Source::Llm { correct: true }),
    ("empty_cot", Source::EmptyThoughts),
    ("placeholder", Source::Placeholder),
    (ALL_STRATEGIES_WRONG, Source::Llm { correct: false }),
];

/// The source of a condition by name.
pub fn source(name: &str) -> Option<Source> {
    CONDITIONS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Every condition's name.
pub fn names() -> Vec<&'static str> {
    CONDITIONS.iter().map(|(n, _)| *n).collect()
}

/// A reply taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub thoughts: String,
    pub equation: String,
}

/// Why a reply is not a trace of its condition (the `status` of its row).
pub type Rejection = &'static str;

/// Takes a reply apart: `<think>` thoughts `</think>`, then `<answer>` equation `</answer>`
/// and nothing else; neither part may hold the other's tags.
pub fn parse_reply(reply: &str) -> Result<Trace, Rejection> {
    let reply = reply.trim();
    let rest = reply.strip_prefix("<think>").ok_or("unparsed")?;
    let (thoughts, rest) = rest.split_once("</think>").ok_or("unparsed")?;
    let rest = rest.trim_start().strip_prefix("<answer>").ok_or("unparsed")?;
    let (equation, after) = rest.split_once("</answer>").ok_or("unparsed")?;
    let (thoughts, equation) = (thoughts.trim(), equation.trim());
    let tags = ["<think>", "</think>", "<answer>", "</answer>"];
    if !after.trim().is_empty() || thoughts.is_empty() || equation.is_empty() || tags.iter().any(|t| thoughts.contains(t) || equation.contains(t)) {
        return Err("unparsed");
    }
    if equation.contains('\n') {
        return Err("unparsed");
    }
    Ok(Trace { thoughts: thoughts.to_string(), equation: equation.to_string() })
}

/// The completion the model is trained on (it continues the task's prompt, which ends in
/// `<think>`): the thoughts, then the equation alone on the last line.
pub fn completion(thoughts: &str, equation: &str) -> String {
    if thoughts.is_empty() { format!("\n</think>\n<answer> {equation} </answer>") } else { format!("\n{thoughts}\n</think>\n<answer> {equation} </answer>") }
}

/// Checks a reply for an LLM condition: it parses, and the study's reward scores the
/// prompt + completion as the condition wants (correct: 1.0; wrong: a well-formed equation
/// over the given numbers that misses the target).
pub fn check(reply: &str, task: &Task, correct: bool) -> Result<Trace, Rejection> {
    let trace = parse_reply(reply)?;
    let text = format!("{}{}", prompt(task), completion(&trace.thoughts, &trace.equation));
    match (judge(&text, task), correct) {
        (Verdict::Correct, true) | (Verdict::WrongValue(_), false) => Ok(trace),
        (Verdict::Correct, false) => Err("correct_result"),
        (Verdict::WrongValue(_), true) => Err("wrong_result"),
        _ => Err("bad_equation"),
    }
}

/// Which replies of an LLM condition become rows (`priming.keep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Every answered reply, as the model gave it (the study's way); the wrong-answer
    /// condition keeps every reply the reward does not score 1.0.
    #[default]
    AsGiven,
    /// Only replies that pass `check` (asked again with the reason up to `priming.reasks`).
    Checked,
}

/// A reply kept as a row: the completion it becomes, and its parts when it parses (the
/// controls are made from those).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub completion: String,
    pub parts: Option<Trace>,
}

/// The check's status of a reply (`ok` or why it fails) and, when `keep` keeps it, the row.
pub fn keep_reply(reply: &str, task: &Task, correct: bool, keep: Keep) -> (&'static str, Option<Kept>) {
    match check(reply, task, correct) {
        Ok(trace) => ("ok", Some(Kept { completion: completion(&trace.thoughts, &trace.equation), parts: Some(trace) })),
        Err(why) if keep == Keep::Checked || (!correct && why == "correct_result") => (why, None),
        Err(why) => (why, Some(Kept { completion: as_given(reply), parts: parse_reply(reply).ok() })),
    }
}

/// A reply as the completion of the task's prompt (which ends in `<think>`): a leading
/// `<think>` of the reply is the prompt's, the rest follows on a new line.
pub fn as_given(reply: &str) -> String {
    let reply = reply.trim();
    format!("\n{}", reply.strip_prefix("<think>").unwrap_or(reply).trim_start())
}

/// What to say when a reply is rejected, so the next one can do better.
pub fn reask(correct: bool) -> &'static str {
    if correct {
        "Your reply did not follow the instructions. Reply again with <think> your reasoning </think> and then <answer> one equation </answer> and nothing else; the equation must use every given number exactly once, only + - * / and parentheses, and equal the target."
    } else {
        "Your reply did not follow the instructions. Reply again with <think> your reasoning </think> and then <answer> one equation </answer> and nothing else; the equation must use every given number exactly once, only + - * / and parentheses, and must NOT equal the target."
    }
}

/// The puzzle as the condition prompts show it.
pub fn puzzle(task: &Task) -> String {
    let nums: Vec<String> = task.nums.iter().map(i64::to_string).collect();
    format!("Numbers: {}\nTarget: {}", nums.join(", "), task.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task { target: 24, nums: vec![4, 9, 3] }
    }

    #[test]
    fn replies_parse_strictly() {
        let ok = parse_reply("<think>\nTry 4 * 9 = 36, too big. 9 - 3 = 6, 4 * 6 = 24.\n</think>\n<answer> 4 * (9 - 3) </answer>\n").unwrap();
        assert_eq!(ok, Trace { thoughts: "Try 4 * 9 = 36, too big. 9 - 3 = 6, 4 * 6 = 24.".into(), equation: "4 * (9 - 3)".into() });
        for bad in [
            "",
            "Sure! <think>x</think><answer>1</answer>",
            "<think>x</think>",
            "<think></think><answer> 4 * (9 - 3) </answer>",
            "<think>x</think><answer></answer>",
            "<think>x</think><answer> 1 </answer> and more",
            "<think>x <answer> 2 </answer></think><answer> 1 </answer>",
            "<think>x</think><answer> 1\n+ 2 </answer>",
        ] {
            assert_eq!(parse_reply(bad), Err("unparsed"), "{bad:?}");
        }
    }

    #[test]
    fn checks_follow_the_reward_and_the_condition() {
        let reply = |eq: &str| format!("<think>Let me try.</think>\n<answer> {eq} </answer>");
        assert!(check(&reply("4 * (9 - 3)"), &task(), true).is_ok());
        assert_eq!(check(&reply("4 * 9 - 3"), &task(), true), Err("wrong_result"));
        assert_eq!(check(&reply("4 * 9 - 3"), &task(), false).unwrap().equation, "4 * 9 - 3");
        assert_eq!(check(&reply("4 * (9 - 3)"), &task(), false), Err("correct_result"));
        assert_eq!(check(&reply("4 * 6"), &task(), true), Err("bad_equation"));
        assert_eq!(check(&reply("4 * (9 - 3) = 24"), &task(), true), Err("bad_equation"));
        assert_eq!(check(&reply("4 * 9 / (3 - 3)"), &task(), false), Err("bad_equation"));
        assert_eq!(check("no tags", &task(), true), Err("unparsed"));
    }

    #[test]
    fn replies_are_kept_as_given_or_checked() {
        let wrong = "<think>\nTry 4 * 9 - 3.\n</think>\n<answer> 4 * 9 - 3 </answer>";
        let untagged = "I think 4 * (9 - 3).";
        assert_eq!(keep_reply(wrong, &task(), true, Keep::Checked), ("wrong_result", None));
        let (status, kept) = keep_reply(wrong, &task(), true, Keep::AsGiven);
        let kept = kept.unwrap();
        assert_eq!((status, kept.completion.as_str()), ("wrong_result", "\nTry 4 * 9 - 3.\n</think>\n<answer> 4 * 9 - 3 </answer>"));
        assert_eq!(kept.parts.unwrap().equation, "4 * 9 - 3");
        let (status, kept) = keep_reply(untagged, &task(), true, Keep::AsGiven);
        assert_eq!((status, kept), ("unparsed", Some(Kept { completion: "\nI think 4 * (9 - 3).".into(), parts: None })));
        // The wrong-answer condition never keeps a correct answer, and keeps any other reply as given.
        assert_eq!(keep_reply("<think>x</think><answer> 4 * (9 - 3) </answer>", &task(), false, Keep::AsGiven), ("correct_result", None));
        assert_eq!(keep_reply(untagged, &task(), false, Keep::AsGiven).1.unwrap().completion, "\nI think 4 * (9 - 3).");
        assert_eq!(keep_reply(untagged, &task(), false, Keep::Checked), ("unparsed", None));
    }

    #[test]
    fn completions_end_with_the_answer_line() {
        assert_eq!(completion("a\nb", "1 + 2"), "\na\nb\n</think>\n<answer> 1 + 2 </answer>");
        assert_eq!(completion("", "1 + 2"), "\n</think>\n<answer> 1 + 2 </answer>");
        assert_eq!(puzzle(&task()), "Numbers: 4, 9, 3\nTarget: 24");
        assert_eq!(names().len(), 8);
        assert_eq!(source("placeholder"), Some(Source::Placeholder));
        assert_eq!(source("nope"), None);
    }
}
