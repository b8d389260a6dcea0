//! Example tool (see the README): the largest tables in `public`, by size on disk.

use guest_sdk::{Args, CallError, Output, Tool, ToolDef, json, query, sql::Value, value_to_json};

const LARGEST: &str = "SELECT relname::text, pg_total_relation_size(oid) AS bytes
    FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace
    ORDER BY bytes DESC, relname LIMIT $1";

struct LargestTables;

impl Tool for LargestTables {
    fn definition() -> ToolDef {
        ToolDef::new("largest_tables", "The largest tables, indexes included").input(json!({
            "type": "object",
            "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 100}},
            "additionalProperties": false
        }))
    }

    fn call(args: Args) -> Result<Output, CallError> {
        let limit = args.u32("limit")?.unwrap_or(10);
        let rows = match query(LARGEST, &[Value::Int(limit.into())]) {
            Ok(rows) => rows,
            Err(e) => return Ok(Output::error(guest_sdk::describe_query_error(&e))),
        };
        let tables: Vec<_> = (rows.rows.iter())
            .map(|row| json!({"table": value_to_json(&row[0]), "bytes": value_to_json(&row[1])}))
            .collect();
        Ok(Output::json(json!({ "tables": tables })))
    }
}

guest_sdk::export_tools!(LargestTables);
