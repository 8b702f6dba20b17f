//! Behavior tracking of PPO rollouts end to end: `trainer ppo` with `[track]` writes the
//! tracked steps' responses as parquet parts (test-set generations before PPO and after
//! every `every`-th step by default, or the training batches' responses); `pipeline classify --input <run>/rollouts
//! --run <run>` (Countdown prompts, a config without sources) labels them against the fake
//! OpenAI server; `corpus-tools` joins rollouts and labels per step (SQL and the report's
//! plot); a rerun pays for nothing twice.

use std::path::{Path, PathBuf};
use std::process::Command;

use habits_tests::llm_server::{FakeLlm, expected_count};
use habits_tests::procs::{binary, llama3_tokenizer, pipeline, python, run_expect};

const BEHAVIORS: [&str; 4] = ["backtracking", "verification", "subgoal_setting", "backward_chaining"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A tiny PPO run (random 8M model, 3 steps of 2 prompts x 2 samples, 2 held-out tasks)
/// tracking every 2nd step, three responses each, from `source` (`""`: the default).
fn ppo_config(dir: &Path, source: &str) -> PathBuf {
    let text = format!(
        "[model]\nconfig = \"{}\"\ntokenizer = \"{}\"\n\n[tasks]\neval_tasks = 2\n\n[tasks.generate]\nmin_numbers = 3\nmax_numbers = 3\nmax_number = 12\n\n\
         [ppo]\nsteps = 3\nprompts_per_step = 2\nsamples = 2\nmax_response_tokens = 12\nactor_mini_batch_prompts = 2\ncritic_mini_batch = 4\nactor_lr = 1e-4\ncritic_lr = 1e-4\neval_every = 3\nsave_every = 3\n\n\
         [track]\nevery = 2\nsamples = 3\n{source}\n[output]\ndir = \"{}\"\n",
        repo("configs/models/tiny-llama3.json").display(),
        llama3_tokenizer().display(),
        dir.join(format!("ppo{}", source.len())).display()
    );
    let path = dir.join(format!("ppo{}.toml", source.len()));
    std::fs::write(&path, text).unwrap();
    path
}

/// configs/track.toml pointed at the fake server (no [[sources]]).
fn track_config(dir: &Path, llm: &FakeLlm) -> PathBuf {
    let shipped = std::fs::read_to_string(repo("configs/track.toml")).unwrap();
    let text = shipped
        .replace("endpoints = [\"https://api.openai.com/v1\"]", &format!("endpoints = [\"{}\"]\nbackoff_ms = 10\ntimeout_s = 5", llm.endpoint()))
        .replace("model = \"gpt-4o-mini\"", "model = \"fake\"")
        .replace("prompts_dir = \"configs/prompts/track\"", &format!("prompts_dir = \"{}\"", repo("configs/prompts/track").display()));
    assert!(text.contains("model = \"fake\"") && !text.lines().any(|l| l.starts_with("[[sources]]")), "configs/track.toml changed: {text}");
    let path = dir.join("track.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn corpus_tools() -> Command {
    Command::new(binary("corpus-tools"))
}

#[test]
fn rollouts_are_classified_and_queried_per_step() {
    let tmp = tempfile::tempdir().unwrap();
    let read = |run: &Path| -> Vec<serde_json::Value> {
        let script = r#"
import sys, json, glob, pyarrow.parquet as pq
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/*.parquet")):
    rows += pq.read_table(f).to_pylist()
print(json.dumps(rows))
"#;
        serde_json::from_str(&python(script, &[run.join("rollouts").to_str().unwrap()], &[])).unwrap()
    };
    let steps = |rows: &[serde_json::Value]| rows.iter().map(|r| r["step"].as_i64().unwrap()).collect::<Vec<_>>();
    // From the training batches: steps 1 and 2.
    run_expect(Command::new(binary("trainer")).arg("ppo").arg("--config").arg(ppo_config(tmp.path(), "source = \"rollouts\"\n")), true);
    assert_eq!(steps(&read(&tmp.path().join(format!("ppo{}", "source = \"rollouts\"\n".len())))), vec![1, 1, 1, 2, 2, 2]);

    // The study's way (the default): the held-out tasks before PPO and after step 2, at
    // temperature 1: three draws from the two tasks, so one of them twice.
    let run = tmp.path().join("ppo0");
    run_expect(Command::new(binary("trainer")).arg("ppo").arg("--config").arg(ppo_config(tmp.path(), "")), true);
    let rollouts = read(&run);
    assert_eq!(steps(&rollouts), vec![0, 0, 0, 2, 2, 2]);
    let eval: Vec<serde_json::Value> =
        std::fs::read_to_string(run.join("eval_samples.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let held_out: std::collections::HashSet<i64> = eval.iter().map(|e| e["target"].as_i64().unwrap()).collect();
    assert!(rollouts.iter().all(|r| held_out.contains(&r["target"].as_i64().unwrap())), "tracked tasks are held-out tasks: {held_out:?}");
    for r in &rollouts {
        let text = r["text"].as_str().unwrap();
        assert!(text.starts_with(&format!("Puzzle: reach {} with the numbers", r["target"])), "{text}");
        assert!(text.ends_with(r["response"].as_str().unwrap()));
        assert!(r["response_tokens"].as_i64().unwrap() >= 1 && r["score"].as_f64().is_some());
    }

    // Classified into the PPO run itself.
    let llm = FakeLlm::start();
    let track = track_config(tmp.path(), &llm);
    let classify = || {
        let mut c = pipeline();
        c.arg("classify").arg("--config").arg(&track).arg("--input").arg(run.join("rollouts")).arg("--run").arg(&run);
        c
    };
    run_expect(&mut classify(), true);
    assert_eq!(llm.seen().len(), 6 * 4, "six responses, four behaviors each");
    let sql = |query: &str| -> Vec<serde_json::Value> {
        let out = run_expect(corpus_tools().arg("sql").arg("--run").arg(&run).arg("--format").arg("json").arg(query), true);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let labeled =
        sql("SELECT r.text, l.backtracking, l.verification, l.subgoal_setting, l.backward_chaining FROM rollouts r JOIN labels l ON r.doc_id = l.doc_id");
    assert_eq!(labeled.len(), 6);
    for row in &labeled {
        let text = row["text"].as_str().unwrap();
        for b in BEHAVIORS {
            assert_eq!(row[b].as_u64(), Some(expected_count(b, text) as u64), "{b} of {text}");
        }
    }
    let per_step = sql("SELECT r.step, count(*) AS n FROM rollouts r JOIN labels l ON r.doc_id = l.doc_id GROUP BY r.step ORDER BY r.step");
    assert_eq!(per_step, vec![serde_json::json!({"step": 0, "n": 3}), serde_json::json!({"step": 2, "n": 3})]);

    // A rerun sends nothing: every answer is in the journal.
    run_expect(&mut classify(), true);
    assert_eq!(llm.seen().len(), 6 * 4, "a rerun asked again");

    // The report plots behaviors over the steps.
    run_expect(corpus_tools().arg("stats").arg("--run").arg(&run), true);
    let report = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(report.contains("## Behaviors over PPO steps"), "{report}");
    assert!(run.join("report/behaviors_by_step.png").is_file());
}
