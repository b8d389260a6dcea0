//! The databases one server serves, each a named pool: one unnamed source from
//! `--database-url`, or the named sources of a sources file (`config/sources.rs`), the
//! first of which is the default. Calls read the set lock-free; a reload replaces it
//! whole, keeping the pool of every source whose settings did not change.

use super::pool::{Db, DbConfigError, Limits, PoolSettings};
use crate::secret::Secret;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex, PoisonError};

/// The name of the one source of a server started with `--database-url`.
pub const UNNAMED: &str = "default";
/// Longest source name: it appears in URIs, metric labels and tool arguments.
pub const MAX_NAME_LEN: usize = 63;

/// One source as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceSpec {
    pub name: Arc<str>,
    /// shown to the model with the `database` argument
    pub description: Option<String>,
    pub url: Secret,
    pub pool: PoolSettings,
    pub limits: Limits,
}

/// One source as served.
#[derive(Debug)]
pub struct Source {
    pub name: Arc<str>,
    pub description: Option<String>,
    pub db: Db,
    spec: Option<SourceSpec>,
}

/// Why a set of sources cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("no source is named; name at least one [[source]]")]
    Empty,
    #[error(
        "source name `{0}` is not allowed: start with a letter; then letters, digits, `_` or \
         `-`; at most {MAX_NAME_LEN} bytes"
    )]
    BadName(String),
    #[error("source `{0}` is named twice")]
    Duplicate(String),
    #[error("source `{name}`: {error}")]
    Config {
        name: String,
        #[source]
        error: DbConfigError,
    },
}

/// A database name the server does not serve.
#[derive(Debug, thiserror::Error)]
#[error("unknown database `{asked}`; this server serves: {known}")]
pub struct UnknownSource {
    pub asked: String,
    pub known: String,
}

/// A set of sources ready to serve, and which of them are new or changed.
pub struct Prepared {
    set: Vec<Arc<Source>>,
    pub fresh: Vec<Arc<Source>>,
}

/// A cheap handle to the live set of sources.
#[derive(Clone)]
pub struct Sources {
    inner: Arc<Inner>,
}

struct Inner {
    /// from a sources file: tools take a `database` argument, sources report by name
    named: bool,
    /// never empty; the first is the default
    set: ArcSwap<Vec<Arc<Source>>>,
    /// why the sources file last failed to reload (the previous set serves)
    rejected: Mutex<Option<String>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("named", &self.inner.named)
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

/// Whether `name` may name a source.
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Sources {
    /// The one source of `--database-url`.
    pub fn single(db: Db) -> Self {
        let source = Source {
            name: Arc::from(UNNAMED),
            description: None,
            db,
            spec: None,
        };
        Self::from_set(false, vec![Arc::new(source)])
    }

    /// The named sources of a sources file, each with its own pool (opened lazily).
    pub fn named(specs: Vec<SourceSpec>) -> Result<Self, SourcesError> {
        let set = build(specs, &[])?;
        Ok(Self::from_set(true, set))
    }

    fn from_set(named: bool, set: Vec<Arc<Source>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                named,
                set: ArcSwap::from_pointee(set),
                rejected: Mutex::new(None),
            }),
        }
    }

    /// Whether the sources came from a sources file (and are chosen by name).
    pub fn is_named(&self) -> bool {
        self.inner.named
    }

    /// Every source, the default first.
    pub fn list(&self) -> Arc<Vec<Arc<Source>>> {
        self.inner.set.load_full()
    }

    pub fn names(&self) -> Vec<Arc<str>> {
        self.inner
            .set
            .load()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// The default source (the first).
    pub fn first(&self) -> Arc<Source> {
        // (`build` refuses an empty set, so there is always a first.)
        self.inner.set.load()[0].clone()
    }

    /// The source named `name`, or the default for `None`.
    pub fn pick(&self, name: Option<&str>) -> Result<Arc<Source>, UnknownSource> {
        let set = self.inner.set.load();
        let Some(name) = name else {
            return Ok(set[0].clone());
        };
        set.iter()
            .find(|s| &*s.name == name)
            .cloned()
            .ok_or_else(|| UnknownSource {
                asked: name.chars().take(MAX_NAME_LEN + 1).collect(),
                known: set
                    .iter()
                    .map(|s| s.name.as_ref())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The set `specs` describe, not yet served: a source whose spec is unchanged is
    /// the one served now (its pool kept), the others are new (pools opened lazily).
    pub fn prepare(&self, specs: Vec<SourceSpec>) -> Result<Prepared, SourcesError> {
        let current = self.inner.set.load_full();
        let set = build(specs, &current)?;
        let fresh = set
            .iter()
            .filter(|s| !current.iter().any(|c| Arc::ptr_eq(c, s)))
            .cloned()
            .collect();
        Ok(Prepared { set, fresh })
    }

    /// Serves `prepared`. A removed or changed source leaves the set; its pool closes
    /// when the last call using it ends.
    pub fn install(&self, prepared: Prepared) {
        self.inner.set.store(Arc::new(prepared.set));
        self.set_rejected(None);
    }

    /// [`Sources::prepare`] and [`Sources::install`]: the new or changed sources.
    pub fn replace(&self, specs: Vec<SourceSpec>) -> Result<Vec<Arc<Source>>, SourcesError> {
        let prepared = self.prepare(specs)?;
        let fresh = prepared.fresh.clone();
        self.install(prepared);
        Ok(fresh)
    }

    /// Whether `specs` describe exactly the sources served now.
    pub fn same_as(&self, specs: &[SourceSpec]) -> bool {
        let current = self.inner.set.load();
        current.len() == specs.len()
            && current
                .iter()
                .zip(specs)
                .all(|(c, s)| c.spec.as_ref() == Some(s))
    }

    /// Records why the sources file was last refused (None: it was accepted).
    pub fn set_rejected(&self, reason: Option<String>) {
        *self
            .inner
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// Why the sources file stands refused, if it does (the previous set serves).
    pub fn rejected(&self) -> Option<String> {
        self.inner
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Closes every pool (shutdown).
    pub fn close(&self) {
        for source in self.inner.set.load().iter() {
            source.db.close();
        }
    }
}

/// The sources of `specs`, reusing the source of `current` whose spec is the same.
fn build(
    specs: Vec<SourceSpec>,
    current: &[Arc<Source>],
) -> Result<Vec<Arc<Source>>, SourcesError> {
    if specs.is_empty() {
        return Err(SourcesError::Empty);
    }
    let mut set: Vec<Arc<Source>> = Vec::with_capacity(specs.len());
    for spec in specs {
        if !valid_name(&spec.name) {
            return Err(SourcesError::BadName(
                spec.name.chars().take(MAX_NAME_LEN + 1).collect(),
            ));
        }
        if set.iter().any(|s| s.name == spec.name) {
            return Err(SourcesError::Duplicate(spec.name.to_string()));
        }
        if let Some(same) = current.iter().find(|c| c.spec.as_ref() == Some(&spec)) {
            set.push(same.clone());
            continue;
        }
        let db = Db::new(spec.url.expose(), spec.pool.clone(), spec.limits.clone()).map_err(
            |error| SourcesError::Config {
                name: spec.name.to_string(),
                error,
            },
        )?;
        set.push(Arc::new(Source {
            name: spec.name.clone(),
            description: spec.description.clone(),
            db,
            spec: Some(spec),
        }));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(name: &str, url: &str) -> SourceSpec {
        SourceSpec {
            name: Arc::from(name),
            description: None,
            url: Secret::new(url),
            pool: PoolSettings {
                max_size: 2,
                wait_timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
                statement_timeout: Duration::from_secs(1),
                idle_in_transaction_timeout: Duration::from_secs(5),
                allow_privileged_role: false,
            },
            limits: Limits {
                max_rows: 10,
                max_bytes: 1 << 20,
                max_cost: None,
                allow_explain_analyze: false,
            },
        }
    }

    #[tokio::test]
    async fn names_are_checked() {
        for bad in ["", "1db", "a b", "a/b", "a.b", "é", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad:?}");
            let refused = Sources::named(vec![spec(bad, "postgres://h/d")]);
            assert!(matches!(refused, Err(SourcesError::BadName(_))), "{bad:?}");
        }
        for good in ["main", "a", "db_2", "orders-eu", &"a".repeat(63)] {
            assert!(valid_name(good), "{good:?}");
        }
        let twice = Sources::named(vec![
            spec("a", "postgres://h/a"),
            spec("a", "postgres://h/b"),
        ]);
        assert!(matches!(twice, Err(SourcesError::Duplicate(n)) if n == "a"));
        assert!(matches!(Sources::named(vec![]), Err(SourcesError::Empty)));
    }

    #[tokio::test]
    async fn the_first_is_the_default_and_unknown_names_list_the_known() {
        let sources = Sources::named(vec![
            spec("main", "postgres://h/a"),
            spec("books", "postgres://h/b"),
        ])
        .unwrap();
        assert!(sources.is_named());
        assert_eq!(&*sources.pick(None).unwrap().name, "main");
        assert_eq!(&*sources.pick(Some("books")).unwrap().name, "books");
        let unknown = sources.pick(Some("Main")).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown database `Main`; this server serves: main, books"
        );
        // A hostile name is cut short in the error.
        let long = "x".repeat(10_000);
        assert!(sources.pick(Some(&long)).unwrap_err().to_string().len() < 200);
    }

    #[tokio::test]
    async fn a_reload_keeps_the_pools_of_unchanged_sources() {
        let sources = Sources::named(vec![
            spec("main", "postgres://h/a"),
            spec("books", "postgres://h/b"),
        ])
        .unwrap();
        let main = sources.pick(Some("main")).unwrap();
        let mut changed = spec("books", "postgres://h/c");
        changed.description = Some("the library".into());
        let specs = vec![
            spec("main", "postgres://h/a"),
            changed,
            spec("new", "postgres://h/n"),
        ];
        assert!(!sources.same_as(&specs));
        let fresh = sources.replace(specs.clone()).unwrap();
        assert!(sources.same_as(&specs));
        let names: Vec<&str> = fresh.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["books", "new"]);
        assert!(Arc::ptr_eq(&main, &sources.pick(Some("main")).unwrap()));
        // A refused set leaves the served one alone.
        assert!(sources.replace(vec![spec("9", "postgres://h/a")]).is_err());
        assert_eq!(sources.names().len(), 3);
    }
}
