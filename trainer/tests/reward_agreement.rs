//! Our Countdown reward against a plain Python reference of the study's rules
//! (`tests/python/countdown_reference.py`, which evaluates answers with Python's `eval`)
//! on more than 50,000 generated answers: solver answers and their perturbations,
//! adversarial answers (Python-only operators, leading zeros, decimal points such as `4.`
//! and `1.5`, non-ASCII digits, division by zero, several or misplaced answers, carriage
//! returns in and out of parentheses, control characters and Unicode spaces at the ends
//! and inside, integers far beyond 64 bits, deep unary chains and parentheses at Python's
//! limit, chat-template transcripts) and random strings over the answer alphabet.

use std::io::Write;
use std::process::{Command, Stdio};

use trainer::countdown::reward::reward;
use trainer::countdown::task::{Task, TaskSpec, generate, prompt};

struct Case {
    text: String,
    task: Task,
}

/// Variants of a solver answer `s` for `task`: each keeps or breaks one rule.
fn variants(s: &str, task: &Task) -> Vec<String> {
    let first = task.nums.iter().map(|n| n.to_string()).find(|n| s.contains(n.as_str())).unwrap();
    let bumped = (first.parse::<i64>().unwrap() + 1).to_string();
    let mut out = vec![
        s.to_string(),
        s.replace(' ', ""),
        s.replace(' ', "\t "),
        format!("(({s}))"),
        s.replacen(" * ", " ** ", 1),
        s.replacen(" / ", " // ", 1),
        s.replacen(&first, &bumped, 1),
        format!("{s} + 0"),
        format!("{s} * 1"),
        format!("-({s})"),
        format!("--({s})"),
        s.replacen(&first, &format!("0{first}"), 1),
        s.replacen(&first, &format!("0{first}."), 1),
        s.replacen(&first, &format!("{first}.0"), 1),
        s.replacen(&first, &format!("{first}."), 1),
        s.replacen(&first, &format!("{first} ."), 1),
        s.replace(' ', "") + ".",
        s.replace('*', "x"),
        format!("{s} = {}", task.target),
        format!("({s}"),
        s.replacen('3', "\u{663}", 1),
        String::new(),
        format!("({s})\r"),
        s.replacen(" + ", " +\r ", 1),
        format!("({})", s.replacen(" + ", " +\r ", 1)),
        s.replacen(" - ", " -\r\n", 1),
        format!("\x1c{s}\x1f"),
        format!("\u{a0}{s}\u{85}\u{2003}"),
        format!("\x0b{s}\x0c"),
        s.replacen(' ', "\x0c", 1),
        s.replacen(' ', "\x0b", 1),
        s.replacen(' ', "\x1d", 1),
        s.replacen(' ', "\u{a0}", 1),
        format!("{}({s})", "-".repeat(2)),
        format!("{}({s})", "-+".repeat(150)),
        format!("{}{s}{}", "(".repeat(199), ")".repeat(199)),
        format!("{}{s}{}", "(".repeat(200), ")".repeat(200)),
        format!("{}{s}{}", "(".repeat(201), ")".repeat(201)),
    ];
    // A number written as a sum of decimal parts keeps the runs of digits: `7` -> `3.5 + 3.5`
    // needs the numbers 3, 5, 3, 5 (the task does not have them: 0.1), which is the rule.
    out.push(s.replacen(&first, &format!("({first}.5 - .5)"), 1));
    out
}

fn cases() -> Vec<Case> {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut out = Vec::new();
    let spec = TaskSpec::default();
    for _ in 0..600 {
        let (task, s) = generate(&mut rng, &spec);
        let p = prompt(&task);
        for a in variants(&s, &task) {
            out.push(Case { text: format!("{p} some thinking</think>\n<answer>{a}</answer>"), task: task.clone() });
        }
        out.push(Case { text: format!("{p} </think>\n<answer>{s}</answer>\n"), task: task.clone() });
        out.push(Case { text: format!("{p} </think>\n<answer>{s}</answer> then <answer>1</answer>"), task: task.clone() });
        out.push(Case { text: format!("{p} </think>\n<answer>1</answer><answer>{s}</answer>"), task: task.clone() });
        out.push(Case { text: format!("{p} </think>\n<answer>{s}"), task: task.clone() });
        out.push(Case { text: format!("{p} </think> answer: {s}"), task: task.clone() });
        out.push(Case { text: format!("{p} </think>\r\n<answer>{s}</answer>\r"), task: task.clone() });
        out.push(Case { text: s.clone(), task: task.clone() });
        let chat =
            format!("<|im_start|>user\nUse {:?} to make {}<|im_end|>\n<|im_start|>assistant\n<think>ok</think>\n<answer>{s}</answer>", task.nums, task.target);
        out.push(Case { text: chat.clone(), task: task.clone() });
        out.push(Case { text: chat.replace("<|im_start|>assistant", "<|im_start|>Assistant"), task: task.clone() });
    }
    // Hand-made tasks for the operators, sizes and errors solver answers never contain.
    for (answer, target, nums) in [
        ("2 ** 3 * 4", 32, vec![2, 3, 4]),
        ("-2 ** 2 + 36", 32, vec![2, 2, 36]),
        ("48 // 6 * 4", 32, vec![48, 6, 4]),
        ("-7 // 2 + 36", 32, vec![7, 2, 36]),
        ("36 / (4 - 4) + 32", 32, vec![36, 4, 4, 32]),
        ("0 ** 0 * 32", 32, vec![0, 0, 32]),
        ("2 ** -1 * 64", 32, vec![2, 1, 64]),
        ("(0 - 8) ** (1 / 3) + 30", 32, vec![0, 8, 1, 3, 30]),
        ("99 ** 9 - 99 ** 9 + 32", 32, vec![99, 9, 99, 9, 32]),
        ("99 ** 99 - 99 ** 99 + 32", 32, vec![99, 99, 99, 99, 32]),
        ("3 ** 81 // 9 ** 40", 3, vec![3, 81, 9, 40]),
        ("3 ** 81 / 9 ** 40", 3, vec![3, 81, 9, 40]),
        ("10 ** 400 / 10 ** 399", 10, vec![10, 400, 10, 399]),
        ("10 ** 400 * 1.0", 10, vec![10, 400, 1, 0]),
        ("(2 ** 60 + 1) / 2 ** 60 * 32", 32, vec![2, 60, 1, 2, 60, 32]),
        ("(2 ** 70 + 3) // 2 ** 70 * 32", 32, vec![2, 70, 3, 2, 70, 32]),
        ("10.0 ** 400 - 10.0 ** 400 + 32", 32, vec![10, 0, 400, 10, 0, 400, 32]),
        ("(5)(3)", 15, vec![5, 3]),
        ("00 + 32", 32, vec![0, 32]),
        ("1 / 3 * 3 * 32", 32, vec![1, 3, 3, 32]),
        ("4. * 8", 32, vec![4, 8]),
        ("30. + 2", 32, vec![30, 2]),
        ("1.5 * 2 + 29", 32, vec![1, 5, 2, 29]),
        (".5 * 64", 32, vec![5, 64]),
        ("1..5 * 2", 3, vec![1, 5, 2]),
        ("1.5.2 * 2", 3, vec![1, 5, 2, 2]),
        ("()", 0, vec![]),
        ("32 +\r 0", 32, vec![32, 0]),
        ("(32 +\r 0)", 32, vec![32, 0]),
    ] {
        out.push(Case { text: format!("Assistant: <answer>{answer}</answer>"), task: Task { target, nums } });
    }
    for depth in [1usize, 10, 100, 500, 1000, 1400] {
        for (unary, target) in [("-", -32), ("+", 32), ("--", 32), ("-+", -32)] {
            let chain = unary.repeat(depth / unary.len().max(1));
            let target = if unary == "-" && depth % 2 == 0 { 32 } else { target };
            out.push(Case { text: format!("Assistant: <answer>{chain}32</answer>"), task: Task { target, nums: vec![32] } });
        }
    }
    // Random strings over the answer alphabet, with the numbers they contain as the task's
    // numbers. At most one `**` and runs of at most three digits: Python's `eval` would
    // spend minutes on a tower.
    let alphabet: Vec<char> = "0123456789+-*/() .\r\t".chars().collect();
    while out.len() < 52_000 {
        let len = rng.usize(1..24);
        let mut a: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
        while a.matches("**").count() > 1 {
            a = a.replacen("**", "*", 1);
        }
        let runs: Vec<&str> = a.split(|c: char| !c.is_ascii_digit()).filter(|d| !d.is_empty()).collect();
        if runs.iter().any(|d| d.len() > 3) {
            continue;
        }
        let nums: Vec<i64> = runs.iter().map(|d| d.parse().unwrap()).collect();
        let target = rng.i64(-5..40);
        out.push(Case { text: format!("Assistant: <answer>{a}</answer>"), task: Task { target, nums } });
    }
    out
}

#[test]
fn our_reward_agrees_with_the_python_reference() {
    let cases = cases();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/countdown_reference.py");
    let mut child = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut input = String::new();
    for c in &cases {
        input.push_str(&serde_json::json!({ "text": c.text, "target": c.task.target, "nums": c.task.nums }).to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let reference: Vec<f64> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(reference.len(), cases.len());
    let mut counts = [0usize; 3];
    let mut disagreements = Vec::new();
    for (c, want) in cases.iter().zip(&reference) {
        let ours = reward(&c.text, &c.task);
        counts[if ours == 0.0 {
            0
        } else if ours == 1.0 {
            2
        } else {
            1
        }] += 1;
        if ours != *want {
            disagreements.push(format!("ours {ours} vs reference {want}: {:?} {:?}", c.task, c.text.rsplit('\n').next().unwrap()));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements[..disagreements.len().min(20)].join("\n")
    );
    assert!(cases.len() >= 50_000);
    assert!(counts.iter().all(|&n| n > 1_000), "every score is exercised: {counts:?}");
    eprintln!("{} cases agree (scores 0 / 0.1 / 1: {counts:?})", cases.len());
}
