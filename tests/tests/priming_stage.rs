//! The priming stage end to end: `pipeline prime` with the shipped config and prompts
//! against the fake OpenAI server writes one SFT set per condition from a TinyZero task
//! file. Kept as given (the shipped default, the study's way): every answered reply is a
//! row, asked once, and the wrong-answer condition holds no correct answer. Checked:
//! pyarrow reads every set and the study's reward scores every row as its condition
//! requires; rejected replies (no tags, a wrong result, a right result where a wrong one was
//! asked) are asked again once and then recorded, never written as rows; the controls
//! follow the all-strategies traces; a rerun pays for nothing; `corpus-tools` queries the
//! journal and the sets and verifies the shards; `trainer ppo` primes on
//! one of the sets; and the study's chain works: `trainer pretrain` (SFT) on a set, then
//! `trainer ppo` from that run's newest checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use countdown::reward::{Verdict, judge};
use countdown::task::Task;
use habits_tests::llm_server::{FakeLlm, LlmFault};
use habits_tests::procs::{binary, llama3_tokenizer, pipeline, python, run_expect};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

const PUZZLES: [(i64, [i64; 3]); 6] = [(24, [4, 9, 3]), (10, [2, 3, 4]), (15, [5, 5, 5]), (13, [7, 3, 3]), (21, [7, 3, 11]), (12, [6, 2, 9])];

/// configs/priming.toml pointed at the fake server (for the LLM and the sampled model) and
/// a task file of `PUZZLES`, keeping replies by `keep`, the wrong answers `wrong_answers`.
fn priming_config(dir: &Path, llm: &FakeLlm, tasks: &Path, keep: &str, wrong_answers: &str) -> PathBuf {
    let shipped = std::fs::read_to_string(repo("configs/priming.toml")).unwrap();
    let text = shipped
        .replace("dir = \"runs\"", &format!("dir = \"{}\"", dir.join("runs").display()))
        .replace("endpoints = [\"http://127.0.0.1:8000/v1\"]", &format!("endpoints = [\"{}\"]\nbackoff_ms = 10\ntimeout_s = 5", llm.endpoint()))
        .replace("model = \"Qwen/Qwen2.5-32B-Instruct\"", "model = \"fake\"")
        .replace("endpoints = [\"http://127.0.0.1:8002/v1\"]", &format!("endpoints = [\"{}\"]", llm.endpoint()))
        .replace("model = \"meta-llama/Llama-3.2-3B\"", "model = \"fake-base\"")
        .replace("wrong_answers = \"sampled\"", &format!("wrong_answers = \"{wrong_answers}\""))
        .replace(
            "prompts_dir = \"configs/prompts/priming\"",
            &format!("prompts_dir = \"{}\"\ntasks_file = \"{}\"", repo("configs/prompts/priming").display(), tasks.display()),
        )
        .replace("tasks = 1000", "tasks = 6")
        .replace("reasks = 2", "reasks = 1")
        .replace("keep = \"as_given\"", &format!("keep = \"{keep}\""))
        .replace("tokenizer = \"${HABITS_CACHE}/tokenizers/llama3/tokenizer.json\"", &format!("tokenizer = \"{}\"", llama3_tokenizer().display()))
        .replace("test_fraction = 0.05", "test_fraction = 0.3");
    assert!(
        text.contains("model = \"fake\"")
            && text.contains("model = \"fake-base\"")
            && text.contains("tasks = 6")
            && text.contains("tasks_file")
            && text.contains(&format!("keep = \"{keep}\""))
            && text.contains(&format!("wrong_answers = \"{wrong_answers}\"")),
        "configs/priming.toml changed: {text}"
    );
    let path = dir.join("priming.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A TinyZero task file of `PUZZLES`, written by pyarrow.
fn task_file(dir: &Path) -> PathBuf {
    let tasks = dir.join("tasks.parquet");
    let rows: Vec<String> = PUZZLES.iter().map(|(t, n)| format!("({t}, {n:?})")).collect();
    python(
        &format!(
            "import sys, pyarrow as pa, pyarrow.parquet as pq\nrows = [{}]\npq.write_table(pa.table({{'target': [r[0] for r in rows], 'nums': [r[1] for r in rows]}}), sys.argv[1])\n",
            rows.join(", ")
        ),
        &[tasks.to_str().unwrap()],
        &[],
    );
    tasks
}

/// Every set's rows as pyarrow reads them, by set.
fn read_sets(root: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let script = r#"
import sys, json, glob, pyarrow.parquet as pq
out = {}
for d in sorted(glob.glob(sys.argv[1] + "/*/")):
    files = sorted(glob.glob(d + "data/*.parquet"))
    out[d.rstrip("/").split("/")[-1]] = [r for f in files for r in pq.read_table(f).to_pylist()]
print(json.dumps(out))
"#;
    serde_json::from_str(&python(script, &[root.to_str().unwrap()], &[])).unwrap()
}

#[test]
fn priming_sets_keep_replies_as_given_and_sample_wrong_answers_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let tasks = task_file(tmp.path());
    let llm = FakeLlm::start();
    llm.inject_for("priming_backtracking$", "Target: 10", vec![LlmFault::Reply("I would rather not use tags.".into())]);
    llm.inject_for("priming_all_strategies$", "Target: 15", vec![LlmFault::Reply("<think>\nAdd them.\n</think>\n<answer> 5 * 5 - 5 </answer>".into())]);
    let cfg = priming_config(tmp.path(), &llm, &tasks, "as_given", "sampled");
    let out = run_expect(pipeline().arg("prime").arg("--config").arg(&cfg), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kept as given"), "{err}");
    // Asked once each: 5 conditions asked of the LLM, 6 puzzles, no re-asks; and the sampled
    // model continued 6 x 4 puzzles of its own, once each.
    let seen = llm.seen();
    let sampled: Vec<_> = seen.iter().filter(|s| s.task == "sample").collect();
    assert_eq!((seen.len() - sampled.len(), sampled.len()), (30, 24));
    assert!(seen.iter().all(|s| s.messages == 1));
    assert!(sampled.iter().all(|s| s.document.ends_with("Let me solve this step by step.\n<think>")), "the raw Countdown prompt");

    let root = tmp.path().join("runs/priming/priming");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!((manifest["keep"].as_str(), manifest["sampled_model"].as_str()), (Some("as_given"), Some("fake-base")));
    assert_eq!(manifest["statuses"]["backtracking"], serde_json::json!({ "ok": 5, "unparsed": 1 }));
    assert_eq!(manifest["statuses"]["all_strategies"], serde_json::json!({ "ok": 5, "wrong_result": 1 }));
    let wrong: BTreeMap<String, u64> = serde_json::from_value(manifest["statuses"]["all_strategies_wrong"].clone()).unwrap();
    assert_eq!(wrong.values().sum::<u64>(), 24, "{wrong:?}");
    assert!(wrong["correct"] > 0 && wrong["kept"] == 6, "{wrong:?}");
    let sets = read_sets(&root);
    let rows = |set: &str| sets[set].len();
    // Every answered reply is a row; the wrong-answer condition holds the first six misses.
    assert_eq!((rows("all_strategies"), rows("backtracking"), rows("all_strategies_wrong")), (6, 6, 6));
    // The controls come from every all-strategies reply that parses (the wrong one too).
    assert_eq!((rows("empty_cot"), rows("placeholder")), (6, 6));
    let completions = |set: &str| sets[set].iter().map(|r| r["completion"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(completions("backtracking").contains(&"\nI would rather not use tags.".to_string()));
    assert!(completions("all_strategies").contains(&"\nAdd them.\n</think>\n<answer> 5 * 5 - 5 </answer>".to_string()));
    assert!(completions("empty_cot").contains(&"\n</think>\n<answer> 5 * 5 - 5 </answer>".to_string()));
    for row in &sets["all_strategies_wrong"] {
        let (prompt, completion) = (row["prompt"].as_str().unwrap(), row["completion"].as_str().unwrap());
        // The sampled model's own puzzles (targets up to 100), its reply as given, not correct.
        let sent = sampled.iter().find(|s| s.document == prompt).expect("a sampled prompt");
        assert_eq!(completion, habits_tests::llm_server::expected_sample(&sent.document));
        let between = |open: &str, close: &str| prompt.split_once(open).unwrap().1.split_once(close).unwrap().0.to_string();
        let nums = between("numbers ", " exactly once").split(", ").map(|n| n.parse().unwrap()).collect();
        let task = Task { target: between("whose value is ", ".").parse().unwrap(), nums };
        assert_ne!(judge(&format!("{prompt}{completion}"), &task), Verdict::Correct, "{prompt}{completion}");
    }
    // A rerun pays for nothing.
    run_expect(pipeline().arg("-q").arg("prime").arg("--config").arg(&cfg), true);
    assert_eq!(llm.seen().len(), seen.len());

    // Without a sampled model, one error naming the section and the alternative, before any request.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let without = text.replace(&format!("[llm.priming_sample]\nendpoints = [\"{}\"]\nmodel = \"fake-base\"\n", llm.endpoint()), "");
    assert_ne!(without, text);
    std::fs::write(&cfg, without).unwrap();
    std::fs::remove_dir_all(tmp.path().join("runs/priming/journal")).unwrap();
    let before = llm.seen().len();
    let out = run_expect(pipeline().arg("prime").arg("--config").arg(&cfg), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[llm.priming_sample]") && err.contains("wrong_answers = \"asked\""), "{err}");
    assert_eq!(llm.seen().len(), before, "no request before the error");
}

#[test]
fn priming_sets_hold_checked_traces_per_condition() {
    let tmp = tempfile::tempdir().unwrap();
    let tasks = task_file(tmp.path());
    let llm = FakeLlm::start();
    let twice = |text: &str| vec![LlmFault::Reply(text.to_string()); 2];
    llm.inject_for("priming_backtracking$", "Target: 10", twice("I would rather not use tags."));
    llm.inject_for("priming_all_strategies$", "Target: 15", twice("<think>Add them.</think>\n<answer> 5 * 5 - 5 </answer>"));
    llm.inject_for("priming_all_strategies_wrong$", "Target: 24", twice("<think>Slip.</think>\n<answer> 4 * (9 - 3) </answer>"));
    llm.inject_for("priming_backtracking_verification$", "Target: 13", vec![LlmFault::Unavailable]);
    llm.inject_for("priming_backtracking_subgoals$", "Target: 21", vec![LlmFault::Reply("no tags".into())]);
    let cfg = priming_config(tmp.path(), &llm, &tasks, "checked", "asked");
    let out = run_expect(pipeline().arg("prime").arg("--config").arg(&cfg), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("priming: 6 puzzles"), "{err}");
    // `all_strategies_wrong` is checked first: the prompt marker of `all_strategies` is in it too.
    assert!(!err.contains("unknown"), "{err}");

    let root = tmp.path().join("runs/priming/priming");
    let status = statuses_are_as_answered(&root, &llm);
    let sets = sets_are_read_and_scored(&root, &status);
    // A rerun pays for nothing.
    let before = llm.seen().len();
    run_expect(pipeline().arg("-q").arg("prime").arg("--config").arg(&cfg), true);
    assert_eq!(llm.seen().len(), before);

    sql_and_verify_read_the_sets(tmp.path(), &root, &sets);
    the_trainer_primes_on_the_sets(tmp.path(), &root, &sets);
}

type Statuses = Box<dyn Fn(&str) -> BTreeMap<String, u64>>;

/// The manifest's statuses per condition are what the fake server answered; a rejected
/// reply was asked again with the reason. Returns the statuses by condition.
fn statuses_are_as_answered(root: &Path, llm: &FakeLlm) -> Statuses {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("_manifest.json")).unwrap()).unwrap();
    let status = move |c: &str| -> BTreeMap<String, u64> { serde_json::from_value(manifest["statuses"][c].clone()).unwrap() };
    let counts = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();
    assert_eq!(status("all_strategies"), counts(&[("ok", 5), ("wrong_result", 1)]));
    assert_eq!(status("backtracking"), counts(&[("ok", 5), ("unparsed", 1)]));
    assert_eq!(status("all_strategies_wrong"), counts(&[("ok", 5), ("correct_result", 1)]));
    for c in ["backtracking_verification", "backtracking_subgoals", "backtracking_backward"] {
        assert_eq!(status(c), counts(&[("ok", 6)]), "{c}");
    }
    assert_eq!(status("empty_cot"), status("all_strategies"));
    // A rejected reply was asked again once, with the reason (a third message).
    let seen = llm.seen();
    let asked = |task: &str, marker: &str| seen.iter().filter(|s| s.task == task && s.document.contains(marker)).count();
    assert_eq!(asked("priming_backtracking", "Target: 10"), 2);
    assert_eq!(asked("priming_backtracking_subgoals", "Target: 21"), 2);
    assert!(seen.iter().any(|s| s.task == "priming_backtracking_subgoals" && s.messages == 3));

    Box::new(status)
}

/// Every set, read by pyarrow (train and test shards), scored by the study's reward; the
/// controls are the all-strategies puzzles in the same splits. Returns the rows by set.
fn sets_are_read_and_scored(root: &Path, status: &Statuses) -> BTreeMap<String, Vec<serde_json::Value>> {
    let sets = read_sets(root);
    assert_eq!(sets.len(), 8, "{:?}", sets.keys());
    let task_of = |prompt: &str| {
        PUZZLES
            .iter()
            .find(|(t, n)| prompt.contains(&format!("{}, {}, {} exactly once", n[0], n[1], n[2])) && prompt.contains(&format!("value is {t}.")))
            .unwrap()
    };
    let mut by_condition: BTreeMap<&str, BTreeMap<String, (String, u64)>> = BTreeMap::new();
    for (condition, rows) in &sets {
        let expected_rows = status(if condition == "placeholder" { "all_strategies" } else { condition })["ok"];
        assert_eq!(rows.len() as u64, expected_rows, "{condition}");
        for row in rows {
            assert_eq!(row["set"], condition.as_str());
            let (prompt, completion) = (row["prompt"].as_str().unwrap(), row["completion"].as_str().unwrap());
            let (target, nums) = task_of(prompt);
            let task = Task { target: *target, nums: nums.to_vec() };
            let verdict = judge(&format!("{prompt}{completion}"), &task);
            match condition.as_str() {
                "all_strategies_wrong" => assert!(matches!(verdict, Verdict::WrongValue(_)), "{condition}: {completion}: {verdict:?}"),
                _ => assert_eq!(verdict, Verdict::Correct, "{condition}: {completion}"),
            }
            let thoughts = completion.split("</think>").next().unwrap();
            match condition.as_str() {
                "empty_cot" => assert_eq!(thoughts, "\n"),
                "placeholder" => assert!(thoughts.trim_end().len() > 10 && thoughts.trim_end().chars().all(|c| c == '.'), "{completion}"),
                _ => assert!(thoughts.contains(&format!("Condition priming_{condition}.")), "{condition}: {completion}"),
            }
            by_condition
                .entry(condition)
                .or_default()
                .insert(row["doc_id"].as_str().unwrap().to_string(), (row["split"].as_str().unwrap().into(), row["completion_tokens"].as_u64().unwrap()));
        }
    }
    // The controls are the all-strategies puzzles, in the same splits; the placeholder
    // completion is as long as the all-strategies one (up to a token at the seams).
    let all = &by_condition["all_strategies"];
    for control in ["empty_cot", "placeholder"] {
        let c = &by_condition[control];
        assert_eq!(c.keys().collect::<Vec<_>>(), all.keys().collect::<Vec<_>>(), "{control}");
        for (id, (split, tokens)) in c {
            assert_eq!(split, &all[id].0);
            if control == "placeholder" {
                assert!(tokens.abs_diff(all[id].1) <= 2, "{tokens} vs {}", all[id].1);
            }
        }
    }

    sets
}

/// The run's journal and sets under SQL (`corpus-tools`): every journaled request, every
/// condition's rows; `corpus-tools verify` checks every priming shard and names a damaged one.
fn sql_and_verify_read_the_sets(tmp: &Path, root: &Path, sets: &BTreeMap<String, Vec<serde_json::Value>>) {
    let journaled = std::fs::read_to_string(tmp.join("runs/priming/journal/priming.jsonl")).unwrap().lines().count();
    let query = "SELECT (SELECT count(*) FROM priming_requests) AS requests, (SELECT count(*) FROM requests WHERE stage = 'priming') AS tagged, \
                 (SELECT count(DISTINCT \"set\") FROM priming_sets) AS sets, (SELECT count(*) FROM priming_sets WHERE \"set\" = 'backtracking') AS backtracking";
    let out = run_expect(Command::new(binary("corpus-tools")).args(["sql", "--format", "json", "--run"]).arg(tmp.join("runs/priming")).arg(query), true);
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = serde_json::json!([{ "requests": journaled, "tagged": journaled, "sets": 8, "backtracking": sets["backtracking"].len() }]);
    assert_eq!(counts, want);
    // `corpus-tools verify` checks every priming shard against its manifest, and names a damaged one.
    let verify = || Command::new(binary("corpus-tools")).arg("verify").arg("--run").arg(tmp.join("runs/priming")).output().unwrap();
    let ok = verify();
    let report = String::from_utf8_lossy(&ok.stdout).into_owned() + &String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success() && report.contains("priming/backtracking/manifest.json"), "{report}");
    let shard =
        std::fs::read_dir(root.join("backtracking/data")).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "parquet")).unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();
    let damaged = verify();
    let report = String::from_utf8_lossy(&damaged.stdout).into_owned() + &String::from_utf8_lossy(&damaged.stderr);
    assert!(!damaged.status.success() && report.contains(shard.file_name().unwrap().to_str().unwrap()), "{report}");
    bytes[10] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();
}

/// The trainer primes on a set before PPO, and runs the study's recipe: SFT on a set with
/// `trainer pretrain`, then PPO from that run.
fn the_trainer_primes_on_the_sets(tmp: &Path, root: &Path, sets: &BTreeMap<String, Vec<serde_json::Value>>) {
    // The trainer primes on a set (its train split) before PPO.
    let ppo_config = |name: &str, model_extra: &str, prime: &str| -> PathBuf {
        let path = tmp.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[model]\nconfig = \"{}\"\ntokenizer = \"{}\"\n{model_extra}\n[tasks]\neval_tasks = 2\n\n[tasks.generate]\nmin_numbers = 3\nmax_numbers = 3\nmax_number = 12\n\n{prime}\
                 [ppo]\nsteps = 1\nprompts_per_step = 2\nsamples = 2\nmax_response_tokens = 8\nactor_mini_batch_prompts = 2\ncritic_mini_batch = 4\neval_every = 1\nsave_every = 1\n\n[output]\ndir = \"{}\"\n",
                repo("configs/models/tiny-llama3.json").display(),
                llama3_tokenizer().display(),
                tmp.join(name).display()
            ),
        )
        .unwrap();
        path
    };
    let ppo = ppo_config("ppo", "", &format!("[prime]\nsteps = 2\nbatch_size = 2\nlr = 1e-3\nset = \"{}\"\n\n", root.join("backtracking").display()));
    let out = run_expect(Command::new(binary("trainer")).arg("ppo").arg("--config").arg(&ppo), true);
    let err = String::from_utf8_lossy(&out.stderr);
    let train_rows = sets["backtracking"].iter().filter(|r| r["split"] == "train").count();
    assert!(err.contains(&format!("prime: {train_rows} traces from {}", root.join("backtracking").display())), "{err}");
    assert!(err.contains("prime: 2 steps"), "{err}");

    // The study's recipe: SFT on a set with `trainer pretrain`, then PPO from that run
    // (model.weights = the run folder: its newest checkpoint's model).
    let sft = tmp.join("sft.toml");
    std::fs::write(
        &sft,
        format!(
            "[model]\nconfig = \"{}\"\n\n[data]\nset = \"{}\"\nobjective = \"sft\"\nseq_len = 256\n\n\
             [train]\nlr = 1e-3\nbatch_size = 2\nmax_steps = 2\nsave_every = 1\n\n[output]\ndir = \"{}\"\n",
            repo("configs/models/tiny-llama3.json").display(),
            root.join("all_strategies").display(),
            tmp.join("sft").display()
        ),
    )
    .unwrap();
    run_expect(Command::new(binary("trainer")).arg("pretrain").arg("--config").arg(&sft), true);
    let ppo = ppo_config("ppo-from-sft", &format!("weights = \"{}\"\n", tmp.join("sft").display()), "");
    run_expect(Command::new(binary("trainer")).arg("ppo").arg("--config").arg(&ppo), true);
    // The PPO run's frozen reference is its starting actor: the SFT run's last model.
    let sft_model = std::fs::read(tmp.join("sft/checkpoints/step-00000002/model.mpk")).unwrap();
    let reference = std::fs::read(tmp.join("ppo-from-sft/reference.mpk")).unwrap();
    assert!(sft_model == reference, "PPO starts from the SFT run's newest checkpoint");
}
