//! What every stage run starts from: the checked sources, the hub client (when a source
//! needs it), and the input files resolved at pinned revisions. A run records the commit
//! each hub revision resolved to (`work/pins.json`), so a resumed run reads the same data
//! even if a branch moved in between.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::LoadedConfig;
use crate::hub::{HubClient, HubSettings};
use crate::run_dir::{RunDir, read_json, write_json};
use crate::sources::resolve::{ResolvedSource, resolve_sources};
use crate::sources::{Source, SourceKind};

/// A source's revision as configured and the commit it was pinned to.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pin {
    revision: String,
    commit: String,
}

/// Resolved inputs of a run.
pub struct Inputs {
    pub client: Option<HubClient>,
    pub sources: Vec<ResolvedSource>,
}

impl Inputs {
    /// All input files in ordinal order.
    pub fn files(&self) -> impl Iterator<Item = &crate::sources::InputFile> {
        self.sources.iter().flat_map(|s| s.files.iter())
    }
}

/// Checks the sources and builds a hub client if one is needed. A config without sources is
/// valid for the stages that read something else (`classify --input`, say), not for these.
pub fn checked_sources(cfg: &LoadedConfig) -> Result<Vec<Source>> {
    if cfg.config.sources.is_empty() {
        anyhow::bail!("{}: no [[sources]]: add at least one hub or local source (see configs/demo.toml)", cfg.path.display());
    }
    cfg.config.sources.iter().map(|s| Source::from_config(s, |p| cfg.resolve(p))).collect()
}

/// Resolves the config's sources; with `pin_to` set, uses and records the run's pins.
pub async fn resolve_inputs(cfg: &LoadedConfig, cache_dir: Option<PathBuf>, pin_to: Option<&RunDir>) -> Result<Inputs> {
    let sources = checked_sources(cfg)?;
    let needs_hub = sources.iter().any(|s| matches!(s.kind, SourceKind::Hub { .. }));
    let client = if needs_hub { Some(HubClient::new(HubSettings::resolve(&cfg.config.hub, cache_dir))?) } else { None };
    let pins_path = pin_to.map(|r| r.root.join("work").join("pins.json"));
    let pins: BTreeMap<String, Pin> = match &pins_path {
        Some(p) => read_json(p)?.unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let pin_pairs = pins.iter().map(|(k, v)| (k.clone(), (v.revision.clone(), v.commit.clone()))).collect();
    let resolved = resolve_sources(&sources, client.as_ref(), &pin_pairs).await?;
    if let Some(path) = pins_path {
        let new: BTreeMap<String, Pin> = resolved
            .iter()
            .filter_map(|r| match &r.source.kind {
                SourceKind::Hub { revision, .. } => Some((r.source.name.clone(), Pin { revision: revision.clone(), commit: r.commit.clone() })),
                SourceKind::Local { .. } => None,
            })
            .collect();
        let unchanged = new.len() == pins.len() && new.iter().all(|(k, v)| pins.get(k).is_some_and(|p| p.commit == v.commit && p.revision == v.revision));
        if !unchanged {
            for (name, pin) in &new {
                tracing::info!("source `{name}`: revision `{}` pinned to commit {}", pin.revision, pin.commit);
            }
            write_json(&path, &new)?;
        }
    }
    Ok(Inputs { client, sources: resolved })
}
