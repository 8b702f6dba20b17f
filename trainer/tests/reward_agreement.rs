//! Our Countdown reward against a plain Python reference of the study's rules
//! (`tests/python/countdown_reference.py`, which evaluates answers with Python's `eval`)
//! on a large generated set: solver answers and their perturbations, adversarial answers
//! (Python-only operators, leading zeros, decimals, non-ASCII digits, division by zero,
//! several or misplaced answers) and random strings over the answer alphabet.

use std::io::Write;
use std::process::{Command, Stdio};

use trainer::countdown::reward::reward;
use trainer::countdown::task::{Task, TaskSpec, generate, prompt};

struct Case {
    text: String,
    task: Task,
}

fn cases() -> Vec<Case> {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut out = Vec::new();
    let spec = TaskSpec::default();
    for _ in 0..400 {
        let (task, s) = generate(&mut rng, &spec);
        let first = task.nums.iter().map(|n| n.to_string()).find(|n| s.contains(n.as_str())).unwrap();
        let answers = vec![
            s.clone(),
            s.replace(' ', ""),
            s.replace(' ', "\t "),
            format!("(({s}))"),
            s.replacen(" * ", " ** ", 1),
            s.replacen(" / ", " // ", 1),
            s.replacen(&first, &(first.parse::<i64>().unwrap() + 1).to_string(), 1),
            format!("{s} + 0"),
            format!("{s} * 1"),
            format!("-({s})"),
            format!("--({s})"),
            s.replacen(&first, &format!("0{first}"), 1),
            s.replacen(&first, &format!("{first}.0"), 1),
            s.replacen(&first, &format!("{first}."), 1),
            s.replace('*', "x"),
            format!("{s} = {}", task.target),
            format!("({s}"),
            s.replacen('3', "\u{663}", 1),
            String::new(),
        ];
        let p = prompt(&task);
        for a in answers {
            out.push(Case { text: format!("{p} some thinking</think>\n<answer>{a}</answer>"), task: task.clone() });
        }
        out.push(Case { text: format!("{p} </think>\n<answer>{s}</answer>\n"), task: task.clone() });
        out.push(Case { text: format!("{p} </think>\n<answer>{s}</answer> then <answer>1</answer>"), task: task.clone() });
        out.push(Case { text: format!("{p} </think>\n<answer>1</answer><answer>{s}</answer>"), task: task.clone() });
        out.push(Case { text: format!("{p} </think>\n<answer>{s}"), task: task.clone() });
        out.push(Case { text: format!("{p} </think> answer: {s}"), task: task.clone() });
        out.push(Case { text: s.clone(), task: task.clone() });
    }
    // Hand-made tasks for the operators and errors solver answers never contain.
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
        ("(5)(3)", 15, vec![5, 3]),
        ("00 + 32", 32, vec![0, 32]),
        ("1 / 3 * 3 * 32", 32, vec![1, 3, 3, 32]),
    ] {
        out.push(Case { text: format!("Assistant: <answer>{answer}</answer>"), task: Task { target, nums } });
    }
    // Random strings over the answer alphabet (no `**`, whose towers Python would take
    // forever to evaluate), with the numbers they contain as the task's numbers.
    let alphabet: Vec<char> = "0123456789+-*/() ".chars().collect();
    for _ in 0..3000 {
        let len = rng.usize(1..18);
        let mut a: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
        while a.contains("**") {
            a = a.replace("**", "*");
        }
        let nums: Vec<i64> = a.split(|c: char| !c.is_ascii_digit()).filter(|d| !d.is_empty() && d.len() < 12).map(|d| d.parse().unwrap()).collect();
        if a.split(|c: char| !c.is_ascii_digit()).any(|d| d.len() >= 12) {
            continue;
        }
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
    assert!(counts.iter().all(|&n| n > 100), "every score is exercised: {counts:?}");
    eprintln!("{} cases agree (scores 0 / 0.1 / 1: {counts:?})", cases.len());
}
