//! The `list_tables` tool: tables and views of one schema, with kind, comment and a row
//! estimate, read from `pg_catalog`.

use guest_sdk::{Args, CallError, Output, Tool, ToolDef, describe_query_error, json, sql};

/// One round trip: the LEFT JOIN keeps a single all-NULL row for an empty schema, so no
/// row at all means the schema does not exist.
const LIST: &str = "\
SELECT c.relname::text,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view'
                      WHEN 'm' THEN 'materialized view' WHEN 'p' THEN 'partitioned table'
                      WHEN 'f' THEN 'foreign table' END,
       pg_catalog.obj_description(c.oid, 'pg_class'),
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::int8 END
  FROM pg_catalog.pg_namespace n
  LEFT JOIN pg_catalog.pg_class c
         ON c.relnamespace = n.oid
        AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
        AND NOT c.relispartition
 WHERE n.nspname = $1
 ORDER BY c.relname";

struct ListTables;

impl Tool for ListTables {
    fn definition() -> ToolDef {
        ToolDef::new(
            "list_tables",
            "List the tables and views in a schema (default `public`) with their kind \
             (table, view, materialized view, partitioned table, foreign table), comment \
             and estimated row count. Partitions are listed under their parent.",
        )
        .title("List tables")
        .input(json!({
            "type": "object",
            "properties": {
                "schema": {"type": "string", "description": "Schema name (default `public`)"}
            },
            "additionalProperties": false
        }))
        .output(json!({
            "type": "object",
            "properties": {
                "schema": {"type": "string"},
                "tables": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "comment": {"type": ["string", "null"]},
                        "rows_estimate": {"type": ["integer", "string", "null"]}
                    },
                    "required": ["name", "kind", "comment"]
                }}
            },
            "required": ["schema", "tables"]
        }))
    }

    fn call(args: Args) -> Result<Output, CallError> {
        let schema = args.str("schema")?.unwrap_or("public");
        let rows = match guest_sdk::query(LIST, &[sql::Value::Text(schema.to_owned())]) {
            Ok(rows) => rows,
            Err(e) => return Ok(Output::error(describe_query_error(&e))),
        };
        if rows.rows.is_empty() {
            return Ok(Output::error(format!("schema \"{schema}\" does not exist")));
        }
        let tables: Vec<_> = rows
            .rows
            .iter()
            .filter(|row| !matches!(row.first(), Some(sql::Value::Null) | None))
            .map(|row| {
                let cell = |i: usize| row.get(i).map(guest_sdk::value_to_json);
                json!({
                    "name": cell(0),
                    "kind": cell(1),
                    "comment": cell(2),
                    "rows_estimate": cell(3),
                })
            })
            .collect();
        Ok(Output::json(json!({"schema": schema, "tables": tables})))
    }
}

guest_sdk::export_tools!(ListTables);
