//! Include patterns for repo files, with the hub tools' semantics (`fnmatch`: `*` also
//! matches `/`), and the literal folder each pattern lives in (to list only that folder).

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A compiled set of include patterns; empty means "every file".
#[derive(Clone, Debug)]
pub struct Includes {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Includes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p).literal_separator(false).build().with_context(|| format!("include pattern `{p}` is not a valid glob"))?;
            b.add(glob);
        }
        Ok(Includes { patterns: patterns.to_vec(), set: b.build()? })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.patterns.is_empty() || self.set.is_match(path)
    }

    /// The folders worth listing: the literal leading folders of each pattern (`""` is the
    /// repo root), with folders inside other listed folders dropped.
    pub fn list_roots(&self) -> Vec<String> {
        let mut roots: Vec<String> = if self.patterns.is_empty() { vec![String::new()] } else { self.patterns.iter().map(|p| literal_folder(p)).collect() };
        roots.sort();
        roots.dedup();
        let all = roots.clone();
        roots.retain(|r| !all.iter().any(|o| o != r && (o.is_empty() || r.starts_with(&format!("{o}/")))));
        roots
    }
}

fn literal_folder(pattern: &str) -> String {
    let literal_end = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    match pattern[..literal_end].rfind('/') {
        Some(i) => pattern[..i].to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_style_matching() {
        let inc = Includes::new(&["finemath-4plus/train-*.parquet".into()]).unwrap();
        assert!(inc.matches("finemath-4plus/train-00001-of-00064.parquet"));
        assert!(!inc.matches("finemath-3plus/train-00001-of-00128.parquet"));
        assert_eq!(inc.list_roots(), vec!["finemath-4plus".to_string()]);
        let all = Includes::new(&["*.parquet".into(), "data/x/*".into()]).unwrap();
        assert!(all.matches("data/deep/file.parquet"));
        assert_eq!(all.list_roots(), vec![String::new()]);
        assert!(Includes::new(&["a[".into()]).is_err());
    }
}
