//! SQL tools declared in a `NAME.sql.toml` file: parsed, each statement prepared against
//! the database (Postgres reports its parameter and column types), checked against the
//! declaration, and served by the built-in `sql-tool` component, which runs the statement
//! through the guard with the arguments bound as parameters, never spliced into the SQL.
//!
//! ```toml
//! [[tool]]
//! name = "orders_of_customer"
//! description = "A customer's orders, newest first"
//! statement = "SELECT id, total, placed_at FROM orders WHERE customer_id = $1 ORDER BY placed_at DESC LIMIT $2"
//! param = [
//!   { name = "customer_id", type = "integer", minimum = 1, description = "The customer's id" },
//!   { name = "limit", type = "integer", default = 20, minimum = 1, maximum = 100 },
//! ]
//! ```
//!
//! With a sources file (`--sources`), `source = "NAME"` (at the top of the file, or in a
//! `[[tool]]`) names the database a tool reads; without it, the default (first) source.

use crate::db::{Description, QueryError, Sources};
use crate::invocation::{Annotations, ToolSpec};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio_postgres::types::{Kind, Type};

mod decl;
mod envelope;
#[cfg(test)]
mod tests;
mod types;

use decl::{parse, toml_to_json};
use types::{column_schema, fits_json, fits_type, param_schema, suggested_cast, type_name};

/// What names a file of declared SQL tools in the components directory.
pub const SUFFIX: &str = ".sql.toml";
/// Tools one file may declare.
const MAX_TOOLS: usize = 200;
/// Elements one array argument may hold.
const MAX_ITEMS: u64 = 1000;

/// Why a file of SQL tools was refused: where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {reason}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct DeclarationError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
    /// the database could not be asked: the same file may load later
    pub retry: bool,
}

/// One declared tool, ready to serve.
#[derive(Debug)]
pub struct SqlTool {
    pub spec: ToolSpec,
    statement: Arc<str>,
    params: Vec<Param>,
    max_rows: Option<u32>,
    /// the source it reads (None: the default)
    pub source: Option<Arc<str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// the source of every tool that names none
    source: Option<String>,
    #[serde(default)]
    tool: Vec<toml::Spanned<Decl>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decl {
    name: String,
    title: Option<String>,
    description: String,
    statement: toml::Spanned<String>,
    #[serde(default)]
    param: Vec<toml::Spanned<ParamDecl>>,
    /// at most this many rows per call (the server's cap still applies)
    max_rows: Option<u32>,
    /// the source it reads (`--sources`)
    source: Option<String>,
    #[serde(default)]
    annotations: AnnotationsDecl,
}

/// The hints an operator may set; a declared tool is read-only and never destructive.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnotationsDecl {
    #[serde(default = "yes")]
    idempotent: bool,
    #[serde(default)]
    open_world: bool,
}

impl Default for AnnotationsDecl {
    fn default() -> Self {
        Self {
            idempotent: true,
            open_world: false,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamDecl {
    name: String,
    #[serde(rename = "type")]
    ty: ParamType,
    description: Option<String>,
    required: Option<bool>,
    default: Option<toml::Value>,
    #[serde(rename = "enum")]
    allowed: Option<Vec<toml::Value>>,
    minimum: Option<toml::Value>,
    maximum: Option<toml::Value>,
    pattern: Option<String>,
    #[serde(alias = "maxLength")]
    max_length: Option<u32>,
    #[serde(alias = "minLength")]
    min_length: Option<u32>,
    #[serde(alias = "maxItems")]
    max_items: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
    Date,
    Time,
    Timestamp,
}

const TYPE_NAMES: &str = "string, integer, number, boolean, date, time, timestamp, or one of \
                          these followed by [] for an array";

/// A parameter's declared type: a scalar or an array of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct ParamType {
    scalar: Scalar,
    array: bool,
}

impl TryFrom<String> for ParamType {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let (base, array) = match text.strip_suffix("[]") {
            Some(base) => (base, true),
            None => (text.as_str(), false),
        };
        let scalar = match base {
            "string" | "text" => Scalar::String,
            "integer" => Scalar::Integer,
            "number" => Scalar::Number,
            "boolean" => Scalar::Boolean,
            "date" => Scalar::Date,
            "time" => Scalar::Time,
            "timestamp" => Scalar::Timestamp,
            _ => return Err(format!("unknown type `{text}`: use {TYPE_NAMES}")),
        };
        Ok(Self { scalar, array })
    }
}

impl std::fmt::Display for ParamType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base = match self.scalar {
            Scalar::String => "string",
            Scalar::Integer => "integer",
            Scalar::Number => "number",
            Scalar::Boolean => "boolean",
            Scalar::Date => "date",
            Scalar::Time => "time",
            Scalar::Timestamp => "timestamp",
        };
        write!(f, "{base}{}", if self.array { "[]" } else { "" })
    }
}

/// A parameter as served: how to turn its argument into `$n`.
#[derive(Debug)]
struct Param {
    name: String,
    ty: ParamType,
    default: Option<Value>,
}

/// A parsed declaration, not yet checked against the database.
struct Parsed {
    decl: Decl,
    line: usize,
    statement_line: usize,
    /// the tool's source, or the file's
    source: Option<String>,
}

/// Parses `text` (the file `file`) and checks each statement against the database it
/// names: every declared tool, or the first reason the file cannot be served.
pub async fn load(
    sources: &Sources,
    file: &str,
    text: &str,
    component: &Arc<str>,
) -> Result<Vec<SqlTool>, DeclarationError> {
    let parsed = parse(file, text)?;
    let mut described = Vec::with_capacity(parsed.len());
    for p in &parsed {
        // An unknown source may be added by a reload of the sources file: tried again.
        let source = resolve(sources, p).map_err(|reason| DeclarationError {
            file: file.to_owned(),
            line: Some(p.line),
            reason: format!("tool `{}`: {reason}", p.decl.name),
            retry: sources.is_named(),
        })?;
        // (One statement at a time: a file's tools may read different sources.)
        let mut one = source
            .db
            .describe(&[p.decl.statement.get_ref().as_str()])
            .await
            .map_err(|e| DeclarationError {
                file: file.to_owned(),
                line: None,
                reason: format!(
                    "cannot check the statements against the database{}: {e}",
                    if sources.is_named() {
                        format!(" `{}`", source.name)
                    } else {
                        String::new()
                    }
                ),
                retry: true,
            })?;
        let answer = one
            .pop()
            .unwrap_or_else(|| Err(QueryError::Unavailable("no description came back".into())));
        described.push((answer, source.name.clone()));
    }
    parsed
        .into_iter()
        .zip(described)
        .map(|(p, (description, source))| {
            let tool = p.decl.name.clone();
            let at = |line: usize, reason: String| DeclarationError {
                file: file.to_owned(),
                line: Some(line),
                reason: format!("tool `{tool}`: {reason}"),
                retry: false,
            };
            let description = description.map_err(|e| DeclarationError {
                retry: matches!(e, QueryError::Unavailable(_) | QueryError::Timeout),
                ..at(p.statement_line, statement_error(&e))
            })?;
            // Pinned by name to the source it was described on (not "the first", which
            // a reload may change).
            let named = sources.is_named().then_some(source);
            let mut tool = build(p.decl, &description, component).map_err(|r| at(p.line, r))?;
            tool.source = named;
            Ok(tool)
        })
        .collect()
}

/// The source a declared tool names, among those served.
fn resolve(sources: &Sources, p: &Parsed) -> Result<Arc<crate::db::Source>, String> {
    match (&p.source, sources.is_named()) {
        (None, _) => Ok(sources.first()),
        (Some(name), false) => Err(format!(
            "it names source `{}`, but this server serves one database (--database-url); \
             serve a sources file (--sources) that names it",
            name.chars().take(64).collect::<String>()
        )),
        (Some(name), true) => sources.pick(Some(name)).map_err(|e| e.to_string()),
    }
}

fn statement_error(error: &QueryError) -> String {
    match error {
        QueryError::Refused(reason) => format!("the statement is refused: {reason}"),
        QueryError::Database(e) => {
            let mut text = format!(
                "Postgres rejects the statement: {} (SQLSTATE {})",
                e.message, e.sqlstate
            );
            if let Some(position) = e.position {
                text.push_str(&format!(" at character {position}"));
            }
            if let Some(hint) = &e.hint {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        other => format!("cannot check the statement: {other}"),
    }
}

/// Checks one declaration against what Postgres said of its statement and derives the
/// tool's schemas.
fn build(decl: Decl, description: &Description, component: &Arc<str>) -> Result<SqlTool, String> {
    let declared = decl.param.len();
    let used = description.params.len();
    if declared != used {
        return Err(format!(
            "the statement takes {used} parameter{} ({}) but {declared} {} declared; declare one \
             [[tool.param]] per $n, in order",
            if used == 1 { "" } else { "s" },
            match used {
                0 => "none".to_owned(),
                1 => "$1".to_owned(),
                n => format!("$1..${n}"),
            },
            if declared == 1 { "is" } else { "are" },
        ));
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut params = Vec::with_capacity(declared);
    for (i, (spanned, pg)) in decl.param.into_iter().zip(&description.params).enumerate() {
        let p = spanned.into_inner();
        if !fits_type(p.ty, pg) {
            return Err(format!(
                "parameter ${} `{}` is declared {} but the statement uses it as {}; change its \
                 type or cast it in the statement (${}::{})",
                i + 1,
                p.name,
                p.ty,
                type_name(pg),
                i + 1,
                suggested_cast(p.ty),
            ));
        }
        let default = p.default.as_ref().map(toml_to_json);
        let is_required = p.required.unwrap_or(default.is_none());
        properties.insert(
            p.name.clone(),
            param_schema(&p, default.as_ref(), is_required, pg),
        );
        if is_required {
            required.push(Value::String(p.name.clone()));
        }
        params.push(Param {
            name: p.name,
            ty: p.ty,
            default,
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut columns = Map::new();
    for (name, ty) in &description.columns {
        if seen.contains(&name.as_str()) {
            return Err(format!(
                "the statement returns two columns named `{name}`; give them distinct aliases"
            ));
        }
        seen.push(name);
        columns.insert(name.clone(), column_schema(ty));
    }
    let column_names: Vec<Value> = seen
        .iter()
        .map(|n| Value::String((*n).to_owned()))
        .collect();
    let input_schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    let output_schema = json!({
        "type": "object",
        "properties": {
            "rows": {"type": "array", "items": {
                "type": "object",
                "properties": columns,
                "required": column_names,
                "additionalProperties": false,
            }},
            "row_count": {"type": "integer"},
            "truncated": {"type": "boolean", "description": "true when the row cap cut the result short"},
        },
        "required": ["rows", "row_count", "truncated"],
    });
    let (Value::Object(input_schema), Value::Object(output_schema)) = (input_schema, output_schema)
    else {
        unreachable!("json! of an object literal is an object");
    };
    Ok(SqlTool {
        spec: ToolSpec {
            name: decl.name,
            title: decl.title,
            description: decl.description,
            input_schema: Arc::new(input_schema),
            output_schema: Some(Arc::new(output_schema)),
            annotations: Annotations {
                read_only: true,
                destructive: false,
                idempotent: decl.annotations.idempotent,
                open_world: decl.annotations.open_world,
            },
            component: component.clone(),
        },
        statement: Arc::from(decl.statement.into_inner()),
        params,
        max_rows: decl.max_rows,
        source: None,
    })
}
