//! corpus-tools end to end over a real run (two sources, classified and rewritten by the
//! fake LLM with injected failures, built into both sets): the same queries through DuckDB
//! give the same answers; every output format opens in its reader; SQL errors list the
//! tables; the interactive prompt reads statements; `verify` passes on the run and fails on
//! a flipped byte, a missing shard and a row without lineage; the report's plots open as
//! images; `show` tells a document's story; every export opens in its reader.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use habits_tests::fixtures::{TextGen, behavior_words};
use habits_tests::llm_server::{FakeLlm, LlmFault};
use habits_tests::procs::{binary, pipeline, python, run_expect, target_dir};
use habits_tests::run_config::{build_config, local_source};
use serde_json::Value;

const DOCS_PER_SOURCE: usize = 90;

fn corpus_tools() -> Command {
    Command::new(binary("corpus-tools"))
}

/// Documents with a spread of behaviors: counts of the fake model's words (instead, check,
/// first, need) vary, some lack a question or an answer, some get failed answers.
fn write_source(dir: &Path, tag: &str, seed: u64) {
    let mut text = TextGen::new(seed);
    let lines: Vec<String> = (0..DOCS_PER_SOURCE)
        .map(|i| {
            let marker = match i % 23 {
                3 => "NOTAG ",
                7 => "BADREWRITE ",
                11 => "SRVFAIL ",
                _ => "",
            };
            let question = if i % 9 == 4 { "." } else { "?" };
            let answer = if i % 11 == 5 { "" } else { " Answer: 42." };
            let body = format!("{marker}{tag}{i}{question} {} {}{answer}", behavior_words(i), text.plain(150 + (i * 7919) % 1800));
            serde_json::json!({ "text": body }).to_string()
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{tag}.jsonl")), lines.join("\n") + "\n").unwrap();
}

/// The shared run, built once per test binary under the target folder.
fn fixture() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let root = target_dir().join("corpus-tools-fixture");
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        write_source(&root.join("src"), "a", 3);
        write_source(&root.join("more"), "b", 4);
        let llm = FakeLlm::start();
        llm.inject_for("backtracking", "NOTAG", vec![LlmFault::NoTag; 64]);
        llm.inject_for("rewrite", "BADREWRITE", vec![LlmFault::Reply("no tags at all".into()); 64]);
        llm.inject_for("verification", "SRVFAIL", vec![LlmFault::ServerError; 64]);
        let cfg = build_config(&root, "ct", DOCS_PER_SOURCE * 2, &llm, "", "budget_tokens = 9000\nshard_rows = 12\n");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push('\n');
        text.push_str(&local_source("more", &root.join("more"), 1.0));
        std::fs::write(&cfg, text + "\n[select]\nrich = \"backtracking >= 2\"\ncontrol = \"backtracking <= 1\"\n").unwrap();
        run_expect(pipeline().arg("-q").arg("run").arg("--config").arg(&cfg), true);
        // `llm` stops here: the run is complete.
        drop(llm);
        root.join("runs/ct")
    })
}

/// A private copy of the run for tests that damage it.
fn copy_of_run(tmp: &Path) -> PathBuf {
    std::fs::create_dir_all(tmp).unwrap();
    let dest = tmp.join("ct");
    let status = Command::new("cp").arg("-r").arg(fixture()).arg(&dest).status().unwrap();
    assert!(status.success());
    dest
}

fn sql_json(run: &Path, query: &str) -> Vec<Value> {
    let out = run_expect(corpus_tools().args(["sql", "--format", "json", "--run"]).arg(run).arg(query), true);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    v.as_array().unwrap().clone()
}

/// Queries beyond the report's: joins, group-bys, window functions, subqueries, filters on lineage.
const QUERIES: [&str; 13] = [
    "SELECT d.source, count(*) AS n FROM docs d JOIN labels l ON d.doc_id = l.doc_id WHERE l.backtracking > 0 GROUP BY d.source ORDER BY d.source",
    "SELECT doc_id, source, n_chars, rank() OVER (PARTITION BY source ORDER BY n_chars DESC, doc_id) AS r FROM docs ORDER BY source, r LIMIT 25",
    "SELECT x.\"set\", x.split, x.file, count(*) AS n, sum(x.completion_tokens) AS t FROM sets x JOIN docs d ON x.doc_id = d.doc_id AND x.\"row\" = d.\"row\" WHERE d.file LIKE '%b.jsonl' GROUP BY x.\"set\", x.split, x.file ORDER BY 1, 2, 3",
    "SELECT task, status, count(*) AS n, avg(latency_ms) AS latency FROM requests WHERE stage = 'classify' GROUP BY task, status ORDER BY task, status",
    "SELECT count(*) AS n FROM selection s WHERE NOT EXISTS (SELECT 1 FROM rewrites r WHERE r.doc_id = s.doc_id AND r.status = 'ok')",
    "SELECT doc_id, \"row\", lag(\"row\") OVER (PARTITION BY file ORDER BY \"row\") AS previous FROM docs ORDER BY file, \"row\" LIMIT 30",
    "SELECT doc_id, length(text) AS chars, n_chars FROM docs WHERE length(text) <> n_chars ORDER BY doc_id",
    "SELECT \"set\", count(*) AS n FROM rewrites WHERE doc_id IN (SELECT doc_id FROM labels WHERE verification >= 1) GROUP BY \"set\" ORDER BY 1",
    "WITH t AS (SELECT \"set\", doc_id, completion_tokens FROM sets) SELECT \"set\", doc_id, sum(completion_tokens) OVER (PARTITION BY \"set\" ORDER BY doc_id ROWS UNBOUNDED PRECEDING) AS running FROM t ORDER BY \"set\", doc_id",
    "SELECT backtracking, count(*) AS n FROM labels GROUP BY backtracking HAVING count(*) > 1 ORDER BY backtracking NULLS FIRST",
    "SELECT coalesce(r.status, 'none') AS status, count(*) AS n FROM selection s LEFT JOIN rewrites r ON s.doc_id = r.doc_id GROUP BY coalesce(r.status, 'none') ORDER BY 1",
    "SELECT * FROM (SELECT \"set\", doc_id, completion_tokens, row_number() OVER (PARTITION BY \"set\" ORDER BY completion_tokens DESC, doc_id) AS rn FROM sets) q WHERE rn <= 3 ORDER BY \"set\", rn",
    "SELECT l.has_problem, l.has_solution, count(*) AS n, sum(CASE WHEN s.doc_id IS NULL THEN 0 ELSE 1 END) AS selected FROM labels l LEFT JOIN selection s ON l.doc_id = s.doc_id GROUP BY l.has_problem, l.has_solution ORDER BY 1 NULLS FIRST, 2 NULLS FIRST",
];

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

#[test]
fn duckdb_gives_the_same_answers() {
    let run = fixture();
    let report_queries = run_expect(corpus_tools().args(["stats", "--print-sql", "--run"]).arg(run), true);
    let report_queries: Vec<Value> = serde_json::from_slice(&report_queries.stdout).unwrap();
    assert!(report_queries.len() >= 10, "the report's queries: {report_queries:?}");
    let mut all: Vec<(String, String)> =
        report_queries.iter().map(|q| (q["name"].as_str().unwrap().to_string(), q["sql"].as_str().unwrap().to_string())).collect();
    all.extend(QUERIES.iter().enumerate().map(|(i, q)| (format!("q{i}"), q.to_string())));
    let list = tempfile::NamedTempFile::new().unwrap();
    let as_json: Vec<Value> = all.iter().map(|(n, q)| serde_json::json!({"name": n, "sql": q})).collect();
    std::fs::write(list.path(), serde_json::to_vec(&as_json).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/duckdb_queries.py");
    let duck: Value =
        serde_json::from_str(&python(&std::fs::read_to_string(script).unwrap(), &[run.to_str().unwrap(), list.path().to_str().unwrap()], &[])).unwrap();
    let mut nonempty = 0;
    for (name, query) in &all {
        let ours = sql_json(run, query);
        let theirs = duck[name].as_array().unwrap_or_else(|| panic!("duckdb has no result for {name}: {}", duck[name]));
        assert_eq!(ours.len(), theirs.len(), "{name}: row counts differ\n{query}\nours {ours:?}\nduckdb {theirs:?}");
        for (a, b) in ours.iter().zip(theirs) {
            let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
            assert_eq!(a.keys().collect::<Vec<_>>().len(), b.len(), "{name}: columns differ: {a:?} vs {b:?}");
            for (k, v) in a {
                let w = b.get(k).unwrap_or_else(|| panic!("{name}: duckdb has no column {k}: {b:?}"));
                assert!(same_value(v, w), "{name}: {k} differs: ours {v}, duckdb {w}\n{query}");
            }
        }
        nonempty += usize::from(!ours.is_empty());
    }
    assert!(nonempty >= all.len() - 2, "most queries return rows ({nonempty} of {})", all.len());
}

#[test]
fn every_output_format_opens_in_its_reader_and_errors_list_the_tables() {
    let run = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT source, count(*) AS n, min(doc_id) AS first_id FROM docs GROUP BY source ORDER BY source";
    let table = run_expect(corpus_tools().args(["sql", "--run"]).arg(run).arg(q), true);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.starts_with(" source | n  | first_id") && table.contains(" docs   | 90 |") && table.contains(" more   | 90 |") && table.ends_with("(2 rows)\n"),
        "{table}"
    );
    for (format, file) in [("csv", "r.csv"), ("jsonl", "r.jsonl"), ("parquet", "r.parquet"), ("json", "r.json")] {
        let path = tmp.path().join(file);
        run_expect(corpus_tools().args(["sql", "--format", format, "--out"]).arg(&path).arg("--run").arg(run).arg(q), true);
        let read = python(
            "import sys, json, csv, pyarrow.parquet as pq\np = sys.argv[1]\nif p.endswith('.csv'): rows = [dict(r, n=int(r['n'])) for r in csv.DictReader(open(p))]\nelif p.endswith('.jsonl'): rows = [json.loads(l) for l in open(p)]\nelif p.endswith('.json'): rows = json.load(open(p))\nelse: rows = pq.read_table(p).to_pylist()\nprint(json.dumps(rows))",
            &[path.to_str().unwrap()],
            &[],
        );
        let rows: Vec<Value> = serde_json::from_str(read.trim()).unwrap();
        assert_eq!(rows.len(), 2, "{format}");
        assert_eq!((rows[0]["source"].as_str(), rows[0]["n"].as_u64()), (Some("docs"), Some(90)), "{format}: {rows:?}");
    }
    let out = run_expect(corpus_tools().args(["sql", "--run"]).arg(run).arg("SELECT nope FROM docs"), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("docs (docs/*.parquet): doc_id string") && err.contains("requests (journal/*.jsonl)"), "{err}");
    let out = run_expect(corpus_tools().args(["sql", "--run", "/no/such/run", "SELECT 1"]), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run at /no/such/run"));
    let out = run_expect(corpus_tools().args(["sql", "--format", "parquet", "--run"]).arg(run).arg(q), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

#[test]
fn the_prompt_reads_statements_over_several_lines() {
    let run = fixture();
    let home = tempfile::tempdir().unwrap();
    let mut child = corpus_tools()
        .args(["sql", "--run"])
        .arg(run)
        .env("HABITS_CACHE", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"\\d\nSELECT count(*) AS n\n  FROM docs;\nSELECT broken FROM;\n\\f csv\nSELECT 'x' AS y;\n\\q\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("labels (labels/*.parquet):"), "\\d lists the tables: {stdout}");
    assert!(stdout.contains(" 180\n"), "the two-line statement ran: {stdout}");
    assert!(stderr.contains("error:"), "the broken statement is reported: {stderr}");
    assert!(stdout.contains("y\nx\n"), "\\f csv switched the format: {stdout}");
    let history = std::fs::read_to_string(home.path().join("corpus-tools/history")).unwrap();
    assert!(history.contains("FROM docs;"), "{history}");
}

#[test]
fn a_torn_journal_line_is_left_out_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    let journal = run.join("journal/classify.jsonl");
    let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
    let mut f = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    use std::io::Write;
    f.write_all(b"{\"key\": \"torn").unwrap();
    let out = run_expect(corpus_tools().args(["sql", "--format", "csv", "--run"]).arg(&run).arg("SELECT count(*) AS n FROM classify_requests"), true);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("n\n{lines}\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the last line is incomplete"));
}

/// The first file in `dir` (by name) with this prefix and suffix.
fn first_file(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix) && p.to_string_lossy().ends_with(suffix))
        .collect();
    names.sort();
    names.into_iter().next().unwrap_or_else(|| panic!("no {prefix}*{suffix} in {}", dir.display()))
}

fn verify(run: &Path, ok: bool) -> String {
    let out = run_expect(corpus_tools().arg("verify").arg("--run").arg(run), ok);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verify_passes_on_the_run_and_fails_on_damage() {
    let report = verify(fixture(), true);
    assert!(report.contains("verified:") && report.contains("lineage: set rows -> docs") && !report.contains("FAILED"), "{report}");

    // A flipped byte in a shard.
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    let shard = first_file(&run.join("sets/rich/data"), "train-", ".parquet");
    let mut bytes = std::fs::read(&shard).unwrap_or_else(|e| panic!("{}: {e}", shard.display()));
    bytes[100] ^= 0x01;
    std::fs::write(&shard, bytes).unwrap();
    let report = verify(&run, false);
    let name = shard.file_name().unwrap().to_string_lossy().into_owned();
    assert!(report.contains("FAILED  sets/rich/manifest.json") && report.contains(&format!("{name}: sha256")), "{report}");

    // A missing shard.
    let run = copy_of_run(&tmp.path().join("2"));
    let bin = first_file(&run.join("sets/control/megatron"), "train-", ".bin");
    std::fs::remove_file(&bin).unwrap();
    let report = verify(&run, false);
    assert!(report.contains(&format!("megatron/{}: missing", bin.file_name().unwrap().to_string_lossy())), "{report}");

    // A row whose lineage points nowhere: the shard is rewritten with a changed `row` and
    // the manifest updated, so only lineage can catch it.
    let run = copy_of_run(&tmp.path().join("3"));
    let shard = first_file(&run.join("sets/control/data"), "train-", ".parquet");
    python(
        "import sys, json, hashlib, os, pyarrow as pa, pyarrow.parquet as pq\n\
         shard, manifest = sys.argv[1], sys.argv[2]\n\
         t = pq.read_table(shard)\n\
         rows = t.column('row').to_pylist(); rows[0] = rows[0] + 100000\n\
         t = t.set_column(t.schema.get_field_index('row'), pa.field('row', pa.uint64(), nullable=False), pa.array(rows, pa.uint64()))\n\
         pq.write_table(t, shard)\n\
         m = json.load(open(manifest))\n\
         for f in m['files']:\n\
         \x20   if shard.endswith(f['path']):\n\
         \x20       f['bytes'] = os.path.getsize(shard); f['sha256'] = hashlib.sha256(open(shard, 'rb').read()).hexdigest()\n\
         json.dump(m, open(manifest, 'w'))\n",
        &[shard.to_str().unwrap(), run.join("sets/control/manifest.json").to_str().unwrap()],
        &[],
    );
    let report = verify(&run, false);
    assert!(report.contains("FAILED  lineage: set rows -> docs") && report.contains("1 rows without it"), "{report}");
    assert!(report.contains("ok      sets/control/manifest.json"), "the checksums themselves pass: {report}");
}

#[test]
fn the_report_has_the_studys_statistics_and_its_plots_open_as_images() {
    let run = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    run_expect(corpus_tools().args(["stats", "--run"]).arg(run).arg("--out").arg(&out), true);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "## Behavior prevalence per source",
        "## Count distributions",
        "## Problem and solution",
        "## Parse failures per prompt",
        "## LLM usage",
        "## The two sets",
        "### Composition by source",
    ] {
        assert!(md.contains(section), "{section} missing:\n{md}");
    }
    assert!(md.contains("| backtracking | no_tag | 8 |"), "the injected parse failures show: {md}");
    assert!(md.contains("| classify | server_error | 8 | 8 |"), "the injected server errors show as failed requests: {md}");
    let images: Vec<String> =
        md.lines().filter_map(|l| l.strip_prefix("![").and_then(|l| l.split("](").nth(1)).map(|f| f.trim_end_matches(')').to_string())).collect();
    assert!(images.len() >= 6, "{images:?}");
    let sizes = python(
        "import sys\nfrom PIL import Image\nfor p in sys.argv[1:]:\n    im = Image.open(p); im.verify(); im = Image.open(p); im.load()\n    colors = len(set(im.convert('RGB').getdata()))\n    print(im.size[0], im.size[1], colors)",
        &images.iter().map(|f| out.join(f).to_str().unwrap().to_string()).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    for line in sizes.lines() {
        let v: Vec<u32> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!((v[0], v[1]), (1000, 560));
        assert!(v[2] > 20, "a plot with text, axes and bars has many colours: {line}");
    }

    // Comparing two runs, as SVG.
    let svg = tmp.path().join("svg");
    run_expect(corpus_tools().args(["stats", "--image", "svg", "--run"]).arg(run).arg("--compare").arg(run).arg("--out").arg(&svg), true);
    let md = std::fs::read_to_string(svg.join("report.md")).unwrap();
    assert!(md.contains("| A ct |") && md.contains("| B ct |"), "{md}");
    let parsed = python(
        "import sys, xml.etree.ElementTree as ET\nr = ET.parse(sys.argv[1]).getroot()\nprint(r.tag.endswith('svg'), sum(1 for e in r.iter() if e.tag.endswith('text')))",
        &[svg.join("prevalence.svg").to_str().unwrap()],
        &[],
    );
    let mut parts = parsed.split_whitespace();
    assert_eq!(parts.next(), Some("True"));
    assert!(parts.next().unwrap().parse::<u32>().unwrap() > 5, "axis labels and legend are text");
}

#[test]
fn show_tells_a_documents_story() {
    let run = fixture();
    let rows = sql_json(run, "SELECT x.doc_id, x.\"set\", d.text FROM sets x JOIN docs d ON x.doc_id = d.doc_id ORDER BY x.doc_id LIMIT 1");
    let id = rows[0]["doc_id"].as_str().unwrap();
    let out = run_expect(corpus_tools().arg("show").arg(&id[..10]).arg("--run").arg(run), true);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("# document {id}")), "{text}");
    assert!(text.contains("### backtracking:") && text.contains("<count>"), "labels with raw answers: {text}");
    assert!(text.contains(&format!("selected for the {} set", rows[0]["set"].as_str().unwrap())), "{text}");
    assert!(text.contains("### question") && text.contains("### thoughts"), "{text}");
    assert!(text.contains(&format!("sets/{}/data/", rows[0]["set"].as_str().unwrap())), "{text}");
    assert!(text.contains("classify backtracking ok: 1 request(s)"), "{text}");
    let out = run_expect(corpus_tools().args(["show", "ffffffffff", "--run"]).arg(run), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no document ffffffffff"));
    let out = run_expect(corpus_tools().args(["show", "x'; DROP", "--run"]).arg(run), false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a document id"));
}

#[test]
fn exports_open_in_other_readers_and_match_their_manifests() {
    let run = fixture();
    let tmp = tempfile::tempdir().unwrap();
    for format in ["parquet", "jsonl", "megatron", "hf"] {
        let out = tmp.path().join(format);
        run_expect(corpus_tools().args(["export", "--format", format, "--run"]).arg(run).arg("--out").arg(&out), true);
        let again = run_expect(corpus_tools().args(["export", "--format", format, "--run"]).arg(run).arg("--out").arg(&out), false);
        assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "no export over an existing one");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_exports.py");
    let cache = tempfile::tempdir().unwrap();
    let read = python(
        &std::fs::read_to_string(script).unwrap(),
        &[tmp.path().to_str().unwrap(), run.to_str().unwrap()],
        &[
            ("HF_DATASETS_OFFLINE", "1"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_DATASETS_CACHE", cache.path().to_str().unwrap()),
            ("HF_HOME", cache.path().to_str().unwrap()),
        ],
    );
    let read: Value = serde_json::from_str(read.lines().last().unwrap()).unwrap();
    let expected = sql_json(run, "SELECT \"set\", split, count(*) AS n FROM sets GROUP BY \"set\", split ORDER BY 1, 2");
    for row in expected {
        let (set, split, n) = (row["set"].as_str().unwrap(), row["split"].as_str().unwrap(), row["n"].as_u64().unwrap());
        for format in ["parquet", "jsonl", "megatron", "hf"] {
            assert_eq!(read[format][set][split].as_u64(), Some(n), "{format} {set} {split}: {read}");
        }
    }
    assert_eq!(read["checksums_ok"], true, "{read}");
    assert_eq!(read["text_is_prompt_plus_completion"], true, "{read}");
}

#[test]
fn a_manifest_path_that_leaves_its_folder_is_refused_by_export_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(&tmp.path().join("copy"));
    let victim = tmp.path().join("victim.bin");
    std::fs::write(&victim, b"the user's own file").unwrap();
    let manifest_path = run.join("sets/rich/manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let climbing = "../../../../victim.bin";
    let file = manifest["files"].as_array_mut().unwrap().iter_mut().find(|f| f["format"].as_str().unwrap().starts_with("megatron")).unwrap();
    file["path"] = Value::from(climbing);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let failed = run_expect(corpus_tools().args(["export", "--format", "megatron", "--run"]).arg(&run).arg("--out").arg(&out), false);
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains(&format!("{climbing:?}")) && err.contains("cannot be used"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"the user's own file");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "nothing exported");
    let checked = run_expect(corpus_tools().arg("verify").arg("--run").arg(&run), false);
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(said.contains("cannot be used"), "verify names the bad entry: {said}");
}
