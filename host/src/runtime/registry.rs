//! The live set of components. A [`Registry`] is immutable; the runtime swaps whole
//! registries behind one `ArcSwap`, so a call reads it lock-free and keeps its
//! `Arc<Loaded>` for as long as it runs.

use super::bindings::{HealthComponentPre, ToolComponentPre};
use super::limits::Limits;
use super::schema::ArgumentSchema;
use super::state::HostState;
use crate::invocation::{ComponentInfo, ToolSpec};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Where a component's bytes came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// built into the binary
    Builtin,
    /// a file in the components directory
    File(PathBuf),
    /// put through the admin API
    Admin,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin => f.write_str("builtin"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Admin => f.write_str("admin"),
        }
    }
}

/// Which world a component implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    Tool,
    Health,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Tool => "tool-component",
            World::Health => "health-component",
        }
    }
}

pub(super) enum Pre {
    Tool(ToolComponentPre<HostState>),
    Health(HealthComponentPre<HostState>),
}

/// A compiled, validated component ready to instantiate.
pub struct Loaded {
    pub name: Arc<str>,
    /// hex SHA-256 of the component bytes
    pub digest: Arc<str>,
    pub source: Source,
    pub size: usize,
    pub loaded_at: SystemTime,
    pub world: World,
    /// the tools it exports (empty for a health component)
    pub tools: Vec<ToolSpec>,
    /// the server's limits, refined by the component's own `NAME.toml`
    pub limits: Arc<Limits>,
    /// each tool's compiled input schema
    pub(super) schemas: HashMap<String, ArgumentSchema>,
    /// the text of its `NAME.toml`, when it came with one
    pub config: Option<String>,
    /// invocations served by this version
    pub calls: AtomicU64,
    pub(super) pre: Pre,
    /// the declared SQL tools of a `.sql.toml` file, by name (empty for a compiled
    /// component)
    pub(super) sql: HashMap<String, crate::sql_tools::SqlTool>,
}

/// What a component file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// a compiled WebAssembly component (`NAME.wasm`)
    Wasm,
    /// declared SQL tools (`NAME.sql.toml`), served by the built-in `sql-tool` component
    Sql,
}

impl Kind {
    /// What bytes put through the admin API hold: a SQL tool file is UTF-8 text with a
    /// `[[tool]]` table; anything else is judged as a component, so stray bytes are refused
    /// as "not a valid component" rather than as a TOML syntax error.
    pub fn sniff(bytes: &[u8]) -> Self {
        let declares_tool = |text: &str| {
            text.lines().any(|line| {
                let line: String = line.chars().filter(|c| !c.is_whitespace()).collect();
                line.starts_with("[[tool]]")
            })
        };
        match std::str::from_utf8(bytes) {
            Ok(text) if !bytes.starts_with(b"\0asm") && declares_tool(text) => Kind::Sql,
            _ => Kind::Wasm,
        }
    }
}

impl Loaded {
    pub fn info(&self) -> ComponentInfo {
        ComponentInfo {
            name: self.name.to_string(),
            digest: self.digest.to_string(),
            world: self.world.as_str(),
            source: self.source.to_string(),
            size: self.size,
            loaded_at: self
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            calls: self.calls.load(Ordering::Relaxed),
            tools: self.tools.iter().map(|t| t.name.clone()).collect(),
        }
    }
}

#[derive(Default)]
pub struct Registry {
    components: BTreeMap<Arc<str>, Arc<Loaded>>,
    /// tool name → component; a BTreeMap so `tools/list` order is stable
    tools: BTreeMap<String, Arc<Loaded>>,
    health: Option<Arc<Loaded>>,
}

impl Registry {
    /// Builds a registry, refusing two components that export the same tool name or
    /// two health components.
    pub fn new(components: impl IntoIterator<Item = Arc<Loaded>>) -> Result<Self, String> {
        let mut registry = Registry::default();
        for loaded in components {
            for tool in &loaded.tools {
                if let Some(other) = registry.tools.get(&tool.name) {
                    return Err(format!(
                        "tool `{}` is exported by both `{}` and `{}`",
                        tool.name, other.name, loaded.name
                    ));
                }
                registry.tools.insert(tool.name.clone(), loaded.clone());
            }
            if loaded.world == World::Health {
                if let Some(other) = &registry.health {
                    return Err(format!(
                        "`{}` and `{}` are both health components; keep one",
                        other.name, loaded.name
                    ));
                }
                registry.health = Some(loaded.clone());
            }
            registry.components.insert(loaded.name.clone(), loaded);
        }
        Ok(registry)
    }

    pub fn tool(&self, name: &str) -> Option<&Arc<Loaded>> {
        self.tools.get(name)
    }

    /// Every tool, ordered by name.
    pub fn tools(&self) -> impl Iterator<Item = &ToolSpec> {
        self.tools
            .iter()
            .filter_map(|(name, loaded)| loaded.tools.iter().find(|t| &t.name == name))
    }

    pub fn health(&self) -> Option<&Arc<Loaded>> {
        self.health.as_ref()
    }

    /// Every component, ordered by name.
    pub fn components(&self) -> impl Iterator<Item = &Arc<Loaded>> {
        self.components.values()
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn only_text_with_a_tool_table_is_a_sql_tool_file() {
        assert_eq!(Kind::sniff(b"\0asm\x0d\0\x01\0"), Kind::Wasm);
        assert_eq!(Kind::sniff(b"not a component"), Kind::Wasm);
        assert_eq!(Kind::sniff(b"[[tool]"), Kind::Wasm);
        assert_eq!(Kind::sniff(b"\xff[[tool]]"), Kind::Wasm);
        assert_eq!(Kind::sniff(b"# tools\n[[tool]]\nname ="), Kind::Sql);
        assert_eq!(Kind::sniff(b"  [[ tool ]]  # first\n"), Kind::Sql);
    }
}
