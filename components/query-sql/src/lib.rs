//! The `query_sql` tool: one read-only SQL statement; columns with their Postgres types
//! and rows as JSON values that keep those types faithful.

use guest_sdk::{Args, CallError, Output, Tool, ToolDef, Value, describe_query_error, json, sql};

struct QuerySql;

impl Tool for QuerySql {
    fn definition() -> ToolDef {
        ToolDef::new(
            "query_sql",
            "Run one read-only SQL statement (SELECT, WITH, VALUES, TABLE, EXPLAIN or SHOW) \
             and return its columns and rows. The statement runs in a read-only transaction \
             that is always rolled back, under a time limit. Rows beyond `limit` (or the \
             server's cap) are cut and `truncated` is true. Values keep their Postgres \
             meaning: integers beyond 2^53 and numerics are exact decimal strings, \
             timestamps are ISO 8601 strings, json and arrays are JSON.",
        )
        .title("Query SQL (read-only)")
        .input(json!({
            "type": "object",
            "properties": {
                "sql": {"type": "string", "minLength": 1, "description": "One SQL statement"},
                "limit": {"type": "integer", "minimum": 1,
                          "description": "Maximum rows to return (capped by the server)"}
            },
            "required": ["sql"],
            "additionalProperties": false
        }))
        .output(json!({
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                    "required": ["name", "type"]
                }},
                "rows": {"type": "array", "items": {"type": "array"}},
                "row_count": {"type": "integer"},
                "truncated": {"type": "boolean"}
            },
            "required": ["columns", "rows", "row_count", "truncated"]
        }))
    }

    fn call(args: Args) -> Result<Output, CallError> {
        let statement = args.required_str("sql")?;
        let limit = args.u32("limit")?;
        if limit == Some(0) {
            return Err(CallError::InvalidArguments(
                "`limit` must be at least 1".into(),
            ));
        }
        let options = sql::QueryOptions { max_rows: limit };
        let result = match sql::query(statement, &[], options) {
            Ok(result) => result,
            Err(e) => return Ok(Output::error(describe_query_error(&e))),
        };
        let columns: Vec<Value> = result
            .columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.type_name}))
            .collect();
        let rows: Vec<Value> = result
            .rows
            .iter()
            .map(|row| Value::Array(row.iter().map(guest_sdk::value_to_json).collect()))
            .collect();
        Ok(Output::json(json!({
            "columns": columns,
            "row_count": rows.len(),
            "rows": rows,
            "truncated": result.truncated,
        })))
    }
}

guest_sdk::export_tools!(QuerySql);
