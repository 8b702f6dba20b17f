//! Structured output: the answer formats of the prompts as a llama.cpp GBNF grammar or a
//! vLLM regex, so that small models cannot wander off the format. The parser stays strict
//! either way; this only makes parseable answers likely.

use super::prompts::Answer;
use crate::llm::client::Extra;

/// Longest "Thoughts:" line allowed by the constraint, in characters.
const THOUGHT_CHARS: usize = 200;

/// The request fields that constrain an answer of this kind, for the server dialect
/// (`llama_cpp` or `vllm`); None for `none`.
pub fn constraint(answer: Answer, dialect: &str) -> Option<Extra> {
    let mut extra = Extra::new();
    match (dialect, answer) {
        ("llama_cpp", Answer::Joint) => {
            extra.insert("json_schema".into(), joint_schema());
        }
        ("vllm", Answer::Joint) => {
            extra.insert("structured_outputs".into(), serde_json::json!({ "json": joint_schema() }));
        }
        ("llama_cpp", _) => {
            extra.insert("grammar".into(), grammar(answer).into());
        }
        ("vllm", _) => {
            extra.insert("structured_outputs".into(), serde_json::json!({ "regex": regex(answer) }));
        }
        _ => return None,
    }
    Some(extra)
}

/// The JSON schema of a joint answer.
fn joint_schema() -> serde_json::Value {
    let count = serde_json::json!({ "type": "integer", "minimum": 0, "maximum": 100 });
    let props: serde_json::Map<String, serde_json::Value> = super::prompts::BEHAVIORS.iter().map(|b| (b.to_string(), count.clone())).collect();
    serde_json::json!({ "type": "object", "properties": props, "required": super::prompts::BEHAVIORS, "additionalProperties": false })
}

fn grammar(answer: Answer) -> String {
    let thoughts = format!("thoughts ::= [^\\n<]{{1,{THOUGHT_CHARS}}}");
    match answer {
        Answer::Count => format!("root ::= \"Thoughts: \" thoughts \"\\n<count>\" [0-9]{{1,3}} \"</count>\"\n{thoughts}\n"),
        Answer::Joint => unreachable!("joint answers use a JSON schema"),
        Answer::ProblemSolution => format!(
            "root ::= \"Thoughts: \" thoughts \"\\n<has_problem>\" yn \"</has_problem>\\n<has_solution>\" yn \"</has_solution>\\n<domain>\" [a-z ]{{1,30}} \"</domain>\"\nyn ::= \"yes\" | \"no\"\n{thoughts}\n"
        ),
    }
}

fn regex(answer: Answer) -> String {
    let thoughts = format!("Thoughts: [^\\n<]{{1,{THOUGHT_CHARS}}}\\n");
    match answer {
        Answer::Count => format!("{thoughts}<count>[0-9]{{1,3}}</count>"),
        Answer::Joint => unreachable!("joint answers use a JSON schema"),
        Answer::ProblemSolution => {
            format!("{thoughts}<has_problem>(yes|no)</has_problem>\\n<has_solution>(yes|no)</has_solution>\\n<domain>[a-z ]{{1,30}}</domain>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects() {
        assert!(constraint(Answer::Count, "none").is_none());
        let g = constraint(Answer::Count, "llama_cpp").unwrap();
        assert!(g["grammar"].as_str().unwrap().starts_with("root ::= \"Thoughts: \""));
        let v = constraint(Answer::ProblemSolution, "vllm").unwrap();
        assert!(v["structured_outputs"]["regex"].as_str().unwrap().contains("<has_problem>(yes|no)"));
        let j = constraint(Answer::Joint, "llama_cpp").unwrap();
        assert_eq!(j["json_schema"]["required"].as_array().unwrap().len(), 4);
    }
}
