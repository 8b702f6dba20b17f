//! Strict parsing of rewrite answers: `<question>`, `<thoughts>`, `<answer>`, each exactly
//! once, in that order, none empty, nothing but white space around them, and not absurdly
//! long for the document. Anything else is a recorded failure, never a training example.

pub const OK: &str = "ok";
pub const EMPTY: &str = "empty";
pub const MISSING_TAG: &str = "missing_tag";
pub const REPEATED_TAG: &str = "repeated_tag";
pub const OUT_OF_ORDER: &str = "out_of_order";
pub const EMPTY_FIELD: &str = "empty_field";
pub const EXTRA_TEXT: &str = "extra_text";
pub const TOO_LONG: &str = "too_long";

/// A parsed rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qa {
    pub question: String,
    pub thoughts: String,
    pub answer: String,
}

/// Parses an answer; `max_chars` bounds thoughts + answer (e.g. 10x the document).
pub fn parse_qa(text: &str, max_chars: usize) -> Result<Qa, &'static str> {
    if text.trim().is_empty() {
        return Err(EMPTY);
    }
    let mut spans = Vec::new();
    for tag in ["question", "thoughts", "answer"] {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let (Some(start), Some(end)) = (text.find(&open), text.find(&close)) else { return Err(MISSING_TAG) };
        if text.matches(&open).count() != 1 || text.matches(&close).count() != 1 {
            return Err(REPEATED_TAG);
        }
        if end < start + open.len() {
            return Err(OUT_OF_ORDER);
        }
        spans.push((start, start + open.len(), end, end + close.len()));
    }
    if !(spans[0].3 <= spans[1].0 && spans[1].3 <= spans[2].0) {
        return Err(OUT_OF_ORDER);
    }
    let gaps = [&text[..spans[0].0], &text[spans[0].3..spans[1].0], &text[spans[1].3..spans[2].0], &text[spans[2].3..]];
    if gaps.iter().any(|g| !g.trim().is_empty()) {
        return Err(EXTRA_TEXT);
    }
    let field = |i: usize| text[spans[i].1..spans[i].2].trim().to_string();
    let qa = Qa { question: field(0), thoughts: field(1), answer: field(2) };
    if qa.question.is_empty() || qa.thoughts.is_empty() || qa.answer.is_empty() {
        return Err(EMPTY_FIELD);
    }
    if qa.thoughts.chars().count() + qa.answer.chars().count() > max_chars {
        return Err(TOO_LONG);
    }
    Ok(qa)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "<question>What is 2+2?</question>\n<thoughts>I add: 2+2 = 4. Check: 4-2 = 2.</thoughts>\n<answer>4</answer>";

    #[test]
    fn accepts_the_format_only() {
        let qa = parse_qa(GOOD, 1000).unwrap();
        assert_eq!((qa.question.as_str(), qa.answer.as_str()), ("What is 2+2?", "4"));
        assert_eq!(parse_qa("", 1000), Err(EMPTY));
        assert_eq!(parse_qa("no tags at all", 1000), Err(MISSING_TAG));
        assert_eq!(parse_qa(&GOOD.replace("<answer>4</answer>", ""), 1000), Err(MISSING_TAG));
        let swapped = "<thoughts>t</thoughts><question>q</question><answer>a</answer>";
        assert_eq!(parse_qa(swapped, 1000), Err(OUT_OF_ORDER));
        assert_eq!(parse_qa(&GOOD.replace("I add: 2+2 = 4. Check: 4-2 = 2.", "  "), 1000), Err(EMPTY_FIELD));
        assert_eq!(parse_qa(&format!("Sure! {GOOD}"), 1000), Err(EXTRA_TEXT));
        assert_eq!(parse_qa(&format!("{GOOD}<answer>5</answer>"), 1000), Err(REPEATED_TAG));
        assert_eq!(parse_qa(GOOD, 10), Err(TOO_LONG));
        assert_eq!(parse_qa("</question><question>q</question><thoughts>t</thoughts><answer>a</answer>", 100), Err(REPEATED_TAG));
    }
}
