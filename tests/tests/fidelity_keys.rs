//! docs/FIDELITY.md names, for every deviation from the study, the config key that restores
//! the study's choice. The `section.key = value` assignments of a row's last column are set
//! together in a minimal config of the row's kind and loaded by the program's own loader
//! (unknown keys, wrong types and settings that need each other are errors there), so that
//! a renamed or removed key fails here.

use std::path::Path;

/// The rows of the document's tables: (config kind, the key assignments of the last column).
fn rows(doc: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| what") && !l.starts_with("| ---")) {
        // Cells are split on `|` not escaped as `\|`.
        let cells: Vec<String> = line.replace("\\|", "\u{0}").split('|').map(|c| c.replace('\u{0}', "|").trim().to_string()).collect();
        let (kind, keys) = (&cells[cells.len() - 3], &cells[cells.len() - 2]);
        let assignments =
            keys.split("; ").filter_map(|k| k.strip_prefix('`').and_then(|k| k.strip_suffix('`'))).filter(|k| k.contains(" = ")).map(str::to_string).collect();
        out.push((kind.clone(), assignments));
    }
    out
}

/// `base` (TOML) with each `section[.table...].key = value` of `assignments` set, written to
/// `dir/name`.
fn with_keys(dir: &Path, name: &str, base: &str, assignments: &[String]) -> std::path::PathBuf {
    let mut table: toml::Table = base.parse().unwrap();
    for assignment in assignments {
        let (path, value) = assignment.split_once(" = ").unwrap();
        let parts: Vec<&str> = path.split('.').collect();
        assert!(parts.len() >= 2, "`{assignment}` names no section");
        let value: toml::Table = format!("v = {value}").parse().unwrap_or_else(|e| panic!("`{assignment}`: the value is not TOML: {e}"));
        let mut at = &mut table;
        for part in &parts[..parts.len() - 1] {
            at = at.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut().unwrap();
        }
        at.insert(parts[parts.len() - 1].to_string(), value["v"].clone());
    }
    let file = dir.join(name);
    std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    file
}

#[test]
fn every_key_that_restores_the_studys_choice_exists() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/FIDELITY.md")).unwrap();
    let rows = rows(&doc);
    assert!(rows.len() >= 30, "the tables were read: {} rows", rows.len());
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (kind, assignments) in rows.into_iter().filter(|(_, a)| !a.is_empty()) {
        let a = &assignments;
        let result = match kind.as_str() {
            "pipeline" => {
                // The paper profile's source names, for keys that name a source.
                let base = "[run]\nname = \"fidelity\"\n[[sources]]\nname = \"open-web-math\"\nkind = \"hub\"\nrepo = \"open-web-math/open-web-math\"\ninclude = [\"data/train-*.parquet\"]\n";
                pipeline::config::LoadedConfig::load(&with_keys(dir.path(), "run.toml", base, a)).map(|_| ())
            }
            "trainer ppo" => {
                let base = "[model]\nconfig = \"model\"\n[output]\ndir = \"out\"\n";
                trainer::ppo::config::PpoConfig::load(&with_keys(dir.path(), "ppo.toml", base, a)).map(|_| ())
            }
            "trainer pretrain" => {
                let base = "[model]\nconfig = \"model\"\n[data]\nset = \"set\"\n[output]\ndir = \"out\"\n";
                trainer::train::config::PretrainConfig::load(&with_keys(dir.path(), "pretrain.toml", base, a)).map(|_| ())
            }
            other => panic!("`{a:?}` are in a row of config kind {other:?}: use pipeline, trainer ppo or trainer pretrain"),
        };
        if let Err(e) = result {
            panic!("docs/FIDELITY.md: `{a:?}` ({kind}) are not accepted together: {e:#}");
        }
        checked += a.len();
    }
    assert!(checked >= 20, "{checked} keys checked");
}
