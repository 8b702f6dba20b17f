//! The request journal: one JSON line per finished LLM request, appended as it completes
//! (one `write` per line, synced every second), keyed by everything that decides the
//! answer: model, prompt hash, sampling parameters and the document's hash. A crash or
//! `kill -9` loses only requests in flight; a torn last line (cut on any byte, inside a
//! multi-byte character too) is dropped on open; an append that fails (a full disk) cuts
//! the file back to where it was; a rerun sends only what is missing. Readers:
//! `pipeline`, DuckDB/DataFusion (`read_json`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub use run_contract::Record;

/// The key of a request: same inputs, same key, on any machine.
pub fn request_key(model: &str, prompt_hash: &str, sampling_json: &str, document_hash: &str) -> String {
    let mut h = Sha256::new();
    for part in [model, prompt_hash, sampling_json, document_hash] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// An open journal file.
pub struct Journal {
    path: PathBuf,
    file: Mutex<OpenFile>,
}

/// The file, its length after the last complete record, and when it was last synced.
struct OpenFile {
    file: File,
    len: u64,
    last_sync: Instant,
}

impl Journal {
    /// Opens (or creates) the journal; returns it with the last record of every key.
    pub fn open(path: &Path) -> Result<(Self, HashMap<String, Record>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let (records, good_len) = read_records(path)?;
        let file = OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let on_disk = file.metadata()?.len();
        if on_disk > good_len {
            tracing::warn!("{}: dropping {} bytes after the last complete record (an interrupted write)", path.display(), on_disk - good_len);
            file.set_len(good_len).with_context(|| format!("cannot cut the torn end of {}", path.display()))?;
        }
        Ok((Journal { path: path.to_path_buf(), file: Mutex::new(OpenFile { file, len: good_len, last_sync: Instant::now() }) }, records))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record in one write; syncs at most once a second.
    pub fn append(&self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut open = self.file.lock().expect("journal lock");
        if let Err(e) = open.file.write_all(&line) {
            // Part of the line may be on disk: cut it away so that the file ends on a
            // complete record (a later append, after space was freed, stays readable).
            let cut = open.file.set_len(open.len);
            let e = anyhow::Error::new(e).context(format!("cannot append to {}", self.path.display()));
            return Err(match cut {
                Ok(()) => e,
                Err(c) => e.context(format!("and cannot cut the partial line ({c}); the next open drops it")),
            });
        }
        open.len += line.len() as u64;
        if open.last_sync.elapsed() >= Duration::from_secs(1) {
            open.file.sync_data()?;
            open.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Syncs what was written.
    pub fn sync(&self) -> Result<()> {
        self.file.lock().expect("journal lock").file.sync_data()?;
        Ok(())
    }
}

/// Every complete record of the file at `path` (the last one of each key) and the length
/// of the prefix they fill. A last line without its newline, or one that is not a record
/// (cut inside a character or a value), is a torn write and left out; a bad line with
/// lines after it is an error that changes nothing.
fn read_records(path: &Path) -> Result<(HashMap<String, Record>, u64)> {
    let mut records = HashMap::new();
    let mut good_len = 0u64;
    let Ok(f) = File::open(path) else { return Ok((records, 0)) };
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).with_context(|| format!("cannot read {}", path.display()))?;
        number += 1;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // the end, or a torn last line
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => {
                records.insert(r.key.clone(), r);
                good_len += n as u64;
            }
            Err(e) => {
                // Only the last line may be torn; a bad line with records after it is not
                // ours to cut away.
                let mut rest = Vec::new();
                reader.read_until(b'\n', &mut rest).ok();
                if !rest.is_empty() {
                    anyhow::bail!(
                        "{}:{number} is not a journal record ({e}) and more records follow; move the file aside or fix that line, nothing was changed",
                        path.display()
                    );
                }
                break;
            }
        }
    }
    Ok((records, good_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, status: &str) -> Record {
        Record {
            key: key.into(),
            doc_id: "d".into(),
            task: "t".into(),
            prompt_hash: "p".into(),
            model: "m".into(),
            status: status.into(),
            content: Some("<count>1</count>".into()),
            finish_reason: None,
            failure: None,
            reason: None,
            retry_on_rerun: false,
            prompt_tokens: 1,
            completion_tokens: 2,
            latency_ms: 3,
            endpoint: "e".into(),
            attempts: 1,
            finished_at: 0,
        }
    }

    #[test]
    fn survives_a_torn_last_line_and_keeps_the_last_record_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        {
            let (j, old) = Journal::open(&path).unwrap();
            assert!(old.is_empty());
            j.append(&rec("a", "failed")).unwrap();
            j.append(&rec("a", "ok")).unwrap();
            j.append(&rec("b", "ok")).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"key\": \"c\", \"sta");
        std::fs::write(&path, &bytes).unwrap();
        let (j, old) = Journal::open(&path).unwrap();
        assert_eq!(old.len(), 2);
        assert_eq!(old["a"].status, "ok");
        j.append(&rec("c", "ok")).unwrap();
        drop(j);
        let (_, again) = Journal::open(&path).unwrap();
        assert_eq!(again.len(), 3, "the torn line was cut before appending");
    }

    #[test]
    fn a_line_torn_inside_a_multi_byte_character_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let good = serde_json::to_string(&rec("a", "ok")).unwrap();
        let mut torn = serde_json::to_string(&Record { content: Some("x ≤ ∑ é".into()), ..rec("b", "ok") }).unwrap().into_bytes();
        let cut = torn.iter().position(|&b| b == 0xe2).unwrap() + 1; // inside '≤'
        torn.truncate(cut);
        let mut bytes = format!("{good}\n").into_bytes();
        bytes.extend_from_slice(&torn);
        std::fs::write(&path, &bytes).unwrap();
        let (j, old) = Journal::open(&path).unwrap();
        assert_eq!(old.len(), 1);
        j.append(&rec("b", "ok")).unwrap();
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1.len(), 2);
        assert!(std::fs::read_to_string(&path).is_ok(), "the torn bytes were cut");
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_not_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let good = serde_json::to_string(&rec("a", "ok")).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = Journal::open(&path).err().unwrap().to_string();
        assert!(err.contains("j.jsonl:2"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3, "nothing was cut");
    }

    #[test]
    fn keys_depend_on_every_part() {
        let k = request_key("m", "p", "s", "d");
        assert_eq!(k.len(), 32);
        assert_ne!(k, request_key("m2", "p", "s", "d"));
        assert_ne!(k, request_key("m", "p", "s", "d2"));
        assert_ne!(request_key("ab", "c", "s", "d"), request_key("a", "bc", "s", "d"));
    }
}
