//! The lineage checks, as SQL over the catalog: each query returns the `doc_id`s that break
//! a link (labels -> docs, selection -> labels, rewrites -> selection, set rows -> docs with
//! the same source/revision/file/row, -> selection in the same set, -> an `ok` rewrite),
//! plus uniqueness of documents. A check runs when its tables exist.

use anyhow::Result;

use super::Check;
use crate::catalog::Catalog;

/// (check, tables it needs, query returning the offending doc_ids).
const LINKS: [(&str, &[&str], &str); 8] = [
    ("docs: every doc_id once", &["docs"], "SELECT doc_id FROM docs GROUP BY doc_id HAVING count(*) > 1"),
    ("labels -> docs", &["labels", "docs"], "SELECT l.doc_id FROM labels l LEFT JOIN docs d ON l.doc_id = d.doc_id WHERE d.doc_id IS NULL"),
    ("selection -> labels", &["selection", "labels"], "SELECT s.doc_id FROM selection s LEFT JOIN labels l ON s.doc_id = l.doc_id WHERE l.doc_id IS NULL"),
    (
        "rewrites -> selection (same set)",
        &["rewrites", "selection"],
        "SELECT r.doc_id FROM rewrites r LEFT JOIN selection s ON r.doc_id = s.doc_id AND r.\"set\" = s.\"set\" WHERE s.doc_id IS NULL",
    ),
    (
        "set rows -> docs (same source, revision, file, row)",
        &["sets", "docs"],
        "SELECT x.doc_id FROM sets x LEFT JOIN docs d ON x.doc_id = d.doc_id AND x.source = d.source AND x.revision = d.revision AND x.file = d.file AND x.\"row\" = d.\"row\" WHERE d.doc_id IS NULL",
    ),
    (
        "set rows -> selection (same set)",
        &["sets", "selection"],
        "SELECT x.doc_id FROM sets x LEFT JOIN selection s ON x.doc_id = s.doc_id AND x.\"set\" = s.\"set\" WHERE s.doc_id IS NULL",
    ),
    (
        "set rows -> an ok rewrite (same set)",
        &["sets", "rewrites"],
        "SELECT x.doc_id FROM sets x LEFT JOIN rewrites r ON x.doc_id = r.doc_id AND x.\"set\" = r.\"set\" AND r.status = 'ok' WHERE r.doc_id IS NULL",
    ),
    ("sets: every document in one set and one split, once", &["sets"], "SELECT doc_id FROM sets GROUP BY doc_id HAVING count(*) > 1"),
];

pub async fn check(catalog: &Catalog) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (name, tables, query) in LINKS {
        if !tables.iter().all(|t| catalog.has(t)) {
            continue;
        }
        let mut c = Check::new(format!("lineage: {name}"));
        let count = catalog.rows(&format!("SELECT count(*) AS n FROM ({query}) q")).await?;
        let n = count.first().and_then(|r| r.get("n")).and_then(|v| v.as_u64()).unwrap_or(0);
        if n > 0 {
            let examples = catalog.rows(&format!("SELECT doc_id FROM ({query}) q ORDER BY doc_id LIMIT 5")).await?;
            let ids: Vec<String> = examples.iter().filter_map(|r| r.get("doc_id").and_then(|v| v.as_str()).map(str::to_string)).collect();
            c.fail(format!("{n} rows without it, e.g. doc_id {}", ids.join(", ")));
        }
        checks.push(c);
    }
    Ok(checks)
}
