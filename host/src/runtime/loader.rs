//! Turns component bytes into a [`Loaded`]: compile, detect the world, pre-instantiate
//! against our linker, instantiate once and ask it for its tools, validate them. A
//! component that fails any step is rejected with the reason.

use super::Shared;
use super::bindings::{HealthComponentPre, ToolComponentPre, tools_export};
use super::limits::Limits;
use super::registry::{Loaded, Pre, Source, World};
use super::schema::ArgumentSchema;
use crate::invocation::{Annotations, ToolSpec};
use crate::sql_tools;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime};
use wasmtime::component::Component;

const TOOLS_EXPORT: &str = "mcp-sandbox:host/tools@";
const HEALTH_EXPORT: &str = "mcp-sandbox:host/health@";
/// MCP (2025-11-25) tool names: 1-128 of `A-Z a-z 0-9 _ - .`.
const MAX_TOOL_NAME: usize = 128;

#[derive(Debug, thiserror::Error)]
#[error("component `{name}` rejected: {reason}")]
pub struct LoadError {
    pub name: String,
    pub reason: String,
    /// it may load unchanged later (the database was unavailable to check it)
    pub retry: bool,
}

pub(super) async fn load(
    shared: &Shared,
    name: &str,
    bytes: Arc<[u8]>,
    source: Source,
    limits: Limits,
) -> Result<Loaded, LoadError> {
    let fail = |reason: String| LoadError {
        name: name.to_owned(),
        reason,
        retry: false,
    };
    let digest = hex_sha256(&bytes);
    let engine = shared.engine.clone();
    let compile_bytes = bytes.clone();
    // Compiling takes tens of milliseconds of CPU: keep it off the async workers.
    let component = tokio::task::spawn_blocking(move || Component::new(&engine, &*compile_bytes))
        .await
        .map_err(|e| fail(format!("compiler task failed: {e}")))?
        .map_err(|e| {
            fail(format!(
                "not a valid component: {}",
                one_line(&format!("{e:#}"))
            ))
        })?;

    let world = detect_world(shared, &component).map_err(fail)?;
    let name: Arc<str> = Arc::from(name);
    let limits = Arc::new(limits);
    let (pre, tools) = match world {
        World::Tool => {
            let pre = shared
                .tool_linker
                .instantiate_pre(&component)
                .and_then(ToolComponentPre::new)
                .map_err(|e| fail(format!("does not fit the tool-component world: {e:#}")))?;
            let tools = list_tools(shared, &name, &limits, &pre)
                .await
                .map_err(fail)?;
            (Pre::Tool(pre), tools)
        }
        World::Health => {
            let pre = shared
                .health_linker
                .instantiate_pre(&component)
                .and_then(HealthComponentPre::new)
                .map_err(|e| fail(format!("does not fit the health-component world: {e:#}")))?;
            (Pre::Health(pre), Vec::new())
        }
    };
    // With a sources file the host adds `database` to every tool: a tool that declares
    // its own would have it taken away before it runs.
    if shared.sources.is_named()
        && let Some(t) = tools
            .iter()
            .find(|t| super::database_arg::declared_by(&t.input_schema))
    {
        return Err(fail(format!(
            "tool `{}` declares a `{}` argument, which this server reserves: it serves a \
             sources file (--sources) and chooses the database by it; rename the argument",
            t.name,
            super::database_arg::NAME
        )));
    }
    let schemas = tools
        .iter()
        .map(|t| {
            ArgumentSchema::compile(&t.input_schema)
                .map(|s| (t.name.clone(), s))
                .map_err(|e| fail(format!("tool `{}` input schema: {e}", t.name)))
        })
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(Loaded {
        name,
        digest: Arc::from(digest),
        source,
        size: bytes.len(),
        loaded_at: SystemTime::now(),
        world,
        tools,
        limits,
        schemas,
        config: None,
        calls: AtomicU64::new(0),
        pre,
        sql: HashMap::new(),
    })
}

/// Turns a `.sql.toml` file into a [`Loaded`] served by the built-in `sql-tool`
/// component: the declarations parsed, each statement prepared against the database.
pub(super) async fn load_sql(
    shared: &Shared,
    name: &str,
    bytes: Arc<[u8]>,
    source: Source,
    limits: Limits,
) -> Result<Loaded, LoadError> {
    let fail = |reason: String| LoadError {
        name: name.to_owned(),
        reason,
        retry: false,
    };
    let file = match &source {
        Source::File(path) => path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        ),
        _ => format!("{name}{}", sql_tools::SUFFIX),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        fail(format!(
            "{file}: neither a WebAssembly component nor UTF-8 TOML"
        ))
    })?;
    let component: Arc<str> = Arc::from(name);
    let declared = sql_tools::load(&shared.sources, &file, text, &component)
        .await
        .map_err(|e| LoadError {
            name: name.to_owned(),
            retry: e.retry,
            reason: e.to_string(),
        })?;
    let pre = shared.sql_tool_pre().await.map_err(fail)?;
    let mut tools = Vec::with_capacity(declared.len());
    let mut schemas = HashMap::with_capacity(declared.len());
    let mut sql = HashMap::with_capacity(declared.len());
    for tool in declared {
        let schema = ArgumentSchema::compile(&tool.spec.input_schema).map_err(|e| {
            fail(format!(
                "{file}: tool `{}` input schema: {e}",
                tool.spec.name
            ))
        })?;
        schemas.insert(tool.spec.name.clone(), schema);
        tools.push(tool.spec.clone());
        sql.insert(tool.spec.name.clone(), tool);
    }
    Ok(Loaded {
        name: component,
        digest: Arc::from(hex_sha256(&bytes)),
        source,
        size: bytes.len(),
        loaded_at: SystemTime::now(),
        world: World::Tool,
        tools,
        limits: Arc::new(limits),
        schemas,
        config: None,
        calls: AtomicU64::new(0),
        pre: Pre::Tool(pre),
        sql,
    })
}

impl Shared {
    /// The `sql-tool` component, compiled the first time a `.sql.toml` file loads.
    async fn sql_tool_pre(&self) -> Result<ToolComponentPre<super::state::HostState>, String> {
        self.sql_tool
            .get_or_try_init(|| async {
                let bytes = super::builtin::SQL_TOOL;
                if bytes.is_empty() {
                    return Err("this binary was built without its components \
                                (MCP_SANDBOX_SKIP_GUEST_BUILD), so it cannot serve SQL tools"
                        .to_owned());
                }
                let engine = self.engine.clone();
                let component = tokio::task::spawn_blocking(move || Component::new(&engine, bytes))
                    .await
                    .map_err(|e| format!("compiler task failed: {e}"))?
                    .map_err(|e| format!("the built-in sql-tool component: {e:#}"))?;
                self.tool_linker
                    .instantiate_pre(&component)
                    .and_then(ToolComponentPre::new)
                    .map_err(|e| format!("the built-in sql-tool component: {e:#}"))
            })
            .await
            .cloned()
    }
}

fn detect_world(shared: &Shared, component: &Component) -> Result<World, String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(&shared.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let has = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
    match (has(TOOLS_EXPORT), has(HEALTH_EXPORT)) {
        (true, false) => Ok(World::Tool),
        (false, true) => Ok(World::Health),
        (true, true) => {
            Err("exports both tools and health; a component is one or the other".into())
        }
        (false, false) => Err(format!(
            "wrong world: it exports neither `{TOOLS_EXPORT}0.1.0` nor `{HEALTH_EXPORT}0.1.0` (exports: {})",
            if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            }
        )),
    }
}

/// Instantiates the component once, under the usual limits, and validates its tools.
async fn list_tools(
    shared: &Shared,
    name: &Arc<str>,
    limits: &Limits,
    pre: &ToolComponentPre<super::state::HostState>,
) -> Result<Vec<ToolSpec>, String> {
    let deadline = Instant::now() + shared.limits.health_timeout;
    // A spare slot, never one of the calls': a swap succeeds while calls fill them all.
    let _permit = tokio::time::timeout_at(deadline.into(), shared.spare.acquire())
        .await
        .map_err(|_| "every spare sandbox slot stayed busy".to_owned())?
        .map_err(|_| "the server is shutting down".to_owned())?;
    let mut store = shared.new_store(name.clone(), limits, deadline, shared.default_db());
    let instance = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| format!("instantiating failed: {e:#}"))?;
    let listed = instance
        .mcp_sandbox_host_tools()
        .call_list(&mut store)
        .await
        .map_err(|e| format!("`list` trapped: {e:#}"))?;
    if listed.is_empty() {
        return Err("exports no tools".into());
    }
    let mut tools: Vec<ToolSpec> = Vec::with_capacity(listed.len());
    for tool in listed {
        let spec = validate(tool, name)?;
        if tools.iter().any(|t| t.name == spec.name) {
            return Err(format!("lists tool `{}` twice", spec.name));
        }
        tools.push(spec);
    }
    Ok(tools)
}

fn validate(tool: tools_export::Tool, component: &Arc<str>) -> Result<ToolSpec, String> {
    let name_ok = !tool.name.is_empty()
        && tool.name.len() <= MAX_TOOL_NAME
        && tool
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !name_ok {
        return Err(format!(
            "tool name {:?} is not 1-{MAX_TOOL_NAME} characters of A-Z a-z 0-9 _ - .",
            tool.name
        ));
    }
    let input_schema = schema_object(&tool.input_schema)
        .map_err(|e| format!("tool `{}` input schema: {e}", tool.name))?;
    if input_schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(format!(
            "tool `{}` input schema must have \"type\": \"object\"",
            tool.name
        ));
    }
    let output_schema = tool
        .output_schema
        .as_deref()
        .map(schema_object)
        .transpose()
        .map_err(|e| format!("tool `{}` output schema: {e}", tool.name))?;
    Ok(ToolSpec {
        name: tool.name,
        title: tool.title,
        description: tool.description,
        input_schema: Arc::new(input_schema),
        output_schema: output_schema.map(Arc::new),
        annotations: Annotations {
            read_only: tool.annotations.read_only,
            destructive: tool.annotations.destructive,
            idempotent: tool.annotations.idempotent,
            open_world: tool.annotations.open_world,
        },
        component: component.clone(),
    })
}

fn schema_object(json: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// wasmparser's messages embed multi-line `Debug` output; logs and API errors want one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
