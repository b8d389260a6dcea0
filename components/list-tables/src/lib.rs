//! The `list_tables` tool: tables and views of one schema, with kind, comment and a row
//! estimate, read from `pg_catalog`; filtered by a name pattern and paged, so a
//! database with thousands of tables does not flood a model's context. And
//! `list_schemas`: the schemas the role may use, each with its comment and table count.

use guest_sdk::{Args, CallError, Output, Tool, ToolDef, describe_query_error, json, sql};

/// The most tables one page may ask for (and the default page size).
const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 200;

/// One round trip: the LEFT JOIN keeps a single all-NULL row for a schema with nothing
/// (left) to list, so no row at all means the schema does not exist or the role lacks
/// USAGE on it (hidden, as `list_schemas` hides it: the catalog is readable by every
/// role, but a schema it cannot use is of no use to a caller). Pages follow
/// `relname` order (the `name` type's byte order), the cursor being the last name
/// returned; one row past the page tells whether another follows. Comments are joined
/// from `pg_description` rather than read with `obj_description`, a SQL function Postgres
/// plans again on every execution (it doubled this statement's CPU).
const LIST: &str = "\
SELECT c.relname::text,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view'
                      WHEN 'm' THEN 'materialized view' WHEN 'p' THEN 'partitioned table'
                      WHEN 'f' THEN 'foreign table' END,
       d.description,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::int8 END
  FROM pg_catalog.pg_namespace n
  LEFT JOIN pg_catalog.pg_class c
         ON c.relnamespace = n.oid
        AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
        AND NOT c.relispartition
        AND ($2::text IS NULL OR c.relname::text ILIKE $2::text)
        AND ($3::text IS NULL OR c.relname > $3::text::name)
  LEFT JOIN pg_catalog.pg_description d
         ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND d.objsubid = 0
 WHERE n.nspname = $1
   AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
 ORDER BY c.relname
 LIMIT $4::int8 + 1";

/// Schemas the role has USAGE on, with what `list_tables` would list in each (the same
/// kinds, partitions under their parent); system schemas only when asked for.
const SCHEMAS: &str = "\
SELECT n.nspname::text,
       d.description,
       pg_catalog.pg_get_userbyid(n.nspowner)::text,
       (SELECT count(*) FROM pg_catalog.pg_class c
         WHERE c.relnamespace = n.oid
           AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
           AND NOT c.relispartition)
  FROM pg_catalog.pg_namespace n
  LEFT JOIN pg_catalog.pg_description d
         ON d.objoid = n.oid AND d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
        AND d.objsubid = 0
 WHERE pg_catalog.has_schema_privilege(n.oid, 'USAGE')
   AND ($1 OR (n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'))
 ORDER BY n.nspname";

struct ListSchemas;

impl Tool for ListSchemas {
    fn definition() -> ToolDef {
        ToolDef::new(
            "list_schemas",
            "List the schemas this connection may use, with their comment, owner and the \
             number of tables and views in each (as `list_tables` counts them). System \
             schemas (pg_catalog, information_schema) only with `include_system`.",
        )
        .title("List schemas")
        .input(json!({
            "type": "object",
            "properties": {
                "include_system": {"type": "boolean",
                                   "description": "Also list pg_catalog, information_schema \
                                                   and the other pg_ schemas"}
            },
            "additionalProperties": false
        }))
        .output(json!({
            "type": "object",
            "properties": {
                "schemas": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "comment": {"type": ["string", "null"]},
                        "owner": {"type": "string"},
                        "tables": {"type": "integer"}
                    },
                    "required": ["name", "comment", "owner", "tables"]
                }},
                "truncated": {"type": "boolean"}
            },
            "required": ["schemas", "truncated"]
        }))
    }

    fn call(args: Args) -> Result<Output, CallError> {
        let system = args.bool("include_system")?.unwrap_or(false);
        let rows = match guest_sdk::query(SCHEMAS, &[sql::Value::Boolean(system)]) {
            Ok(rows) => rows,
            Err(e) => return Ok(Output::error(describe_query_error(&e))),
        };
        let schemas: Vec<_> = rows
            .rows
            .iter()
            .map(|row| {
                let cell = |i: usize| row.get(i).map(guest_sdk::value_to_json);
                json!({"name": cell(0), "comment": cell(1), "owner": cell(2), "tables": cell(3)})
            })
            .collect();
        Ok(Output::json(
            json!({"schemas": schemas, "truncated": rows.truncated}),
        ))
    }
}

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
                "schema": {"type": "string", "description": "Schema name (default `public`)"},
                "pattern": {"type": "string", "maxLength": 256,
                            "description": "Only names matching this case-insensitive LIKE \
                                            pattern (`%` any text, `_` one character), \
                                            e.g. `order%`"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                          "description": "Tables per page (default 200)"},
                "cursor": {"type": "string",
                           "description": "`next_cursor` of the previous page"}
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
                }},
                "next_cursor": {"type": ["string", "null"],
                                "description": "Pass as `cursor` for the next page; null on \
                                                the last"}
            },
            "required": ["schema", "tables", "next_cursor"]
        }))
    }

    fn call(args: Args) -> Result<Output, CallError> {
        let schema = args.str("schema")?.unwrap_or("public");
        let text = |v: Option<&str>| v.map_or(sql::Value::Null, |v| sql::Value::Text(v.into()));
        let limit = args.u32("limit")?.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(CallError::InvalidArguments(format!(
                "`limit` must be between 1 and {MAX_LIMIT}"
            )));
        }
        let params = [
            sql::Value::Text(schema.to_owned()),
            text(args.str("pattern")?),
            text(args.str("cursor")?),
            sql::Value::Int(i64::from(limit)),
        ];
        let rows = match guest_sdk::query(LIST, &params) {
            Ok(rows) => rows,
            Err(e) => return Ok(Output::error(describe_query_error(&e))),
        };
        if rows.rows.is_empty() {
            return Ok(Output::error(format!(
                "schema \"{schema}\" does not exist or this role may not use it (no USAGE); \
                 list_schemas shows the schemas it may use"
            )));
        }
        let listed: Vec<_> = rows
            .rows
            .iter()
            .filter(|row| !matches!(row.first(), Some(sql::Value::Null) | None))
            .collect();
        // One row past the page, or the server's row cap cut the page: more follow.
        let more = listed.len() > limit as usize || rows.truncated;
        let page = &listed[..listed.len().min(limit as usize)];
        let next_cursor = if more {
            page.last()
                .and_then(|row| row.first())
                .map(guest_sdk::value_to_json)
        } else {
            None
        };
        let tables: Vec<_> = page
            .iter()
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
        Ok(Output::json(
            json!({"schema": schema, "tables": tables, "next_cursor": next_cursor}),
        ))
    }
}

guest_sdk::export_tools!(ListTables, ListSchemas);
