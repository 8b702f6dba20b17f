//! Prompt templates: a file with `{{document}}` where the document goes. The sha256 of the
//! file is part of every request key, so editing a template re-asks exactly its requests.

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
        let path = dir.join(format!("{name}.md"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read prompt {}: is {key} right?", path.display()))?;
        let Some((before, after)) = text.split_once(PLACEHOLDER) else {
            bail!("prompt {} has no {PLACEHOLDER} placeholder: add it where the document goes", path.display());
        };
        if after.contains(PLACEHOLDER) {
            bail!("prompt {} has {PLACEHOLDER} more than once", path.display());
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
