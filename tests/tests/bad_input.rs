//! Bad input gets one clear error that names the thing and the fix, and loses nothing.

use std::path::Path;

use habits_tests::fixtures::{ShardSpec, owm_shard, write_file};
use habits_tests::procs::{pipeline, run_expect};
use habits_tests::run_config::{local_source, write_config};

fn fails(config: &Path) -> String {
    let out = run_expect(pipeline().arg("sample").arg("--config").arg(config), false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.matches("error:").count(), 1, "exactly one error: {err}");
    err
}

fn good_shards(dir: &Path, n: u64) {
    for i in 0..n {
        let (bytes, _) = owm_shard(&ShardSpec { rows: 30, rows_per_group: 10, mean_chars: 200, seed: i, shared_first_text: None }).unwrap();
        write_file(&dir.join(format!("good-{i}.parquet")), &bytes).unwrap();
    }
}

fn candidate_parts(run: &Path) -> usize {
    let mut n = 0;
    for d in std::fs::read_dir(run.join("work").join("sample")).unwrap().flatten() {
        n += std::fs::read_dir(d.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("cand-")).count();
    }
    n
}

#[test]
fn malformed_toml_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[run]\nname = \"x\n").unwrap();
    let err = fails(&cfg);
    assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
}

#[test]
fn an_unknown_key_is_named_with_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "k", 10, &[local_source("a", tmp.path(), 1.0)], "sizee = 3");
    let err = fails(&cfg);
    assert!(err.contains("sizee") && err.contains("batch_rows"), "{err}");
}

#[test]
fn a_missing_source_folder_says_how_to_make_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "m", 10, &[local_source("demo", &tmp.path().join("nope"), 1.0)], "");
    let err = fails(&cfg);
    assert!(err.contains("nope") && err.contains("make demo-source"), "{err}");
}

#[test]
fn corrupt_parquet_is_named_and_the_good_files_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    good_shards(&data, 2);
    std::fs::write(data.join("broken.parquet"), b"PAR1 this is not parquet at all PAR1").unwrap();
    let cfg = write_config(tmp.path(), "c", 10, &[local_source("owm", &data, 1.0)], "threads = 1");
    let err = fails(&cfg);
    assert!(err.contains("broken.parquet") && err.contains("not a readable parquet file") && err.contains("delete it"), "{err}");
    assert!(err.contains("rerun to retry only these"), "{err}");
    assert_eq!(candidate_parts(&tmp.path().join("runs").join("c")), 2, "the good files' work is kept");
}

#[test]
fn a_source_without_the_text_column_is_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A parquet file whose text lives in `body`.
    let script = "import sys, pyarrow as pa, pyarrow.parquet as pq\npq.write_table(pa.table({'url': ['u'], 'body': ['t']}), sys.argv[1])";
    habits_tests::procs::python(script, &[data.join("other.parquet").to_str().unwrap()], &[]);
    let cfg = write_config(tmp.path(), "t", 10, &[local_source("owm", &data, 1.0)], "");
    let err = fails(&cfg);
    assert!(err.contains("other.parquet") && err.contains("no column `text`") && err.contains("body") && err.contains("text_column"), "{err}");
}

#[test]
fn a_bad_jsonl_line_is_named_by_number() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("docs.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \"broken\"\n").unwrap();
    let cfg = write_config(tmp.path(), "j", 10, &[local_source("j", &data, 1.0)], "");
    let err = fails(&cfg);
    assert!(err.contains("docs.jsonl:2"), "{err}");
}
