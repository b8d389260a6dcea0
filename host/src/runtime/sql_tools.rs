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

use super::registry::{Annotations, ToolSpec};
use crate::db::{Db, Description, QueryError};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio_postgres::types::{Kind, Type};

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
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
}

/// Parses `text` (the file `file`) and checks each statement against the database:
/// every declared tool, or the first reason the file cannot be served.
pub async fn load(
    db: &Db,
    file: &str,
    text: &str,
    component: &Arc<str>,
) -> Result<Vec<SqlTool>, DeclarationError> {
    let parsed = parse(file, text)?;
    let statements: Vec<&str> = parsed
        .iter()
        .map(|p| p.decl.statement.get_ref().as_str())
        .collect();
    let described = db
        .describe(&statements)
        .await
        .map_err(|e| DeclarationError {
            file: file.to_owned(),
            line: None,
            reason: format!("cannot check the statements against the database: {e}"),
            retry: true,
        })?;
    parsed
        .into_iter()
        .zip(described)
        .map(|(p, description)| {
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
            build(p.decl, &description, component).map_err(|reason| at(p.line, reason))
        })
        .collect()
}

/// The file's tools, syntax and declarations checked, in file order.
fn parse(file: &str, text: &str) -> Result<Vec<Parsed>, DeclarationError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let fail = |line: Option<usize>, reason: String| DeclarationError {
        file: file.to_owned(),
        line,
        reason,
        retry: false,
    };
    let parsed: File = toml::from_str(text)
        .map_err(|e| fail(e.span().map(|s| line_of(s.start)), e.message().to_owned()))?;
    if parsed.tool.is_empty() {
        return Err(fail(
            None,
            "declares no tool: add a [[tool]] table with name, description and statement".into(),
        ));
    }
    if parsed.tool.len() > MAX_TOOLS {
        return Err(fail(
            None,
            format!(
                "declares {} tools; one file may declare at most {MAX_TOOLS}",
                parsed.tool.len()
            ),
        ));
    }
    let mut tools: Vec<Parsed> = Vec::with_capacity(parsed.tool.len());
    for spanned in parsed.tool {
        let line = line_of(spanned.span().start);
        let decl = spanned.into_inner();
        let statement_line = line_of(decl.statement.span().start);
        check_declaration(&decl).map_err(|reason| fail(Some(line), reason))?;
        if tools.iter().any(|t| t.decl.name == decl.name) {
            return Err(fail(
                Some(line),
                format!("tool `{}` is declared twice", decl.name),
            ));
        }
        tools.push(Parsed {
            decl,
            line,
            statement_line,
        });
    }
    Ok(tools)
}

/// What can be checked without the database.
fn check_declaration(decl: &Decl) -> Result<(), String> {
    let name = &decl.name;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !name_ok {
        return Err(format!(
            "tool name {name:?} is not 1-64 characters of A-Z a-z 0-9 _ -"
        ));
    }
    if decl.description.trim().is_empty() {
        return Err(format!(
            "tool `{name}`: the description is empty; models choose tools by it"
        ));
    }
    if decl.max_rows == Some(0) {
        return Err(format!("tool `{name}`: max_rows must be at least 1"));
    }
    for (i, spanned) in decl.param.iter().enumerate() {
        let p = spanned.get_ref();
        let at =
            |reason: String| format!("tool `{name}`, parameter ${} `{}`: {reason}", i + 1, p.name);
        let param_ok = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !param_ok {
            return Err(at(
                "a parameter name is 1-64 of a-z 0-9 _, not starting with a digit".into(),
            ));
        }
        if decl.param[..i].iter().any(|q| q.get_ref().name == p.name) {
            return Err(at("declared twice".into()));
        }
        if p.required == Some(true) && p.default.is_some() {
            return Err(at(
                "a parameter with a default is not required; drop one".into()
            ));
        }
        if p.default.is_some() && p.ty.array {
            return Err(at("an array parameter takes no default".into()));
        }
        let numeric = matches!(p.ty.scalar, Scalar::Integer | Scalar::Number);
        if (p.minimum.is_some() || p.maximum.is_some()) && !numeric {
            return Err(at(format!(
                "minimum and maximum apply to integer and number, not {}",
                p.ty
            )));
        }
        let textual = matches!(p.ty.scalar, Scalar::String);
        if (p.pattern.is_some() || p.max_length.is_some() || p.min_length.is_some()) && !textual {
            return Err(at(format!(
                "pattern, min_length and max_length apply to string, not {}",
                p.ty
            )));
        }
        if p.max_items.is_some() && !p.ty.array {
            return Err(at("max_items applies to arrays".into()));
        }
        // The schema compiles later; its messages are worse than these.
        for (what, value) in [("minimum", &p.minimum), ("maximum", &p.maximum)] {
            if let Some(v) = value
                && !matches!(v, toml::Value::Integer(_) | toml::Value::Float(_))
            {
                return Err(at(format!("{what} must be a number")));
            }
        }
        if let Some(pattern) = &p.pattern
            && let Err(e) = regex_check(pattern)
        {
            return Err(at(format!("pattern: {e}")));
        }
        check_bounds(p).map_err(at)?;
        let scalar = ParamType {
            array: false,
            ..p.ty
        };
        for value in p.default.iter().chain(p.allowed.iter().flatten()) {
            let json = toml_to_json(value);
            if !fits_json(scalar, &json) {
                return Err(at(format!("{json} is not a {scalar}")));
            }
        }
    }
    Ok(())
}

/// The constraints agree with each other, and a default meets them: otherwise the
/// schema would advertise a default that the check refuses, or no value at all.
fn check_bounds(p: &ParamDecl) -> Result<(), String> {
    let number = |v: &toml::Value| match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    };
    let (low, high) = (
        p.minimum.as_ref().and_then(number),
        p.maximum.as_ref().and_then(number),
    );
    if low.is_some_and(|v| !v.is_finite()) || high.is_some_and(|v| !v.is_finite()) {
        return Err("minimum and maximum must be finite numbers".into());
    }
    if let (Some(low), Some(high)) = (low, high)
        && low > high
    {
        return Err(format!("minimum {low} is above maximum {high}"));
    }
    if let (Some(low), Some(high)) = (p.min_length, p.max_length)
        && low > high
    {
        return Err(format!("min_length {low} is above max_length {high}"));
    }
    let Some(default) = &p.default else {
        return Ok(());
    };
    if let Some(n) = number(default)
        && (!n.is_finite() || low.is_some_and(|low| n < low) || high.is_some_and(|high| n > high))
    {
        return Err(format!("the default {n} is outside minimum and maximum"));
    }
    if let Some(allowed) = &p.allowed
        && !allowed.contains(default)
    {
        return Err(format!("the default {default} is not one of enum"));
    }
    if let toml::Value::String(text) = default {
        let length = text.chars().count() as u32;
        if p.min_length.is_some_and(|min| length < min)
            || p.max_length.is_some_and(|max| length > max)
        {
            return Err("the default's length is outside min_length and max_length".into());
        }
        if let Some(pattern) = &p.pattern {
            let schema = json!({"type": "string", "pattern": pattern});
            if jsonschema::validator_for(&schema).is_ok_and(|v| !v.is_valid(&json!(text))) {
                return Err(format!("the default {text:?} does not match pattern"));
            }
        }
    }
    Ok(())
}

/// jsonschema compiles `pattern` as an ECMA regex; refuse one it would not take.
fn regex_check(pattern: &str) -> Result<(), String> {
    let schema = json!({"type": "string", "pattern": pattern});
    jsonschema::validator_for(&schema)
        .map(drop)
        .map_err(|e| e.to_string())
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
    })
}

fn param_schema(p: &ParamDecl, default: Option<&Value>, required: bool, pg: &Type) -> Value {
    let mut item = Map::new();
    let (ty, format, pattern) = match p.ty.scalar {
        Scalar::String => ("string", None, None),
        Scalar::Integer => ("integer", None, None),
        Scalar::Number => ("number", None, None),
        Scalar::Boolean => ("boolean", None, None),
        // ISO 8601 only: Postgres's input also takes `now`, `today`, `infinity` and
        // locale-dependent orders, which a model should not have to guess.
        Scalar::Date => ("string", Some("date"), Some(r"^\d{4}-\d{2}-\d{2}$")),
        Scalar::Time => (
            "string",
            Some("time"),
            Some(r"^\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([+-]\d{2}(:\d{2})?|Z)?$"),
        ),
        Scalar::Timestamp => (
            "string",
            Some("date-time"),
            Some(
                r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([+-]\d{2}(:\d{2})?|Z)?)?$",
            ),
        ),
    };
    item.insert("type".into(), ty.into());
    if let Some(format) = format {
        item.insert("format".into(), format.into());
    }
    if let Some(pattern) = p.pattern.as_deref().or(pattern) {
        item.insert("pattern".into(), pattern.into());
    }
    for (key, value) in [("minimum", &p.minimum), ("maximum", &p.maximum)] {
        if let Some(v) = value {
            item.insert(key.into(), toml_to_json(v));
        }
    }
    if let Some(n) = p.max_length {
        item.insert("maxLength".into(), n.into());
    }
    if let Some(n) = p.min_length {
        item.insert("minLength".into(), n.into());
    }
    if let Some(values) = &p.allowed {
        item.insert("enum".into(), values.iter().map(toml_to_json).collect());
    }
    let mut schema = if p.ty.array {
        let mut array = Map::new();
        array.insert("type".into(), "array".into());
        array.insert("items".into(), Value::Object(item));
        array.insert(
            "maxItems".into(),
            p.max_items.map_or(MAX_ITEMS, u64::from).into(),
        );
        array
    } else {
        item
    };
    if !required && default.is_none() {
        // Absent or null: SQL NULL.
        let ty = schema.remove("type").unwrap_or(Value::Null);
        schema.insert("type".into(), json!([ty, "null"]));
        if let Some(Value::Array(values)) = schema.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    if let Some(default) = default {
        schema.insert("default".into(), default.clone());
    }
    let text = match &p.description {
        Some(text) if !text.is_empty() => format!("{text} (Postgres {})", type_name(pg)),
        _ => format!("Postgres {}", type_name(pg)),
    };
    schema.insert("description".into(), text.into());
    Value::Object(schema)
}

/// A type as SQL writes it: `text[]`, not the catalog's `_text`.
fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_owned(),
    }
}

/// The JSON a column's values take (see the guest SDK's `value_to_json`); always
/// nullable, since a prepared statement does not say which columns can be NULL.
fn column_schema(ty: &Type) -> Value {
    let types: &[&str] = match ty.kind() {
        Kind::Enum(_) => &["string", "null"],
        Kind::Domain(base) => return column_schema(base),
        Kind::Simple => match *ty {
            Type::BOOL => &["boolean", "null"],
            Type::INT2 | Type::INT4 => &["integer", "null"],
            // beyond 2^53, exact digits in a string
            Type::INT8 | Type::OID => &["integer", "string", "null"],
            // NaN and the infinities are strings
            Type::FLOAT4 | Type::FLOAT8 => &["number", "string", "null"],
            Type::NUMERIC
            | Type::MONEY
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::CHAR
            | Type::UUID
            | Type::DATE
            | Type::TIME
            | Type::TIMETZ
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::INTERVAL
            | Type::INET
            | Type::CIDR
            | Type::BYTEA => &["string", "null"],
            _ => return json!({"description": format!("Postgres {}", type_name(ty))}),
        },
        _ => return json!({"description": format!("Postgres {}", type_name(ty))}),
    };
    json!({"type": types, "description": format!("Postgres {}", type_name(ty))})
}

/// Whether a parameter declared `declared` may be given to Postgres where the statement
/// expects `pg`: the argument is sent as text, which Postgres parses as `pg`.
fn fits_type(declared: ParamType, pg: &Type) -> bool {
    match pg.kind() {
        Kind::Domain(base) => return fits_type(declared, base),
        Kind::Array(element) => {
            return declared.array
                && fits_type(
                    ParamType {
                        array: false,
                        ..declared
                    },
                    element,
                );
        }
        Kind::Enum(_) => return !declared.array && declared.scalar == Scalar::String,
        _ => {}
    }
    if declared.array {
        return false;
    }
    match declared.scalar {
        Scalar::String => {
            matches!(
                *pg,
                Type::TEXT
                    | Type::VARCHAR
                    | Type::BPCHAR
                    | Type::NAME
                    | Type::CHAR
                    | Type::UUID
                    | Type::JSON
                    | Type::JSONB
                    | Type::INET
                    | Type::CIDR
                    | Type::MACADDR
                    | Type::MACADDR8
                    | Type::XML
            ) || pg.name() == "citext"
        }
        Scalar::Integer => matches!(
            *pg,
            Type::INT2 | Type::INT4 | Type::INT8 | Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8
        ),
        Scalar::Number => matches!(*pg, Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8),
        Scalar::Boolean => *pg == Type::BOOL,
        Scalar::Date => *pg == Type::DATE,
        Scalar::Time => matches!(*pg, Type::TIME | Type::TIMETZ),
        Scalar::Timestamp => matches!(*pg, Type::TIMESTAMP | Type::TIMESTAMPTZ),
    }
}

fn suggested_cast(ty: ParamType) -> String {
    let base = match ty.scalar {
        Scalar::String => "text",
        Scalar::Integer => "int8",
        Scalar::Number => "numeric",
        Scalar::Boolean => "boolean",
        Scalar::Date => "date",
        Scalar::Time => "time",
        Scalar::Timestamp => "timestamptz",
    };
    format!("{base}{}", if ty.array { "[]" } else { "" })
}

/// Whether a JSON value (a default or an enum member) is of a scalar type.
fn fits_json(ty: ParamType, value: &Value) -> bool {
    match ty.scalar {
        Scalar::Integer => value.is_i64() || value.is_u64(),
        Scalar::Number => value.is_number(),
        Scalar::Boolean => value.is_boolean(),
        Scalar::String | Scalar::Date | Scalar::Time | Scalar::Timestamp => value.is_string(),
    }
}

fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => items.iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

impl SqlTool {
    /// What the `sql-tool` component receives for a call whose arguments passed the
    /// input schema: the statement and each `$n` as text in Postgres's input syntax.
    /// `Err` names an argument Postgres could not take as it is.
    pub fn envelope(&self, arguments: &Value) -> Result<String, String> {
        let params = self
            .params
            .iter()
            .map(|p| {
                let value = arguments
                    .get(&p.name)
                    .filter(|v| !v.is_null())
                    .or(p.default.as_ref());
                let text = match value {
                    None => return Ok(Value::Null),
                    Some(v) if p.ty.array => array_literal(p.ty.scalar, v),
                    Some(v) => scalar_text(p.ty.scalar, v),
                };
                // Postgres text ends at a NUL: refuse it rather than let it cut the
                // value (or an array literal) short.
                if text.contains('\0') {
                    return Err(format!("`/{}`: contains a NUL character", p.name));
                }
                Ok(Value::String(text))
            })
            .collect::<Result<Vec<Value>, String>>()?;
        Ok(json!({
            "statement": &*self.statement,
            "params": params,
            "max_rows": self.max_rows,
        })
        .to_string())
    }
}

/// A scalar argument in Postgres's input syntax.
fn scalar_text(scalar: Scalar, value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        // JSON Schema counts 2.0 as an integer; Postgres's integer input does not.
        Value::Number(n) if scalar == Scalar::Integer && !(n.is_i64() || n.is_u64()) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
            .map_or_else(|| n.to_string(), |f| format!("{f:.0}")),
        other => other.to_string(), // numbers and booleans print as Postgres reads them
    }
}

/// A JSON array as a Postgres array literal: `{1,2}`, `{"a","b \"c\""}`. Every element is
/// quoted (a quoted element is never NULL, never split, and keeps its spaces), with `"`
/// and `\` escaped; the input schema has already checked each element's type.
fn array_literal(scalar: Scalar, value: &Value) -> String {
    let mut out = String::from("{");
    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in scalar_text(scalar, item).chars() {
            if matches!(c, '"' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_every_element() {
        assert_eq!(
            array_literal(Scalar::Integer, &json!([1, 2.0])),
            r#"{"1","2"}"#
        );
        assert_eq!(array_literal(Scalar::Integer, &json!([])), "{}");
        assert_eq!(
            array_literal(
                Scalar::String,
                &json!(["a", "b \"c\"", "d\\", "NULL", "x,y}"])
            ),
            r#"{"a","b \"c\"","d\\","NULL","x,y}"}"#
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("t.sql.toml", "[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT 1\"\nparam = [{ name = \"a\", type = \"integr\" }]\n")
            .err()
            .unwrap();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("unknown type `integr`"), "{e}");
        let e = parse("t.sql.toml", "[[tool]]\nname = \"x\"\n")
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("t.sql.toml line 1: missing field"),
            "{e}"
        );
        let e = parse("t.sql.toml", "[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT 1\"\n\n[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT 2\"\n")
            .err()
            .unwrap();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(parse("t.sql.toml", "").is_err());
        assert!(
            parse(
                "t.sql.toml",
                "[[tool]]\nname = \"x y\"\ndescription = \"d\"\nstatement = \"SELECT 1\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn constraints_must_fit_the_type() {
        let tool = |param: &str| {
            format!(
                "[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT $1\"\nparam = [{param}]\n"
            )
        };
        assert!(
            parse(
                "f",
                &tool(r#"{ name = "a", type = "integer", minimum = 1 }"#)
            )
            .is_ok()
        );
        for bad in [
            r#"{ name = "a", type = "string", minimum = 1 }"#,
            r#"{ name = "a", type = "integer", pattern = "x" }"#,
            r#"{ name = "a", type = "integer", default = "x" }"#,
            r#"{ name = "a", type = "integer", enum = [1, "two"] }"#,
            r#"{ name = "a", type = "integer", default = 1, required = true }"#,
            r#"{ name = "a", type = "string", pattern = "(" }"#,
            r#"{ name = "A", type = "string" }"#,
            r#"{ name = "a", type = "string", colour = "red" }"#,
            r#"{ name = "a", type = "integer", default = 500, maximum = 100 }"#,
            r#"{ name = "a", type = "number", minimum = 5, maximum = 1 }"#,
            r#"{ name = "a", type = "number", minimum = nan }"#,
            r#"{ name = "a", type = "number", maximum = inf }"#,
            r#"{ name = "a", type = "number", default = nan }"#,
            r#"{ name = "a", type = "string", default = "x", enum = ["y", "z"] }"#,
            r#"{ name = "a", type = "string", default = "toolong", max_length = 3 }"#,
            r#"{ name = "a", type = "string", min_length = 4, max_length = 3 }"#,
            r#"{ name = "a", type = "string", default = "abc", pattern = "^[0-9]+$" }"#,
        ] {
            assert!(parse("f", &tool(bad)).is_err(), "{bad}");
        }
        for good in [
            r#"{ name = "a", type = "integer", default = 50, minimum = 1, maximum = 100 }"#,
            r#"{ name = "a", type = "string", default = "y", enum = ["y", "z"] }"#,
            r#"{ name = "a", type = "string", default = "123", pattern = "^[0-9]+$" }"#,
        ] {
            assert!(parse("f", &tool(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn types_fit_what_postgres_expects() {
        let t = |text: &str| ParamType::try_from(text.to_owned()).unwrap();
        assert!(fits_type(t("integer"), &Type::INT4));
        assert!(fits_type(t("integer[]"), &Type::INT4_ARRAY));
        assert!(!fits_type(t("integer"), &Type::INT4_ARRAY));
        assert!(!fits_type(t("integer"), &Type::TEXT));
        assert!(fits_type(t("string"), &Type::TEXT));
        assert!(fits_type(t("timestamp"), &Type::TIMESTAMPTZ));
        assert!(!fits_type(t("number"), &Type::INT4));
        assert!(ParamType::try_from("float".to_owned()).is_err());
    }
}
