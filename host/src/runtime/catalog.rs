//! Which version of each component is live. Three layers per name, highest first: what
//! an operator put through the admin API (or removed there), the file in the components
//! directory, the built-in default. Deleting a directory file lets the built-in come
//! back; a history per name keeps the versions that were replaced, for rollback.
//!
//! Generic over the version type so the rules are tested without wasmtime.

use std::collections::BTreeMap;

/// Versions kept per name for rollback.
pub const HISTORY: usize = 5;

/// The admin layer: a pinned version, or a removal that hides the lower layers.
#[derive(Clone, Debug, PartialEq)]
pub enum Admin<T> {
    Version(T),
    Removed,
}

#[derive(Clone, Debug)]
struct Layers<T> {
    builtin: Option<T>,
    directory: Option<T>,
    admin: Option<Admin<T>>,
}

impl<T> Default for Layers<T> {
    fn default() -> Self {
        Self {
            builtin: None,
            directory: None,
            admin: None,
        }
    }
}

impl<T: Clone> Layers<T> {
    fn active(&self) -> Option<T> {
        match &self.admin {
            Some(Admin::Version(v)) => Some(v.clone()),
            Some(Admin::Removed) => None,
            None => self.directory.clone().or_else(|| self.builtin.clone()),
        }
    }
}

/// A directory file that failed validation: the reason, until it is fixed or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub digest: String,
    pub reason: String,
    /// it could not be checked (the database was unavailable): the watcher tries again
    pub retry: bool,
}

#[derive(Clone, Debug)]
pub struct Catalog<T> {
    layers: BTreeMap<String, Layers<T>>,
    history: BTreeMap<String, Vec<T>>,
    rejected: BTreeMap<String, Rejected>,
}

impl<T> Default for Catalog<T> {
    fn default() -> Self {
        Self {
            layers: BTreeMap::new(),
            history: BTreeMap::new(),
            rejected: BTreeMap::new(),
        }
    }
}

impl<T: Clone> Catalog<T> {
    /// The live version of every name that has one, ordered by name.
    pub fn active(&self) -> BTreeMap<String, T> {
        self.layers
            .iter()
            .filter_map(|(name, layers)| layers.active().map(|v| (name.clone(), v)))
            .collect()
    }

    pub fn active_of(&self, name: &str) -> Option<T> {
        self.layers.get(name).and_then(Layers::active)
    }

    pub fn set_builtin(&mut self, name: &str, version: T) {
        self.layers.entry(name.to_owned()).or_default().builtin = Some(version);
    }

    pub fn builtin_of(&self, name: &str) -> Option<&T> {
        self.layers.get(name)?.builtin.as_ref()
    }

    pub fn set_directory(&mut self, name: &str, version: Option<T>) {
        self.layers.entry(name.to_owned()).or_default().directory = version;
        self.prune(name);
    }

    pub fn set_admin(&mut self, name: &str, admin: Option<Admin<T>>) {
        self.layers.entry(name.to_owned()).or_default().admin = admin;
        self.prune(name);
    }

    pub fn directory_of(&self, name: &str) -> Option<&T> {
        self.layers.get(name).and_then(|l| l.directory.as_ref())
    }

    /// Names that currently have a directory version.
    pub fn directory_names(&self) -> Vec<String> {
        self.layers
            .iter()
            .filter(|(_, l)| l.directory.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether an admin pin or removal overrides the directory for `name`.
    pub fn admin_overrides(&self, name: &str) -> bool {
        self.layers.get(name).is_some_and(|l| l.admin.is_some())
    }

    /// Keeps a replaced version for rollback (newest last, at most [`HISTORY`]).
    pub fn remember(&mut self, name: &str, previous: T) {
        let history = self.history.entry(name.to_owned()).or_default();
        history.push(previous);
        if history.len() > HISTORY {
            history.remove(0);
        }
    }

    /// The most recently replaced version of `name`, removed from the history.
    pub fn take_previous(&mut self, name: &str) -> Option<T> {
        self.history.get_mut(name)?.pop()
    }

    pub fn history_of(&self, name: &str) -> &[T] {
        self.history.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn set_rejected(&mut self, name: &str, rejected: Option<Rejected>) {
        match rejected {
            Some(r) => {
                self.rejected.insert(name.to_owned(), r);
            }
            None => {
                self.rejected.remove(name);
            }
        }
    }

    pub fn rejected(&self) -> &BTreeMap<String, Rejected> {
        &self.rejected
    }

    fn prune(&mut self, name: &str) {
        if let Some(layers) = self.layers.get(name)
            && layers.builtin.is_none()
            && layers.directory.is_none()
            && layers.admin.is_none()
        {
            self.layers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_take_precedence_admin_then_directory_then_builtin() {
        let mut c = Catalog::default();
        c.set_builtin("query-sql", "builtin");
        assert_eq!(c.active_of("query-sql"), Some("builtin"));
        c.set_directory("query-sql", Some("file"));
        assert_eq!(c.active_of("query-sql"), Some("file"));
        c.set_admin("query-sql", Some(Admin::Version("pushed")));
        assert_eq!(c.active_of("query-sql"), Some("pushed"));
        c.set_directory("query-sql", None);
        assert_eq!(
            c.active_of("query-sql"),
            Some("pushed"),
            "admin pins survive the directory"
        );
        c.set_admin("query-sql", None);
        assert_eq!(
            c.active_of("query-sql"),
            Some("builtin"),
            "the built-in comes back"
        );
        c.set_admin("query-sql", Some(Admin::Removed));
        assert_eq!(c.active_of("query-sql"), None, "removed hides every layer");
        assert!(c.active().is_empty());
    }

    #[test]
    fn directory_only_names_disappear_with_their_file() {
        let mut c = Catalog::default();
        c.set_directory("extra", Some(1));
        assert_eq!(c.active().len(), 1);
        assert_eq!(c.directory_names(), ["extra"]);
        c.set_directory("extra", None);
        assert!(c.active().is_empty());
        assert!(c.directory_names().is_empty());
    }

    #[test]
    fn history_is_bounded_and_last_in_first_out() {
        let mut c = Catalog::default();
        for v in 0..8 {
            c.remember("x", v);
        }
        assert_eq!(c.history_of("x"), [3, 4, 5, 6, 7]);
        assert_eq!(c.take_previous("x"), Some(7));
        assert_eq!(c.take_previous("x"), Some(6));
        assert_eq!(c.take_previous("y"), None);
    }
}
