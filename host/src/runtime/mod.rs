//! The only code that knows wasmtime: the engine, the bindings, the registry of loaded
//! components, the host imports and the per-invocation limits. Callers see plain Rust
//! types: [`ToolSpec`], [`Invocation`], [`Fault`].

mod bindings;
mod builtin;
mod catalog;
mod database_arg;
mod engine;
mod imports;
mod invoke;
mod limits;
mod loader;
mod output;
mod overrides;
mod registry;
mod schema;
mod state;
mod swap;
pub mod watch;

pub use crate::invocation::{
    Annotations, ComponentInfo, Fault, HealthCheck, HealthReport, HealthState, Invocation, Timings,
    ToolOutput, ToolSpec, TrapKind,
};
pub use crate::sql_tools::SUFFIX as SQL_TOOLS_SUFFIX;
pub use builtin::BUILD_DIR;
pub use catalog::Rejected;
pub use limits::Limits;
pub use loader::{LoadError, hex_sha256};
pub use registry::{Kind, Source, World};
pub use swap::{ComponentView, Inspection, SwapError};

use crate::db::{Db, RoleLogin, RoleMap, Source as DbSource, Sources};
use crate::metrics::Metrics;
use anyhow::Context;
use arc_swap::ArcSwap;
use engine::EpochTicker;
use registry::{Loaded, Registry};
use serde_json::Value;
use state::HostState;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

/// Runs tool calls and health checks in sandboxed components. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    engine: Engine,
    tool_linker: Linker<HostState>,
    health_linker: Linker<HostState>,
    /// what calls read, lock-free: replaced whole on every change
    registry: ArcSwap<Registry>,
    /// what changes edit, one at a time (never taken by a call)
    catalog: tokio::sync::Mutex<catalog::Catalog<Arc<Loaded>>>,
    /// the catalog's rejections, readable without waiting for a swap in progress
    rejected: ArcSwap<std::collections::BTreeMap<String, Rejected>>,
    /// set once start-up loading is done: later changes count as swaps
    serving: std::sync::atomic::AtomicBool,
    /// bumped after every change that alters the live set
    changes: tokio::sync::watch::Sender<u64>,
    components_dir: Option<PathBuf>,
    /// the databases calls go to (one, or a sources file's)
    sources: Sources,
    /// the login role of each caller (`--caller-roles`), set once before serving
    roles: std::sync::OnceLock<RoleMap>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// one permit per pooled instance slot for tool calls
    slots: Semaphore,
    /// the pool's [`engine::SPARE_SLOTS`] further slots: probes, readiness and the
    /// validation of swap candidates, so none of them fails or waits while calls fill
    /// every call slot, and no call finds its slot taken by them
    spare: Semaphore,
    /// the `sql-tool` component, compiled when the first `.sql.toml` file loads
    sql_tool: tokio::sync::OnceCell<bindings::ToolComponentPre<HostState>>,
    _ticker: EpochTicker,
}

/// Who a call runs for, as far as the database is concerned.
#[derive(Clone, Copy, Default)]
pub struct AsCaller<'a> {
    /// the caller's own login role (`--caller-roles`); None: the source's
    pub login: Option<&'a RoleLogin>,
    /// the sources it may use; None: every one
    pub databases: Option<&'a std::collections::BTreeSet<String>>,
}

/// A [`Runtime`] that does not keep it alive (for background tasks).
pub struct WeakRuntime(std::sync::Weak<Shared>);

impl WeakRuntime {
    pub fn upgrade(&self) -> Option<Runtime> {
        self.0.upgrade().map(|shared| Runtime { shared })
    }
}

/// Where components come from and how they are compiled.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub limits: Limits,
    /// `NAME.wasm` (and `NAME.toml`) files that add to or replace the built-ins
    pub components_dir: Option<PathBuf>,
    /// where compiled artifacts are cached between runs (None: no cache)
    pub cache_dir: Option<PathBuf>,
    /// built-in components not loaded (`--disable-builtin`)
    pub disabled_builtins: Vec<String>,
}

impl Runtime {
    /// Loads the built-in components, then every `NAME.wasm` in the components
    /// directory (a name that matches a built-in replaces it). A built-in that fails to
    /// load stops the start; a directory file that fails is rejected, logged and shown
    /// by readiness, and the rest is served.
    pub async fn new(
        sources: Sources,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let components_dir = settings.components_dir.clone();
        let disabled = settings.disabled_builtins.clone();
        let runtime = Self::bare(sources, settings, metrics)?;
        let shared = runtime.shared.clone();
        let enabled = builtin::DEFAULTS
            .iter()
            .filter(|(name, _)| !disabled.iter().any(|d| d == name));
        let loads = enabled.map(|(name, bytes)| {
            let shared = shared.clone();
            async move {
                // `NAME.toml` in the components directory refines a built-in's limits too.
                let config = shared.config_text(name).map_err(|e| anyhow::anyhow!(e))?;
                let limits = shared
                    .limits_from(config.as_deref())
                    .map_err(|e| anyhow::anyhow!("{name}.toml: {e}"))?;
                let mut loaded =
                    loader::load(&shared, name, Arc::from(*bytes), Source::Builtin, limits).await?;
                loaded.config = config;
                anyhow::Ok(Arc::new(loaded))
            }
        });
        let builtins: Vec<Arc<Loaded>> = futures::future::try_join_all(loads).await?;
        {
            let mut catalog = shared.catalog.lock().await;
            let mut next = catalog.clone();
            for loaded in builtins {
                next.set_builtin(&loaded.name.clone(), loaded);
            }
            shared
                .commit(&mut catalog, next)
                .map_err(|e| anyhow::anyhow!("the built-in components: {e}"))?;
        }
        if let Some(dir) = &components_dir {
            runtime.sync_directory(watch::read_entries(dir)).await;
        }
        runtime.shared.metrics.set_components(&runtime.components());
        runtime
            .shared
            .serving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(runtime)
    }

    /// The engine and linkers with no components loaded (for `component check`).
    pub fn bare(
        sources: Sources,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let Settings {
            limits,
            components_dir,
            cache_dir,
            disabled_builtins: _,
        } = settings;
        let engine =
            engine::build(&limits, cache_dir.as_deref()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let ticker = EpochTicker::start(&engine).context("starting the epoch ticker")?;
        let mut tool_linker = Linker::new(&engine);
        let mut health_linker = Linker::new(&engine);
        for linker in [&mut tool_linker, &mut health_linker] {
            wasmtime_wasi::p2::add_to_linker_async(linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        }
        bindings::tool::ToolComponent::add_to_linker::<_, HasSelf<_>>(&mut tool_linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        bindings::health::HealthComponent::add_to_linker::<_, HasSelf<_>>(
            &mut health_linker,
            |s| s,
        )
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        if let Some(dir) = &components_dir {
            std::fs::read_dir(dir)
                .with_context(|| format!("reading the components directory {}", dir.display()))?;
        }
        let slots = Semaphore::new(limits.max_concurrency as usize);
        let spare = Semaphore::new(engine::SPARE_SLOTS as usize);
        let shared = Arc::new(Shared {
            engine,
            tool_linker,
            health_linker,
            registry: ArcSwap::from_pointee(Registry::default()),
            catalog: tokio::sync::Mutex::new(catalog::Catalog::default()),
            rejected: ArcSwap::default(),
            serving: std::sync::atomic::AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
            components_dir: components_dir.clone(),
            sources,
            roles: std::sync::OnceLock::new(),
            limits,
            metrics,
            slots,
            spare,
            sql_tool: tokio::sync::OnceCell::new(),
            _ticker: ticker,
        });
        Ok(Self { shared })
    }

    pub fn downgrade(&self) -> WeakRuntime {
        WeakRuntime(Arc::downgrade(&self.shared))
    }

    /// A receiver that sees a new value after every change of the live components.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Every tool, ordered by name, as served (with the `database` argument the host
    /// adds when it serves a sources file).
    pub fn tools(&self) -> Vec<ToolSpec> {
        let registry = self.shared.registry.load();
        registry
            .tools()
            .map(
                |spec| match self.shared.takes_database(&registry, &spec.name) {
                    true => ToolSpec {
                        input_schema: Arc::new(database_arg::add_to_schema(
                            &spec.input_schema,
                            &self.shared.sources,
                        )),
                        ..spec.clone()
                    },
                    false => spec.clone(),
                },
            )
            .collect()
    }

    /// The spec of one tool (as the component declared it).
    pub fn tool(&self, name: &str) -> Option<ToolSpec> {
        self.with_tool(name, ToolSpec::clone)
    }

    /// `read` of one tool's spec, in the live registry.
    fn with_tool<R>(&self, name: &str, read: impl FnOnce(&ToolSpec) -> R) -> Option<R> {
        let registry = self.shared.registry.load();
        let loaded = registry.tool(name)?;
        loaded.tools.iter().find(|t| t.name == name).map(read)
    }

    /// One tool's input schema as served (shared, unless the host adds `database`),
    /// without copying the rest of its spec.
    pub fn input_schema(&self, name: &str) -> Option<Arc<serde_json::Map<String, Value>>> {
        let schema = self.with_tool(name, |spec| spec.input_schema.clone())?;
        if self
            .shared
            .takes_database(&self.shared.registry.load(), name)
        {
            return Some(Arc::new(database_arg::add_to_schema(
                &schema,
                &self.shared.sources,
            )));
        }
        Some(schema)
    }

    /// Every loaded component, ordered by name.
    pub fn components(&self) -> Vec<ComponentInfo> {
        self.shared
            .registry
            .load()
            .components()
            .map(|c| c.info())
            .collect()
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The databases calls go to.
    pub fn sources(&self) -> &Sources {
        &self.shared.sources
    }

    /// Runs each caller's queries as the login role `roles` maps it to, and closes the
    /// role pools left unused (checked every quarter of `idle_close`). Once, before serving.
    pub fn set_roles(&self, roles: RoleMap) {
        let idle_close = roles.pools.idle_close;
        if self.shared.roles.set(roles).is_err() {
            return;
        }
        let weak = self.downgrade();
        tokio::spawn(async move {
            let every = (idle_close / 4).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(every).await;
                let Some(runtime) = weak.upgrade() else {
                    return;
                };
                for source in runtime.sources().list().iter() {
                    source.db.close_idle_roles(idle_close);
                }
            }
        });
    }

    /// The caller-to-role map, when one is set.
    pub fn roles(&self) -> Option<&RoleMap> {
        self.shared.roles.get()
    }

    /// Tells every session the tools changed (their `database` argument lists the
    /// sources): after a reload of the sources file.
    pub fn sources_changed(&self) {
        self.shared.changes.send_modify(|n| *n += 1);
    }

    /// Calls `tool` in a fresh instance, after checking `arguments` against the tool's
    /// input schema (the component never sees arguments that do not match), its queries
    /// logging in as `as_caller`'s role on a source it may use. `cancel` stops it early:
    /// the client cancelled the request or went away.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: &Value,
        cancel: &CancellationToken,
        as_caller: AsCaller<'_>,
    ) -> Invocation<ToolOutput> {
        let started = Instant::now();
        let loaded = self.shared.registry.load().tool(tool).cloned();
        let invocation = match loaded {
            None => Invocation::failed(Fault::UnknownTool(tool.to_owned()), started),
            Some(loaded) => match self.shared.admit(&loaded, tool, arguments) {
                Err(fault) => Invocation::failed(fault, started).served_by(&loaded),
                Ok((json, source)) => match self.shared.pool_for(&source, as_caller) {
                    Err(fault) => Invocation::failed(fault, started).served_by(&loaded),
                    Ok(db) => {
                        let named = self.shared.sources.is_named().then(|| source.name.clone());
                        let mut invocation = self
                            .shared
                            .invoke_tool(loaded, tool, &json, started, cancel, db)
                            .await;
                        invocation.database = named;
                        invocation
                    }
                },
            },
        };
        // (The call itself is counted by `mcp/`, where every transport's calls pass.)
        let component = invocation.component.as_deref().unwrap_or("");
        self.shared.metrics.phases(component, &invocation.timings);
        self.shared.count_trap(component, &invocation.result);
        invocation
    }

    /// Runs the health component's `check()` on `source` under its own short deadline.
    pub async fn check_health(&self, source: &DbSource) -> Invocation<HealthReport> {
        let started = Instant::now();
        let loaded = self.shared.registry.load().health().cloned();
        let invocation = match loaded {
            None => Invocation::failed(
                Fault::Unavailable("no health component is loaded".into()),
                started,
            ),
            Some(loaded) => {
                self.shared
                    .invoke_health(loaded, started, source.db.clone())
                    .await
            }
        };
        let state = match &invocation.result {
            Ok(report) => match report.state {
                HealthState::Ok => "ok",
                HealthState::Degraded => "degraded",
                HealthState::Down => "down",
            },
            Err(_) => "failed",
        };
        let component = invocation.component.as_deref().unwrap_or("");
        self.shared
            .metrics
            .health_check(component, state, &invocation.timings);
        self.shared.count_trap(component, &invocation.result);
        invocation
    }

    /// Instantiates every loaded component once (readiness): name and outcome.
    pub async fn instantiate_all(&self) -> Vec<(String, Result<(), String>)> {
        let registry = self.shared.registry.load_full();
        let mut results = Vec::new();
        for loaded in registry.components() {
            results.push((
                loaded.name.to_string(),
                self.shared.try_instantiate(loaded).await,
            ));
        }
        results
    }

    /// Waits until no invocation runs (shutdown, once the listeners are closed and the
    /// connections shutting down gracefully). A request the HTTP layer had already taken
    /// in may still start a call afterwards, and is served: refusing it would fail a call
    /// the client had every reason to expect answered. False if calls were still running
    /// at `timeout`.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = self.shared.limits.max_concurrency;
        tokio::time::timeout(timeout, self.shared.slots.acquire_many(all))
            .await
            .is_ok()
    }
}

impl Shared {
    /// Checks a call's arguments before any instance exists: their size, then the
    /// tool's input schema. The arguments as the component will receive them, and the
    /// source its queries go to.
    fn admit(
        &self,
        loaded: &Loaded,
        tool: &str,
        arguments: &Value,
    ) -> Result<(String, Arc<DbSource>), Fault> {
        let json = arguments.to_string();
        let max = loaded.limits.max_argument_bytes;
        if json.len() > max {
            return Err(Fault::InvalidArguments(format!(
                "the arguments are {} bytes; the limit is {max}",
                json.len()
            )));
        }
        // A declared SQL tool reads the source its file names; its component receives
        // the statement and the parameters.
        if let Some(declared) = loaded.sql.get(tool) {
            if let Some(schema) = loaded.schemas.get(tool) {
                schema.check(arguments).map_err(Fault::InvalidArguments)?;
            }
            let source = self.sources.pick(declared.source.as_deref()).map_err(|e| {
                Fault::Unavailable(format!(
                    "the database this tool reads is no longer served: {e}"
                ))
            })?;
            let envelope = declared
                .envelope(arguments)
                .map_err(Fault::InvalidArguments)?;
            return Ok((envelope, source));
        }
        let (source, arguments, json) = if self.sources.is_named() {
            let (source, rest) = database_arg::take(&self.sources, arguments)?;
            let json = rest.to_string();
            (source, std::borrow::Cow::Owned(rest), json)
        } else {
            (
                self.sources.first(),
                std::borrow::Cow::Borrowed(arguments),
                json,
            )
        };
        if let Some(schema) = loaded.schemas.get(tool) {
            schema.check(&arguments).map_err(Fault::InvalidArguments)?;
        }
        Ok((json, source))
    }

    /// Whether `tool` (in `registry`) takes the host's `database` argument: a
    /// component's tool, when a sources file is served.
    fn takes_database(&self, registry: &Registry, tool: &str) -> bool {
        self.sources.is_named()
            && registry
                .tool(tool)
                .is_some_and(|loaded| !loaded.sql.contains_key(tool))
    }

    /// The pool a call's queries use: the source's, or its pool of the caller's role;
    /// refused if the caller may not use the source.
    fn pool_for(&self, source: &DbSource, caller: AsCaller<'_>) -> Result<Db, Fault> {
        if let Some(allowed) = caller.databases
            && !allowed.contains(&*source.name)
        {
            let mut names: Vec<&str> = allowed.iter().map(String::as_str).collect();
            names.truncate(20);
            return Err(Fault::InvalidArguments(format!(
                "this caller may not use database `{}`; it may use: {}",
                source.name,
                names.join(", ")
            )));
        }
        match (caller.login, self.roles.get()) {
            (Some(login), Some(roles)) => source
                .db
                .for_role(login, &roles.pools)
                .map_err(|e| Fault::Unavailable(e.to_string())),
            _ => Ok(source.db.clone()),
        }
    }

    /// The default source's pool: for instances that run no call (listing, probing).
    fn default_db(&self) -> Db {
        self.sources.first().db.clone()
    }

    fn count_trap<T>(&self, component: &str, result: &Result<T, Fault>) {
        match result {
            Err(Fault::Trap { kind, .. }) => self.metrics.trap(component, kind.as_str()),
            Err(Fault::Timeout(_)) => self.metrics.trap(component, "timeout"),
            _ => {}
        }
    }

    /// A fresh store whose guest yields to other tasks every epoch tick and traps once
    /// `deadline` has passed.
    fn new_store(
        &self,
        component: Arc<str>,
        limits: &Limits,
        deadline: Instant,
        db: Db,
    ) -> Store<HostState> {
        let state = HostState::new(component, db, limits, self.metrics.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}
