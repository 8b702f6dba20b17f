//! A string that never prints: tokens and API keys are wrapped in `Secret` so that no
//! `Debug`, `Display` or log line can leak them.

use std::fmt;

/// A credential read from the environment or a config file.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a non-empty value; an empty or blank one counts as absent.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| Secret(trimmed.to_string()))
    }

    /// The raw value, for the one place that must send it (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hf_abcdef").unwrap();
        assert!(!format!("{s:?} {s}").contains("hf_abcdef"));
        assert_eq!(s.expose(), "hf_abcdef");
        assert!(Secret::new("  ").is_none());
    }
}
