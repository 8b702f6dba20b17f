//! Strict, total parsing of classifier answers. A count is the first `<count>N</count>`
//! whose inside is digits; anything else is *missing* with a status that says why, never a
//! silent zero. Only the answer is parsed, never the document it was asked about.

/// Why an answer has no usable value (`ok` when it has one).
pub const OK: &str = "ok";
pub const EMPTY: &str = "empty";
pub const NO_TAG: &str = "no_tag";
pub const OUT_OF_RANGE: &str = "out_of_range";
pub const BAD_VALUE: &str = "bad_value";

/// The count of an answer, or the status that explains its absence.
pub fn parse_count(answer: &str, max_count: u32) -> Result<u32, &'static str> {
    if answer.trim().is_empty() {
        return Err(EMPTY);
    }
    for inner in tag_values(answer, "count") {
        let inner = inner.trim();
        if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
            return match inner.parse::<u64>() {
                Ok(n) if n <= max_count as u64 => Ok(n as u32),
                _ => Err(OUT_OF_RANGE),
            };
        }
    }
    Err(NO_TAG)
}

/// The study's reading of a count answer: the first `<count>N</count>` whose inside is
/// digits alone (no spaces), with no upper cap; none is missing. Kept beside ours so that
/// the labels manifest can say how often the two differ (docs/FIDELITY.md).
pub fn study_count(answer: &str) -> Option<u64> {
    let mut rest = answer;
    while let Some(at) = rest.find("<count>") {
        let inner = &rest[at + "<count>".len()..];
        let digits = inner.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && inner[digits..].starts_with("</count>") {
            return inner[..digits].parse().ok();
        }
        rest = inner;
    }
    None
}

/// `has_problem`, `has_solution` and `domain` of a problem/solution answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProblemSolution {
    pub has_problem: bool,
    pub has_solution: bool,
    pub domain: Option<String>,
}

pub fn parse_problem_solution(answer: &str) -> Result<ProblemSolution, &'static str> {
    if answer.trim().is_empty() {
        return Err(EMPTY);
    }
    let flag = |tag: &str| -> Result<bool, &'static str> {
        let v = tag_values(answer, tag).next().ok_or(NO_TAG)?;
        match v.trim().to_ascii_lowercase().as_str() {
            "yes" | "true" => Ok(true),
            "no" | "false" => Ok(false),
            _ => Err(BAD_VALUE),
        }
    };
    let domain =
        tag_values(answer, "domain").next().map(|d| d.trim().chars().take(80).collect::<String>()).filter(|d| !d.is_empty() && !d.eq_ignore_ascii_case("none"));
    Ok(ProblemSolution { has_problem: flag("has_problem")?, has_solution: flag("has_solution")?, domain })
}

pub const NO_JSON: &str = "no_json";

/// The four counts of a joint answer, in [`super::prompts::BEHAVIORS`] order: the first
/// `{...}` of the answer must be a JSON object with each behavior as a whole number.
pub fn parse_joint(answer: &str, max_count: u32) -> Result<[u32; 4], &'static str> {
    if answer.trim().is_empty() {
        return Err(EMPTY);
    }
    let start = answer.find('{').ok_or(NO_JSON)?;
    let end = answer[start..].find('}').ok_or(NO_JSON)? + start;
    let value: serde_json::Value = serde_json::from_str(&answer[start..=end]).map_err(|_| NO_JSON)?;
    let mut out = [0u32; 4];
    for (slot, name) in out.iter_mut().zip(super::prompts::BEHAVIORS) {
        let n = value.get(name).ok_or(BAD_VALUE)?.as_u64().ok_or(BAD_VALUE)?;
        if n > max_count as u64 {
            return Err(OUT_OF_RANGE);
        }
        *slot = n as u32;
    }
    Ok(out)
}

/// The insides of `<tag>...</tag>` in order of appearance.
fn tag_values<'a>(text: &'a str, tag: &str) -> impl Iterator<Item = &'a str> + 'a {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let value = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_studys_count_reading_is_strict_and_uncapped() {
        assert_eq!(study_count("x <count>2</count>"), Some(2));
        assert_eq!(study_count("<count> 2 </count>"), None, "spaces inside are missing for the study");
        assert_eq!(parse_count("<count> 2 </count>", 100), Ok(2), "and a count for us");
        assert_eq!(study_count("<count>x</count> then <count>7</count>"), Some(7));
        assert_eq!(study_count("<count>100000</count>"), Some(100_000));
        assert_eq!(study_count("<count>3"), None);
    }

    #[test]
    fn counts_are_strict() {
        assert_eq!(parse_count("Thoughts: two.\n<count>2</count>", 100), Ok(2));
        assert_eq!(parse_count("<count>N</count> ... <count> 3 </count>", 100), Ok(3), "the first tag with digits");
        assert_eq!(parse_count("<count>0</count><count>5</count>", 100), Ok(0));
        assert_eq!(parse_count("", 100), Err(EMPTY));
        assert_eq!(parse_count("I count 4 instances.", 100), Err(NO_TAG));
        assert_eq!(parse_count("<count>-1</count>", 100), Err(NO_TAG));
        assert_eq!(parse_count("<count>101</count>", 100), Err(OUT_OF_RANGE));
        assert_eq!(parse_count("<count>99999999999999999999999</count>", 100), Err(OUT_OF_RANGE));
        assert_eq!(parse_count("<count>7", 100), Err(NO_TAG));
    }

    #[test]
    fn joint_answers() {
        let a = r#"{"backtracking": 1, "verification": 2, "subgoal_setting": 0, "backward_chaining": 3}"#;
        assert_eq!(parse_joint(a, 100), Ok([1, 2, 0, 3]));
        assert_eq!(parse_joint(&format!("Here: {a} done"), 100), Ok([1, 2, 0, 3]));
        assert_eq!(parse_joint(r#"{"backtracking": 1}"#, 100), Err(BAD_VALUE));
        assert_eq!(parse_joint(r#"{"backtracking": -1, "verification": 2, "subgoal_setting": 0, "backward_chaining": 3}"#, 100), Err(BAD_VALUE));
        assert_eq!(parse_joint(&a.replace("3}", "300}"), 100), Err(OUT_OF_RANGE));
        assert_eq!(parse_joint("none", 100), Err(NO_JSON));
        assert_eq!(parse_joint("", 100), Err(EMPTY));
    }

    #[test]
    fn problem_solution_flags() {
        let a = parse_problem_solution("x\n<has_problem>Yes</has_problem>\n<has_solution>no</has_solution>\n<domain>geometry</domain>").unwrap();
        assert_eq!(a, ProblemSolution { has_problem: true, has_solution: false, domain: Some("geometry".into()) });
        assert_eq!(parse_problem_solution("<has_problem>yes</has_problem>"), Err(NO_TAG));
        assert_eq!(parse_problem_solution("<has_problem>maybe</has_problem><has_solution>no</has_solution>"), Err(BAD_VALUE));
        let none = parse_problem_solution("<has_problem>no</has_problem><has_solution>no</has_solution><domain>none</domain>").unwrap();
        assert_eq!(none.domain, None);
    }
}
