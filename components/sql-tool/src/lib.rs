//! The built-in component behind every SQL tool an operator declares in a `.sql.toml`
//! file. It knows no tool of its own: for each call the host sends the declared statement
//! with the arguments already checked against the declaration and turned into bound
//! parameters, and this runs it through the guard and returns the rows as objects.

use guest_sdk::bindings::exports::mcp_sandbox::host::tools::Guest;
use guest_sdk::{CallError, Map, Output, ToolInfo, Value, describe_query_error, json, sql};

/// What the host sends as `arguments` (see `host/src/runtime/sql_tools.rs`): the
/// statement, its `$1…` parameters in order (text in Postgres's input syntax, or null),
/// and an optional row cap.
struct Envelope {
    statement: String,
    params: Vec<sql::Value>,
    max_rows: Option<u32>,
}

impl Envelope {
    fn parse(json: &str) -> Option<Self> {
        let Value::Object(mut map) = guest_sdk::serde_json::from_str(json).ok()? else {
            return None;
        };
        let Value::String(statement) = map.remove("statement")? else {
            return None;
        };
        let Value::Array(raw) = map.remove("params")? else {
            return None;
        };
        // Text, sent untyped: Postgres parses each with the type the statement gives $n.
        let params = raw
            .into_iter()
            .map(|p| match p {
                Value::Null => Some(sql::Value::Null),
                Value::String(s) => Some(sql::Value::Text(s)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let max_rows = match map.remove("max_rows") {
            None | Some(Value::Null) => None,
            Some(n) => Some(u32::try_from(n.as_u64()?).ok()?),
        };
        Some(Self {
            statement,
            params,
            max_rows,
        })
    }
}

struct SqlTool;

impl Guest for SqlTool {
    fn list() -> Vec<ToolInfo> {
        Vec::new() // the host lists the declared tools
    }

    fn call(_name: String, arguments: String) -> Result<Output, CallError> {
        let envelope = Envelope::parse(&arguments)
            .ok_or_else(|| CallError::Failed("malformed call from the host".into()))?;
        let options = sql::QueryOptions {
            max_rows: envelope.max_rows,
        };
        let result = match sql::query(&envelope.statement, &envelope.params, options) {
            Ok(result) => result,
            Err(e) => return Ok(Output::error(describe_query_error(&e))),
        };
        let rows: Vec<Value> = result
            .rows
            .iter()
            .map(|row| {
                let object: Map<String, Value> = result
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(column, value)| (column.name.clone(), guest_sdk::value_to_json(value)))
                    .collect();
                Value::Object(object)
            })
            .collect();
        Ok(Output::json(json!({
            "row_count": rows.len(),
            "rows": rows,
            "truncated": result.truncated,
        })))
    }
}

guest_sdk::bindings::export!(SqlTool with_types_in guest_sdk::bindings);
