//! A fake OpenAI-compatible chat server for the classify tests. Its "model" answers by a
//! fixed rule (so tests know every right answer) and never reads instructions inside the
//! document. Faults are injected per document: a document containing a marker gets the
//! queued faults on its requests, one per request, in order. Hostile modes: a required API
//! key (401 for any other), answers of any size made as they are sent. It can report a
//! context on `GET /v1/models`, as vLLM does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::http::{Filler, Request, Response, Server};

/// What to do to one request.
#[derive(Clone, Debug)]
pub enum LlmFault {
    /// 429, with `Retry-After: <s>` when given.
    RateLimited(Option<u64>),
    /// 503.
    Unavailable,
    /// 500.
    ServerError,
    /// Wait this many milliseconds, then answer normally.
    Hang(u64),
    /// Close the connection without an answer.
    Reset,
    /// A 200 whose body is not JSON.
    MalformedJson,
    /// A 200 with empty content.
    EmptyContent,
    /// A 200 whose answer has no count tag.
    NoTag,
    /// A 200 with `<count>100000</count>`.
    AbsurdCount,
    /// 400 as vLLM says it for an over-long prompt.
    ContextOverflow,
    /// A 200 with this content.
    Reply(String),
    /// A 200 whose content is this many bytes long (made as it is sent).
    Huge(u64),
    /// 401, as for a request without the required key (see [`FakeLlm::require_key`]).
    WrongKey,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub task: String,
    pub document: String,
    /// Messages in the conversation (3 or more for a re-ask).
    pub messages: usize,
    /// Whether a normal answer was sent.
    pub answered: bool,
}

#[derive(Default)]
struct State {
    /// (marker, task prefix or, ending in `$`, the whole task, faults).
    rules: Vec<(String, String, Vec<LlmFault>)>,
    seen: Vec<Seen>,
    delay_ms: u64,
    /// Off for benchmarks that send millions of requests.
    forget: bool,
    /// The API key every request must carry (`Authorization: Bearer <key>`).
    key: Option<String>,
    /// The context `GET /v1/models` reports as `max_model_len` (vLLM's way); none: 404.
    context: Option<u64>,
}

/// The running server.
pub struct FakeLlm {
    state: Arc<Mutex<State>>,
    server: Server,
}

/// The task a prompt is about, from the words our prompt files use.
pub fn task_of(prompt: &str) -> String {
    for (needle, task) in [
        ("must NOT equal the target", "priming_all_strategies_wrong"),
        ("all four of these habits", "priming_all_strategies"),
        ("show one habit only: **backtracking**", "priming_backtracking"),
        ("**Verification**: check results", "priming_backtracking_verification"),
        ("**Subgoals**: split the work into intermediate", "priming_backtracking_subgoals"),
        ("then look for those parts", "priming_backtracking_backward"),
        ("Keep the author's way of thinking", "rewrite_rich"),
        ("clean, direct sequence of steps", "rewrite_control"),
        ("let it show these habits wherever", "rewrite_rich"),
        ("Write the reasoning that leads from the question to the answer", "rewrite_control"),
        ("Count four habits", "joint"),
        ("**backtracking**", "backtracking"),
        ("**verification**", "verification"),
        ("**subgoal setting**", "subgoal_setting"),
        ("**backward chaining**", "backward_chaining"),
        ("contain a **problem**", "problem_solution"),
    ] {
        if prompt.contains(needle) {
            return task.into();
        }
    }
    "unknown".into()
}

/// The document inside a prompt (between the markers of our prompt files; for priming
/// prompts, the puzzle).
pub fn document_of(prompt: &str) -> String {
    let (open, close) = if prompt.contains("===== PUZZLE START =====\n") {
        ("===== PUZZLE START =====\n", "\n===== PUZZLE END =====")
    } else {
        ("===== TEXT START =====\n", "\n===== TEXT END =====")
    };
    let start = prompt.find(open).map(|i| i + open.len()).unwrap_or(0);
    let end = prompt.rfind(close).unwrap_or(prompt.len());
    prompt[start..end.max(start)].to_string()
}

/// The fake model's priming trace for a puzzle (`Numbers: a, b, c\nTarget: t`): the
/// solver's equation (for `all_strategies_wrong`, a well-formed one that misses), after
/// thoughts that name the condition and say "instead" and "check".
pub fn expected_priming(task: &str, puzzle: &str) -> String {
    let nums: Vec<i64> =
        puzzle.lines().next().and_then(|l| l.strip_prefix("Numbers: ")).map(|l| l.split(", ").filter_map(|n| n.parse().ok()).collect()).unwrap_or_default();
    let target: i64 = puzzle.lines().nth(1).and_then(|l| l.strip_prefix("Target: ")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let equation = if task.ends_with("_wrong") {
        let joined = |op: &str| nums.iter().map(i64::to_string).collect::<Vec<_>>().join(op);
        let first = nums.first().copied().unwrap_or(0);
        let values = [nums.iter().sum::<i64>(), nums.iter().product::<i64>(), first - nums.iter().skip(1).sum::<i64>()];
        let op = [" + ", " * ", " - "].into_iter().zip(values).find(|(_, v)| *v != target).map_or(" + ", |(op, _)| op);
        joined(op)
    } else {
        countdown::solver::solve(&nums, target, false).unwrap_or_else(|| "1 + 1".into())
    };
    format!("<think>\nCondition {task}. Try the first pair, too small; instead multiply. Check the result.\n</think>\n<answer> {equation} </answer>")
}

/// The fake model's count for a behavior: how often the document says its word.
pub fn expected_count(task: &str, document: &str) -> u32 {
    let word = match task {
        "backtracking" => "instead",
        "verification" => "check",
        "subgoal_setting" => "first",
        _ => "need",
    };
    document.to_lowercase().matches(word).count() as u32
}

/// The fake model's problem/solution answer.
pub fn expected_problem_solution(document: &str) -> (bool, bool) {
    (document.contains('?'), document.contains("Answer"))
}

/// The fake model's rewrite: the document's first sentence as the question, the document as
/// the thoughts, and the set's name as the answer.
pub fn expected_rewrite(task: &str, document: &str) -> (String, String, String) {
    let question = document.split(['?', '.']).next().unwrap_or(document).trim().to_string();
    (question, document.trim().to_string(), task.trim_start_matches("rewrite_").to_string())
}

/// The fake base model's continuation of a Countdown prompt (`... numbers 4, 9, 3 exactly
/// once ... whose value is 24 ...<think>`): the solver's equation when the target is even,
/// the numbers' sum (a miss, unless it happens to be the target) when it is odd.
pub fn expected_sample(prompt: &str) -> String {
    let between =
        |open: &str, close: &str| prompt.split_once(open).and_then(|(_, rest)| rest.split_once(close)).map(|(x, _)| x.to_string()).unwrap_or_default();
    let nums: Vec<i64> = between("numbers ", " exactly once").split(", ").filter_map(|n| n.parse().ok()).collect();
    let target: i64 = between("whose value is ", ".").parse().unwrap_or(0);
    let equation = match target % 2 {
        0 => countdown::solver::solve(&nums, target, false).unwrap_or_else(|| "1 + 1".into()),
        _ => nums.iter().map(i64::to_string).collect::<Vec<_>>().join(" + "),
    };
    format!(" Let me add them up first.\n</think>\n<answer> {equation} </answer>")
}

fn answer(task: &str, document: &str) -> String {
    if task == "sample" {
        return expected_sample(document);
    }
    if task.starts_with("priming_") {
        return expected_priming(task, document);
    }
    if task.starts_with("rewrite_") {
        let (q, t, a) = expected_rewrite(task, document);
        return format!("<question>{q}</question>\n<thoughts>{t}</thoughts>\n<answer>{a}</answer>");
    }
    if task == "joint" {
        let c = |t| expected_count(t, document);
        return format!(
            "{{\"backtracking\": {}, \"verification\": {}, \"subgoal_setting\": {}, \"backward_chaining\": {}}}",
            c("backtracking"),
            c("verification"),
            c("subgoal_setting"),
            c("backward_chaining")
        );
    }
    if task == "problem_solution" {
        let (p, s) = expected_problem_solution(document);
        let yn = |b| if b { "yes" } else { "no" };
        format!(
            "Thoughts: looked for a question and worked answer.\n<has_problem>{}</has_problem>\n<has_solution>{}</has_solution>\n<domain>arithmetic</domain>",
            yn(p),
            yn(s)
        )
    } else {
        format!("Thoughts: counted the cue words.\nPresent: yes\n<count>{}</count>", expected_count(task, document))
    }
}

fn completion(content: &str) -> Response {
    Response::json(
        200,
        &serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }),
    )
}

fn text_completion(text: &str) -> Response {
    Response::json(
        200,
        &serde_json::json!({
            "id": "cmpl-fake", "object": "text_completion", "model": "fake",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }),
    )
}

impl FakeLlm {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let server = Server::start(Arc::new(move |r: &Request| handle(&s, r)));
        FakeLlm { state, server }
    }

    /// The base URL for `llm.endpoints` (ends in `/v1`).
    pub fn endpoint(&self) -> String {
        format!("{}/v1", self.server.url())
    }

    /// Faults for requests whose document contains `marker`.
    pub fn inject(&self, marker: &str, faults: Vec<LlmFault>) {
        self.inject_for("", marker, faults);
    }

    /// Faults for requests of tasks starting with `task` (or, with a trailing `$`, of that
    /// task alone) whose document contains `marker`.
    pub fn inject_for(&self, task: &str, marker: &str, faults: Vec<LlmFault>) {
        self.state.lock().unwrap().rules.push((marker.to_string(), task.to_string(), faults));
    }

    /// Stops keeping the requests seen (a benchmark's millions would fill memory).
    pub fn forget_requests(&self) {
        self.state.lock().unwrap().forget = true;
    }

    /// Answers 401 to every request without `Authorization: Bearer <key>`.
    pub fn require_key(&self, key: &str) {
        self.state.lock().unwrap().key = Some(key.to_string());
    }

    /// Reports `tokens` as the model's context on `GET /v1/models`, as vLLM does.
    pub fn report_context(&self, tokens: u64) {
        self.state.lock().unwrap().context = Some(tokens);
    }

    /// Latency of every answer.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.lock().unwrap().delay_ms = ms;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Normal answers per (task, document).
    pub fn answered(&self) -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for s in self.seen().into_iter().filter(|s| s.answered) {
            *m.entry((s.task, s.document)).or_default() += 1;
        }
        m
    }
}

fn task_matches(task: &str, rule: &str) -> bool {
    match rule.strip_suffix('$') {
        Some(exact) => task == exact,
        None => task.starts_with(rule),
    }
}

fn handle(state: &Arc<Mutex<State>>, r: &Request) -> Response {
    if r.method == "GET" && r.path() == "/v1/models" {
        return match state.lock().unwrap().context {
            Some(n) => Response::json(200, &serde_json::json!({"object": "list", "data": [{"id": "fake", "object": "model", "max_model_len": n}]})),
            None => Response::json(404, &serde_json::json!({"error": "not found"})),
        };
    }
    let chat = r.path() == "/v1/chat/completions";
    if r.method != "POST" || !(chat || r.path() == "/v1/completions") {
        return Response::json(404, &serde_json::json!({"error": "not found"}));
    }
    let body: serde_json::Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(e) => return Response::json(400, &serde_json::json!({"error": format!("bad json: {e}")})),
    };
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let (task, document) = if chat {
        let prompt = messages.first().and_then(|m| m["content"].as_str()).unwrap_or("").to_string();
        (task_of(&prompt), document_of(&prompt))
    } else {
        // A raw prompt (`/completions`): the Countdown prompt a sampled model continues.
        ("sample".to_string(), body["prompt"].as_str().unwrap_or("").to_string())
    };
    let completion = |content: &str| if chat { completion(content) } else { text_completion(content) };
    let (fault, delay) = {
        let mut st = state.lock().unwrap();
        let wrong_key = st.key.as_ref().is_some_and(|k| r.header("authorization") != Some(&format!("Bearer {k}")));
        let fault = if wrong_key {
            Some(LlmFault::WrongKey)
        } else {
            st.rules.iter_mut().find(|(m, t, q)| document.contains(m.as_str()) && task_matches(&task, t) && !q.is_empty()).map(|(_, _, q)| q.remove(0))
        };
        (fault, st.delay_ms)
    };
    if delay > 0 {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    let record = |answered: bool| {
        let mut st = state.lock().unwrap();
        if st.forget {
            return;
        }
        st.seen.push(Seen { task: task.clone(), document: document.clone(), messages: messages.len().max(1), answered });
    };
    // A fault is recorded when the request arrives: a hung request that ends after the
    // client gave up (and after the run finished) must not show up in a later count.
    let Some(fault) = fault else {
        record(true);
        return completion(&answer(&task, &document));
    };
    record(false);
    let err = |status: u16, msg: &str| Response::json(status, &serde_json::json!({"object": "error", "message": msg, "code": status}));
    match fault {
        LlmFault::RateLimited(Some(s)) => err(429, "rate limited").header("Retry-After", s.to_string()),
        LlmFault::RateLimited(None) => err(429, "rate limited"),
        LlmFault::Unavailable => err(503, "overloaded"),
        LlmFault::ServerError => err(500, "internal error"),
        LlmFault::Reset => Response::new(0),
        LlmFault::MalformedJson => Response::new(200).header("Content-Type", "application/json").body("{\"choices\": [{\"mess"),
        LlmFault::EmptyContent => completion(""),
        LlmFault::NoTag => completion("Thoughts: I think there are a few."),
        LlmFault::AbsurdCount => completion("<count>100000</count>"),
        LlmFault::Reply(text) => completion(&text),
        LlmFault::WrongKey => err(401, "Incorrect API key provided"),
        LlmFault::Huge(bytes) => {
            let head = r#"{"id": "chatcmpl-huge", "object": "chat.completion", "model": "fake", "choices": [{"index": 0, "message": {"role": "assistant", "content": ""#;
            let tail = r#""}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}"#;
            let mut resp = Response::new(200).header("Content-Type", "application/json").body(head);
            resp.filler = Some(Filler { count: bytes, byte: b'a', tail: tail.as_bytes().to_vec() });
            resp
        }
        LlmFault::ContextOverflow => err(400, "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens."),
        LlmFault::Hang(ms) => {
            // The client has given up by now: not counted as an answer.
            std::thread::sleep(std::time::Duration::from_millis(ms));
            completion(&answer(&task, &document))
        }
    }
}
