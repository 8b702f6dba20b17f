//! The study's Countdown reward (TinyZero's `countdown.py`, as the study ran it): take the
//! text after the first `Assistant:` (else after `<|im_start|>assistant`), its last line,
//! and the last `<answer>...</answer>` on it, stripped as Python's `str.strip` does. No
//! answer: 0. An answer whose runs of digits are not the given numbers, that holds
//! anything but digits, `+ - * / ( ) .` and whitespace, that Python cannot evaluate
//! (`expr`), or whose value misses the target: 0.1. Within 1e-5 of the target: 1.0.

use crate::expr::evaluate;
use crate::task::Task;

/// Reward for a well-formed but wrong answer.
pub const FORMAT_SCORE: f64 = 0.1;
/// Reward for a correct answer.
pub const CORRECT_SCORE: f64 = 1.0;

/// Why a response scored what it did.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    NoAnswer,
    WrongNumbers,
    BadCharacters,
    NoValue(String),
    WrongValue(f64),
    Correct,
}

impl Verdict {
    pub fn score(&self) -> f64 {
        match self {
            Verdict::NoAnswer => 0.0,
            Verdict::Correct => CORRECT_SCORE,
            _ => FORMAT_SCORE,
        }
    }
}

/// The characters Python's `str.isspace` accepts (what `strip()` removes).
fn python_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// The equation the reward reads from a decoded sequence (prompt and response).
pub fn extract_answer(text: &str) -> Option<&str> {
    let (_, after) = text.split_once("Assistant:").or_else(|| text.split_once("<|im_start|>assistant"))?;
    let line = after.rsplit('\n').next().unwrap_or(after);
    let mut last = None;
    let mut from = 0;
    while let Some(open) = line[from..].find("<answer>") {
        let start = from + open + "<answer>".len();
        let Some(close) = line[start..].find("</answer>") else { break };
        last = Some(&line[start..start + close]);
        from = start + close + "</answer>".len();
    }
    last.map(|a| a.trim_matches(python_space))
}

/// Scores a decoded sequence against its task.
pub fn judge(text: &str, task: &Task) -> Verdict {
    let Some(equation) = extract_answer(text) else { return Verdict::NoAnswer };
    let mut used: Vec<i64> = Vec::new();
    let mut digits = String::new();
    for c in equation.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
        } else if !digits.is_empty() {
            // A run of digits too long for i64 is no given number.
            used.push(digits.parse().unwrap_or(i64::MIN));
            digits.clear();
        }
    }
    let (mut want, mut got) = (task.nums.clone(), used);
    want.sort_unstable();
    got.sort_unstable();
    if want != got {
        return Verdict::WrongNumbers;
    }
    // Python's pattern also lets other whitespace and non-ASCII digits through, which its
    // `eval` then refuses: the same 0.1.
    if !equation.chars().all(|c| c.is_ascii_digit() || "+-*/(). \t\r\x0c".contains(c)) {
        return Verdict::BadCharacters;
    }
    match evaluate(equation) {
        Err(e) => Verdict::NoValue(e.to_string()),
        Ok(v) if v.hits(task.target) => Verdict::Correct,
        Ok(v) => Verdict::WrongValue(v.to_f64()),
    }
}

/// The reward of a decoded sequence.
pub fn reward(text: &str, task: &Task) -> f64 {
    judge(text, task).score()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task { target: 32, nums: vec![25, 30, 3, 4] }
    }

    fn said(response: &str) -> String {
        format!("User: use 25 30 3 4 to make 32, e.g. <answer> 1 + 2 </answer>\nAssistant: Let me solve this step by step.\n<think>{response}")
    }

    #[test]
    fn every_branch() {
        let t = task();
        assert_eq!(judge(&said("ok</think>\n<answer> (30 - 25 + 3) * 4 </answer>"), &t), Verdict::Correct);
        assert_eq!(judge("no assistant here <answer>(30 - 25 + 3) * 4</answer>", &t), Verdict::NoAnswer);
        assert_eq!(judge(&said("thinking"), &t), Verdict::NoAnswer, "the prompt's example answer does not count");
        assert_eq!(judge(&said("<answer>(30 - 25 + 3) * 4</answer>\nthat was it"), &t), Verdict::NoAnswer, "only the last line counts");
        assert_eq!(judge(&said("</think>\n<answer>1</answer> <answer>(30-25+3)*4</answer>"), &t), Verdict::Correct, "the last answer counts");
        assert_eq!(judge(&said("</think>\n<answer>(30-25+3)*4</answer> <answer>1</answer>"), &t), Verdict::WrongNumbers);
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3) * 4 + 0</answer>"), &t), Verdict::WrongNumbers, "an extra number");
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3) * 3</answer>"), &t), Verdict::WrongNumbers, "a number reused, one missing");
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3) x 4</answer>"), &t), Verdict::BadCharacters);
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3) * 4 = 32</answer>"), &t), Verdict::WrongNumbers, "`= 32` adds a number");
        assert_eq!(judge(&said("\n<answer>30 - 25 + 3 * 4</answer>"), &t), Verdict::WrongValue(17.0));
        assert_eq!(
            judge(&said("\n<answer>30 / (25 - 25) + 3 * 4</answer>"), &Task { target: 32, nums: vec![30, 25, 25, 3, 4] }),
            Verdict::NoValue("division by zero".into())
        );
        assert_eq!(
            judge(&said("\n<answer>-(3 - 30 - 25) / 4 * 4 - 20</answer>"), &Task { target: 32, nums: vec![3, 30, 25, 4, 4, 20] }),
            Verdict::Correct,
            "unary minus"
        );
        assert_eq!(judge(&said("\n<answer>((((30 - 25) + 3)) * 4)</answer>"), &t), Verdict::Correct, "nested parentheses");
        assert_eq!(judge(&said("\n<answer>   (30-25+3)*4   </answer>"), &t), Verdict::Correct, "spaces");
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3) * 4.0</answer>"), &t), Verdict::WrongNumbers, "a decimal adds a number");
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3) * 4.</answer>"), &t), Verdict::Correct, "`4.` is Python's float 4.0");
        assert_eq!(judge(&said("\n<answer>1.5 * 2 + 29</answer>"), &Task { target: 32, nums: vec![1, 5, 2, 29] }), Verdict::Correct);
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3)\r* 4</answer>"), &t), Verdict::NoValue("syntax: a line break outside parentheses".into()));
        assert_eq!(judge(&said("\n<answer>((30 - 25 + 3)\r* 4)</answer>"), &t), Verdict::Correct, "inside parentheses a line break is a space");
        assert_eq!(judge(&said("\n<answer>\x1c(30 - 25 + 3) * 4\x1f\u{a0}</answer>"), &t), Verdict::Correct, "stripped as Python strips");
        assert_eq!(judge(&said("\n<answer>(30 - 25 + 3) *\x1c4</answer>"), &t), Verdict::BadCharacters);
        assert_eq!(judge(&said("\n<answer>3 ** 81 // 9 ** 40</answer>"), &Task { target: 3, nums: vec![3, 81, 9, 40] }), Verdict::Correct, "exact at any size");
        let chat = "<|im_start|>user\nuse 25 30 3 4<|im_end|>\n<|im_start|>assistant\nok <answer>(30 - 25 + 3) * 4</answer>";
        assert_eq!(judge(chat, &t), Verdict::Correct, "a chat transcript");
        let huge = Task { target: 1, nums: vec![99999999999999999, 99999999999999999, 99999999999999999, 1] };
        assert!(matches!(judge(&said("\n<answer>99999999999999999 * 99999999999999999 * 99999999999999999 * 1</answer>"), &huge), Verdict::WrongValue(_)));
        assert_eq!(judge(&said("\n<answer>123456789012345678901234567890 - 1</answer>"), &t), Verdict::WrongNumbers, "huge numbers are not given numbers");
        assert_eq!(judge(&said("\n<answer>32 / 1 * 1</answer>"), &Task { target: 32, nums: vec![32, 1, 1] }), Verdict::Correct);
        assert_eq!(judge(&said("\n<answer>(30 + 3) - 25 / 4</answer>"), &t), Verdict::WrongValue(26.75));
        assert_eq!(judge(&said("\n<answer></answer>"), &t), Verdict::WrongNumbers, "empty answer");
        for (text, score) in [(said("\n<answer>(30 - 25 + 3) * 4</answer>"), 1.0), (said("\n<answer>1</answer>"), 0.1), (said("nothing"), 0.0)] {
            assert_eq!(reward(&text, &t), score);
        }
    }
}
