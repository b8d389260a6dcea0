//! Changing the live components while the server serves. A change builds the candidate
//! off the request path (compile, world, instantiate once, `list()`, schemas; a health
//! candidate also runs `check()`), checks the resulting set for clashing tool names,
//! then publishes it with one registry pointer swap. Calls in flight keep the version
//! they started with; a rejected candidate never replaces the live one. Changes are
//! serialized by the catalog lock; calls never take it.

use super::catalog::{Admin, Catalog, Rejected};
use super::limits::Limits;
use super::loader;
use super::registry::{Kind, Loaded, Registry, Source};
use super::{Runtime, Shared};
use crate::invocation::ComponentInfo;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Component names: what a file stem or an admin URL may be.
const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwapError {
    /// The candidate failed validation or would clash; the live version stays.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The candidate could not be checked now (a `.sql.toml` file while the database is
    /// unavailable); the directory watcher tries it again.
    #[error("rejected for now: {0}")]
    Unchecked(String),
    #[error("no component named `{0}` is loaded")]
    NotFound(String),
    #[error("`{0}` has no earlier version to roll back to")]
    NoHistory(String),
    #[error("invalid component name {0:?}: use 1-64 of a-z 0-9 - _")]
    BadName(String),
}

/// One `NAME.wasm` or `NAME.sql.toml` found in the components directory.
pub struct DirectoryEntry {
    pub name: String,
    pub kind: Kind,
    pub path: PathBuf,
    pub bytes: Arc<[u8]>,
    /// the text of `NAME.toml`, if present
    pub config: Option<String>,
}

/// An admin view of one name: the live version, its history, a rejection.
#[derive(Debug, serde::Serialize)]
pub struct ComponentView {
    #[serde(flatten)]
    pub live: Option<ComponentInfo>,
    pub name: String,
    /// digests of earlier versions, newest last (rollback restores the last)
    pub previous: Vec<String>,
    /// an admin pin or removal hides the directory and built-in versions
    pub admin_override: bool,
}

/// What `mcp-sandbox component check` reports.
pub struct Inspection {
    pub name: String,
    pub digest: String,
    pub world: &'static str,
    pub size: usize,
    /// compile (or cache load), instantiate and validate
    pub load_ms: f64,
    pub tools: Vec<super::ToolSpec>,
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Runtime {
    /// Replaces (or adds) `name` with `bytes`, pinned above the directory and built-in.
    pub async fn put_component(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<ComponentInfo, SwapError> {
        if !valid_name(name) {
            return Err(SwapError::BadName(name.to_owned()));
        }
        let mut catalog = self.shared.catalog.lock().await;
        let limits = self.shared.limits_for(name).map_err(SwapError::Rejected)?;
        let kind = Kind::sniff(&bytes);
        let loaded = self
            .shared
            .candidate(name, kind, Arc::from(bytes), Source::Admin, limits, None)
            .await
            .inspect_err(|_| self.shared.metrics.swap("rejected"))?;
        let info = loaded.info();
        let mut next = catalog.clone();
        next.set_admin(name, Some(Admin::Version(loaded)));
        self.shared.commit(&mut catalog, next).map_err(|e| {
            self.shared.metrics.swap("rejected");
            SwapError::Rejected(e)
        })?;
        Ok(info)
    }

    /// Removes `name` whatever layer it comes from, until it is put again or rolled back.
    pub async fn remove_component(&self, name: &str) -> Result<(), SwapError> {
        let mut catalog = self.shared.catalog.lock().await;
        if catalog.active_of(name).is_none() {
            return Err(SwapError::NotFound(name.to_owned()));
        }
        let mut next = catalog.clone();
        next.set_admin(name, Some(Admin::Removed));
        self.shared
            .commit(&mut catalog, next)
            .map_err(SwapError::Rejected)
    }

    /// Brings back the version `name` had before its last change (kept in memory, so
    /// this needs no compilation). Rolling back twice swaps back again.
    pub async fn rollback_component(&self, name: &str) -> Result<ComponentInfo, SwapError> {
        let mut catalog = self.shared.catalog.lock().await;
        let mut next = catalog.clone();
        let previous = next
            .take_previous(name)
            .ok_or_else(|| SwapError::NoHistory(name.to_owned()))?;
        let info = previous.info();
        next.set_admin(name, Some(Admin::Version(previous)));
        self.shared
            .commit(&mut catalog, next)
            .map_err(SwapError::Rejected)?;
        Ok(info)
    }

    /// Makes the directory layer match `entries`: new or changed files are validated and
    /// applied, vanished ones removed. Files that fail validation are recorded as
    /// rejected (readiness reports them) and the live version stays.
    pub async fn sync_directory(&self, entries: Vec<DirectoryEntry>) {
        let mut catalog = self.shared.catalog.lock().await;
        let mut next = catalog.clone();
        let mut changed = Vec::new();
        for entry in &entries {
            let digest = loader::hex_sha256(&entry.bytes);
            let current = next.directory_of(&entry.name);
            if current.is_some_and(|c| *c.digest == digest && c.config == entry.config) {
                next.set_rejected(&entry.name, None);
                continue;
            }
            let same_rejection = next
                .rejected()
                .get(&entry.name)
                .is_some_and(|r| r.digest == rejection_key(&digest, &entry.config) && !r.retry);
            if same_rejection {
                continue; // already rejected, already logged
            }
            let candidate = match self.shared.limits_from(entry.config.as_deref()) {
                Ok(limits) => {
                    self.shared
                        .candidate(
                            &entry.name,
                            entry.kind,
                            entry.bytes.clone(),
                            Source::File(entry.path.clone()),
                            limits,
                            entry.config.clone(),
                        )
                        .await
                }
                Err(e) => Err(SwapError::Rejected(format!("{}.toml: {e}", entry.name))),
            };
            match candidate {
                Ok(loaded) => {
                    next.set_directory(&entry.name, Some(loaded));
                    next.set_rejected(&entry.name, None);
                    changed.push(entry.name.clone());
                }
                Err(e) => self
                    .shared
                    .reject(&mut next, &entry.name, &digest, &entry.config, &e),
            }
        }
        // A `NAME.toml` that changed refines a built-in: reload it with the new limits
        // (its compiled code comes from the cache).
        let mut configured = Vec::new();
        for (name, bytes) in super::builtin::DEFAULTS {
            let Some(builtin) = next.builtin_of(name).cloned() else {
                continue;
            };
            let config = self.shared.config_text(name).unwrap_or_else(|e| {
                tracing::warn!(component = *name, "{e}");
                builtin.config.clone()
            });
            if config.is_some() {
                configured.push(name.to_string());
            }
            if builtin.config == config {
                continue;
            }
            let candidate = match self.shared.limits_from(config.as_deref()) {
                Ok(limits) => {
                    self.shared
                        .candidate(
                            name,
                            Kind::Wasm,
                            Arc::from(*bytes),
                            Source::Builtin,
                            limits,
                            config.clone(),
                        )
                        .await
                }
                Err(e) => Err(SwapError::Rejected(format!("{name}.toml: {e}"))),
            };
            match candidate {
                Ok(loaded) => {
                    next.set_builtin(name, loaded);
                    next.set_rejected(name, None);
                }
                Err(e) => self
                    .shared
                    .reject(&mut next, name, &builtin.digest, &config, &e),
            }
        }
        for name in next.directory_names() {
            if !entries.iter().any(|e| e.name == name) {
                next.set_directory(&name, None);
                changed.push(name);
            }
        }
        let present: Vec<String> = next.rejected().keys().cloned().collect();
        for name in present {
            if !entries.iter().any(|e| e.name == name) && !configured.contains(&name) {
                next.set_rejected(&name, None);
            }
        }
        // All at once when the new set is consistent (a tool may move between files);
        // otherwise one file at a time, rejecting the ones that clash.
        if let Err(clash) = self.shared.commit(&mut catalog, next.clone()) {
            tracing::warn!(
                "the directory's components clash as a set ({clash}); applying one by one"
            );
            for name in changed {
                let mut one = catalog.clone();
                one.set_directory(&name, next.directory_of(&name).cloned());
                if let Err(e) = self.shared.commit(&mut catalog, one) {
                    let digest = next
                        .directory_of(&name)
                        .map(|l| l.digest.to_string())
                        .unwrap_or_default();
                    let config = next.directory_of(&name).and_then(|l| l.config.clone());
                    let mut rejected = catalog.clone();
                    self.shared.reject(
                        &mut rejected,
                        &name,
                        &digest,
                        &config,
                        &SwapError::Rejected(e),
                    );
                    *catalog = rejected;
                }
            }
        }
        self.shared
            .rejected
            .store(Arc::new(catalog.rejected().clone()));
    }

    /// Every name with a live version, a history or a rejection, for the admin API.
    pub async fn component_views(&self) -> (Vec<ComponentView>, BTreeMap<String, Rejected>) {
        let catalog = self.shared.catalog.lock().await;
        let active = catalog.active();
        let mut names: Vec<String> = active.keys().cloned().collect();
        for name in catalog.rejected().keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let views = names
            .into_iter()
            .map(|name| ComponentView {
                live: active.get(&name).map(|l| l.info()),
                previous: catalog
                    .history_of(&name)
                    .iter()
                    .map(|l| l.digest.to_string())
                    .collect(),
                admin_override: catalog.admin_overrides(&name),
                name,
            })
            .collect();
        (views, catalog.rejected().clone())
    }

    /// Validates a component as a swap would, without making it live (`component
    /// check`): its world, digest, tools and how long compiling took.
    pub async fn inspect(
        &self,
        name: &str,
        kind: Kind,
        bytes: Vec<u8>,
    ) -> Result<Inspection, SwapError> {
        let started = std::time::Instant::now();
        let limits = self.shared.limits.clone();
        let loaded = self
            .shared
            .candidate(name, kind, Arc::from(bytes), Source::Admin, limits, None)
            .await?;
        Ok(Inspection {
            name: name.to_owned(),
            digest: loaded.digest.to_string(),
            world: loaded.world.as_str(),
            size: loaded.size,
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
            tools: loaded.tools.clone(),
        })
    }

    /// Directory files currently rejected (`/health` and `/ready` name them).
    pub fn rejected_components(&self) -> Arc<BTreeMap<String, Rejected>> {
        self.shared.rejected.load_full()
    }
}

/// What makes a rejection "the same one again": the bytes and the limits file.
fn rejection_key(digest: &str, config: &Option<String>) -> String {
    match config {
        Some(text) => format!("{digest}+{}", loader::hex_sha256(text.as_bytes())),
        None => digest.to_owned(),
    }
}

impl Shared {
    /// The server's limits refined by `NAME.toml` in the components directory.
    fn limits_for(&self, name: &str) -> Result<Limits, String> {
        let text = self.config_text(name)?;
        self.limits_from(text.as_deref())
            .map_err(|e| format!("{name}.toml: {e}"))
    }

    /// The text of `NAME.toml` in the components directory, if there is one.
    pub(super) fn config_text(&self, name: &str) -> Result<Option<String>, String> {
        let Some(dir) = &self.components_dir else {
            return Ok(None);
        };
        match std::fs::read_to_string(dir.join(format!("{name}.toml"))) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{name}.toml: {e}")),
        }
    }

    pub(super) fn limits_from(&self, config: Option<&str>) -> Result<Limits, String> {
        match config {
            Some(text) => super::overrides::apply(&self.limits, text),
            None => Ok(self.limits.clone()),
        }
    }

    /// Loads and validates a candidate; a health candidate must also survive `check()`.
    async fn candidate(
        &self,
        name: &str,
        kind: Kind,
        bytes: Arc<[u8]>,
        source: Source,
        limits: Limits,
        config: Option<String>,
    ) -> Result<Arc<Loaded>, SwapError> {
        let loaded = match kind {
            Kind::Wasm => loader::load(self, name, bytes, source, limits).await,
            Kind::Sql => loader::load_sql(self, name, bytes, source, limits).await,
        };
        let mut loaded = loaded.map_err(|e| match e.retry {
            true => SwapError::Unchecked(e.reason),
            false => SwapError::Rejected(e.reason),
        })?;
        loaded.config = config;
        let loaded = Arc::new(loaded);
        if loaded.world == super::World::Health
            && let Err(fault) = self
                .invoke_health(loaded.clone(), std::time::Instant::now(), self.default_db())
                .await
                .result
        {
            return Err(SwapError::Rejected(format!(
                "its health check failed: {fault}"
            )));
        }
        Ok(loaded)
    }

    fn reject(
        &self,
        catalog: &mut Catalog<Arc<Loaded>>,
        name: &str,
        digest: &str,
        config: &Option<String>,
        error: &SwapError,
    ) {
        tracing::error!(
            component = name,
            digest = &digest[..digest.len().min(12)],
            "{error}"
        );
        self.metrics.swap("rejected");
        catalog.set_rejected(
            name,
            Some(Rejected {
                digest: rejection_key(digest, config),
                reason: error.to_string(),
                retry: matches!(error, SwapError::Unchecked(_)),
            }),
        );
    }

    /// Publishes `next` if its live set is consistent: one pointer swap. Replaced
    /// versions go to the history; sessions are told the tool list changed.
    pub(super) fn commit(
        &self,
        catalog: &mut Catalog<Arc<Loaded>>,
        mut next: Catalog<Arc<Loaded>>,
    ) -> Result<(), String> {
        let before = catalog.active();
        let after = next.active();
        let registry = Registry::new(after.values().cloned())?;
        // Start-up loading is not a swap.
        let count = |result| {
            if self.serving.load(std::sync::atomic::Ordering::Relaxed) {
                self.metrics.swap(result);
            }
        };
        let mut changed = false;
        for (name, old) in &before {
            match after.get(name) {
                Some(new) if Arc::ptr_eq(new, old) => {}
                Some(new) => {
                    next.remember(name, old.clone());
                    count("applied");
                    tracing::info!(
                        component = name.as_str(),
                        from = &old.digest[..12],
                        to = &new.digest[..12],
                        source = %new.source,
                        "swapped"
                    );
                    changed = true;
                }
                None => {
                    next.remember(name, old.clone());
                    count("removed");
                    tracing::info!(
                        component = name.as_str(),
                        digest = &old.digest[..12],
                        "removed"
                    );
                    changed = true;
                }
            }
        }
        for (name, new) in &after {
            if !before.contains_key(name) {
                count("applied");
                tracing::info!(component = name.as_str(), digest = &new.digest[..12], source = %new.source, "added");
                changed = true;
            }
        }
        self.registry.store(Arc::new(registry));
        *catalog = next;
        if changed {
            let infos: Vec<ComponentInfo> = after.values().map(|l| l.info()).collect();
            self.metrics.set_components(&infos);
            self.changes.send_modify(|version| *version += 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_are_plain() {
        for good in ["query-sql", "a", "x_1", &"a".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Query", "a/b", "../x", "a.wasm", "a b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
