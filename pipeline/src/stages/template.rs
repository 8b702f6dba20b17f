//! Prompt templates: a file with `{{document}}` (or another placeholder) where the text
//! goes. The sha256 of the file is part of every request key, so editing a template
//! re-asks exactly its requests (and is recorded with every example built from it).

use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The placeholder replaced by the document.
pub const PLACEHOLDER: &str = "{{document}}";

/// A loaded template.
#[derive(Clone, Debug)]
pub struct Template {
    pub name: String,
    pub hash: String,
    before: String,
    after: String,
}

impl Template {
    /// Loads `<dir>/<name>.md`; `key` names the config key to fix when it is missing.
    pub fn load(dir: &Path, name: &str, key: &str) -> Result<Self> {
        Self::load_with(dir, name, key, PLACEHOLDER)
    }

    /// Loads `<dir>/<name>.md` with its own placeholder, e.g. `{{question}}`.
    pub fn load_with(dir: &Path, name: &str, key: &str, placeholder: &str) -> Result<Self> {
        let path = dir.join(format!("{name}.md"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read prompt {}: is {key} right?", path.display()))?;
        let Some((before, after)) = text.split_once(placeholder) else {
            bail!("prompt {} has no {placeholder} placeholder: add it where the text goes", path.display());
        };
        if after.contains(placeholder) {
            bail!("prompt {} has {placeholder} more than once", path.display());
        }
        Ok(Template { name: name.to_string(), hash: hex::encode(Sha256::digest(text.as_bytes())), before: before.to_string(), after: after.to_string() })
    }

    /// The prompt with the document in place. The document is inserted as is, once; no
    /// part of it is interpreted.
    pub fn render(&self, document: &str) -> String {
        let mut s = String::with_capacity(self.before.len() + document.len() + self.after.len());
        s.push_str(&self.before);
        s.push_str(document);
        s.push_str(&self.after);
        s
    }
}
