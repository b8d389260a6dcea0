//! The `describe_table` tool: columns in order (type, nullability, default, comment),
//! primary key, unique constraints and foreign keys of one table or view, in one
//! catalog round trip. Tables in schemas the role lacks USAGE on are hidden (as
//! `list_schemas` and `list_tables` hide them), and so is a foreign key's target there.

mod ident;

use guest_sdk::{
    Args, CallError, Map, Output, Tool, ToolDef, Value, describe_query_error, json, sql,
    value_to_json,
};
use ident::Name;

/// `$2`/`$4` say whether the schema/table name was quoted (exact match only); an unquoted
/// name also matches case-insensitively, exact matches first. `LIMIT 2` detects ambiguity.
/// The exact name is looked up through pg_class's (relname, relnamespace) index; only when
/// it names nothing does the case-insensitive search run, a scan of pg_class (Postgres
/// skips that branch on the `NOT EXISTS`, evaluated once). Comments are joined from
/// `pg_description`: `obj_description`/`col_description` are SQL functions Postgres plans
/// again on every execution, and cost more than half of this statement's CPU.
const DESCRIBE: &str = "\
WITH exact AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind, true AS schema_exact, true AS table_exact
    FROM pg_catalog.pg_namespace n
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
   WHERE n.nspname = $1 AND c.relname = $3
     AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
     AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')),
target AS (
  SELECT * FROM exact
  UNION ALL
  (SELECT c.oid, n.nspname, c.relname, c.relkind, n.nspname = $1, c.relname = $3
     FROM pg_catalog.pg_class c
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT EXISTS (SELECT FROM exact)
      AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
      AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
      AND (n.nspname = $1 OR (NOT $2 AND lower(n.nspname) = lower($1)))
      AND (c.relname = $3 OR (NOT $4 AND lower(c.relname) = lower($3)))
    ORDER BY n.nspname = $1 DESC, c.relname = $3 DESC, n.nspname, c.relname
    LIMIT 2))
SELECT t.nspname::text, t.relname::text,
       CASE t.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view'
                      WHEN 'm' THEN 'materialized view' WHEN 'p' THEN 'partitioned table'
                      WHEN 'f' THEN 'foreign table' END,
       (SELECT td.description FROM pg_catalog.pg_description td
         WHERE td.objoid = t.oid AND td.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
           AND td.objsubid = 0),
       t.schema_exact AND t.table_exact,
       (SELECT coalesce(json_agg(json_build_object(
                 'name', a.attname,
                 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                 'nullable', NOT a.attnotnull,
                 'default', CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                 'generated', CASE WHEN a.attgenerated <> '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                 'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
                 'comment', cd.description
               ) ORDER BY a.attnum), '[]')
          FROM pg_catalog.pg_attribute a
          LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          LEFT JOIN pg_catalog.pg_description cd
                 ON cd.objoid = a.attrelid
                AND cd.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
                AND cd.objsubid = a.attnum
         WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT coalesce(json_agg(json_build_object(
                 'name', con.conname,
                 'type', con.contype,
                 'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                               FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                               JOIN pg_catalog.pg_attribute a
                                 ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
                 'references', CASE WHEN con.contype = 'f'
                                     AND pg_catalog.has_schema_privilege(fn.oid, 'USAGE')
                                    THEN json_build_object(
                     'schema', fn.nspname,
                     'table', fc.relname,
                     'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                                   FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
                                   JOIN pg_catalog.pg_attribute a
                                     ON a.attrelid = con.confrelid AND a.attnum = k.attnum)) END
               ) ORDER BY con.contype, con.conname), '[]')
          FROM pg_catalog.pg_constraint con
          LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
          LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
         WHERE con.conrelid = t.oid AND con.contype IN ('p', 'u', 'f'))
  FROM target t";

struct DescribeTable;

impl Tool for DescribeTable {
    fn definition() -> ToolDef {
        ToolDef::new(
            "describe_table",
            "Describe a table or view: every column in order with its type, nullability, \
             default and comment, plus the primary key, unique constraints and foreign keys. \
             `table` may be schema-qualified (`sales.orders`) and quoted for exact case \
             (`\"OrderItems\"`); an unquoted name also matches case-insensitively.",
        )
        .title("Describe table")
        .input(json!({
            "type": "object",
            "properties": {
                "table": {"type": "string", "minLength": 1,
                          "description": "Table or view name, optionally schema-qualified"},
                "schema": {"type": "string", "description": "Schema name (default `public`)"}
            },
            "required": ["table"],
            "additionalProperties": false
        }))
        .output(output_schema())
    }

    fn call(args: Args) -> Result<Output, CallError> {
        let table_arg = args.required_str("table")?;
        let parts = ident::parse_qualified(table_arg).map_err(CallError::InvalidArguments)?;
        let (schema, table) = match (parts.as_slice(), args.str("schema")?) {
            ([table], Some(schema)) => (
                ident::parse_one(schema).map_err(CallError::InvalidArguments)?,
                table.clone(),
            ),
            ([table], None) => (Name::exact("public"), table.clone()),
            ([schema, table], None) => (schema.clone(), table.clone()),
            ([schema, table], Some(given)) => {
                let given = ident::parse_one(given).map_err(CallError::InvalidArguments)?;
                if !schema.may_equal(&given) {
                    return Err(CallError::InvalidArguments(format!(
                        "`table` names schema \"{}\" but `schema` is \"{}\"",
                        schema.text, given.text
                    )));
                }
                (schema.clone(), table.clone())
            }
            _ => {
                return Err(CallError::InvalidArguments(format!(
                    "`table` must be `name` or `schema.name`, got {table_arg:?}"
                )));
            }
        };
        let params = [
            sql::Value::Text(schema.text.clone()),
            sql::Value::Boolean(schema.quoted),
            sql::Value::Text(table.text.clone()),
            sql::Value::Boolean(table.quoted),
        ];
        let rows = match guest_sdk::query(DESCRIBE, &params) {
            Ok(rows) => rows,
            Err(e) => return Ok(Output::error(describe_query_error(&e))),
        };
        let Some(first) = rows.rows.first() else {
            return Ok(Output::error(format!(
                "table \"{}.{}\" does not exist or is in a schema this role may not use (no \
                 USAGE); list_tables shows the tables of a schema",
                schema.text, table.text
            )));
        };
        let exact = matches!(first.get(4), Some(sql::Value::Boolean(true)));
        if let (false, Some(second)) = (exact, rows.rows.get(1)) {
            return Ok(Output::error(format!(
                "\"{}\" is ambiguous: it matches {} and {}; quote the name for an exact match",
                table_arg,
                qualified(first),
                qualified(second)
            )));
        }
        Ok(Output::json(describe(first)))
    }
}

fn qualified(row: &[sql::Value]) -> String {
    let text = |i: usize| match row.get(i) {
        Some(sql::Value::Text(s)) => s.clone(),
        _ => String::new(),
    };
    format!("\"{}\".\"{}\"", text(0), text(1))
}

fn describe(row: &[sql::Value]) -> Value {
    let cell = |i: usize| row.get(i).map(value_to_json).unwrap_or(Value::Null);
    let constraints = match cell(6) {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    let mut primary_key = Value::Null;
    let mut unique = Vec::new();
    let mut foreign_keys = Vec::new();
    for constraint in constraints {
        let Value::Object(mut c) = constraint else {
            continue;
        };
        let kind = c.remove("type");
        let refs = c.remove("references");
        match kind.as_ref().and_then(Value::as_str) {
            Some("p") => primary_key = c.remove("columns").unwrap_or(Value::Null),
            Some("u") => unique.push(Value::Object(c)),
            Some("f") => {
                let mut fk = Map::new();
                fk.insert("name".into(), c.remove("name").unwrap_or(Value::Null));
                fk.insert("columns".into(), c.remove("columns").unwrap_or(Value::Null));
                fk.insert("references".into(), refs.unwrap_or(Value::Null));
                foreign_keys.push(Value::Object(fk));
            }
            _ => {}
        }
    }
    json!({
        "schema": cell(0),
        "table": cell(1),
        "kind": cell(2),
        "comment": cell(3),
        "columns": cell(5),
        "primary_key": primary_key,
        "unique": unique,
        "foreign_keys": foreign_keys,
    })
}

fn output_schema() -> Value {
    let names = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "type": "object",
        "properties": {
            "schema": {"type": "string"},
            "table": {"type": "string"},
            "kind": {"type": "string"},
            "comment": {"type": ["string", "null"]},
            "columns": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "nullable": {"type": "boolean"},
                    "default": {"type": ["string", "null"]},
                    "generated": {"type": ["string", "null"]},
                    "identity": {"type": ["string", "null"]},
                    "comment": {"type": ["string", "null"]}
                },
                "required": ["name", "type", "nullable", "default", "comment"]
            }},
            "primary_key": {"anyOf": [names, {"type": "null"}]},
            "unique": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "columns": names}}},
            "foreign_keys": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"},
                "columns": names,
                // null: the target is in a schema this role may not use
                "references": {"type": ["object", "null"], "properties": {
                    "schema": {"type": "string"}, "table": {"type": "string"}, "columns": names}}
            }}}
        },
        "required": ["schema", "table", "kind", "columns", "primary_key", "foreign_keys"]
    })
}

guest_sdk::export_tools!(DescribeTable);
