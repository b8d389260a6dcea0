//! The `query_sql` tool: one read-only SQL statement; columns with their Postgres types
//! and rows as JSON values that keep those types faithful. And `explain_query`: the
//! planner's plan of one, as JSON and as a short indented summary.

use guest_sdk::{Args, CallError, Output, Tool, ToolDef, Value, describe_query_error, json, sql};
use std::fmt::Write as _;

/// Plan nodes the text summary shows; the structured plan has them all.
const SUMMARY_NODES: usize = 40;

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

struct ExplainQuery;

impl Tool for ExplainQuery {
    fn definition() -> ToolDef {
        ToolDef::new(
            "explain_query",
            "Show how PostgreSQL would run one read-only query (SELECT, WITH, VALUES or \
             TABLE): its plan as JSON (EXPLAIN (FORMAT JSON)), and a short indented summary \
             with each step's estimated cost and rows. The query is planned, not run. With \
             `analyze` it runs too (read-only, rolled back) and actual times and rows are \
             shown, if the server's operator enabled that; otherwise it is refused.",
        )
        .title("Explain a query (read-only)")
        .input(json!({
            "type": "object",
            "properties": {
                "sql": {"type": "string", "minLength": 1, "description": "One query"},
                "analyze": {"type": "boolean",
                            "description": "Run it to measure actual times and rows \
                                            (only where the operator enabled it)"}
            },
            "required": ["sql"],
            "additionalProperties": false
        }))
        .output(json!({
            "type": "object",
            "properties": {
                "plan": {"type": "object", "description": "The top plan node, as EXPLAIN (FORMAT JSON) gives it"},
                "total_cost": {"type": "number"},
                "estimated_rows": {"type": "number"},
                "analyzed": {"type": "boolean"},
                "planning_ms": {"type": ["number", "null"]},
                "execution_ms": {"type": ["number", "null"]}
            },
            "required": ["plan", "total_cost", "estimated_rows", "analyzed"]
        }))
    }

    fn call(args: Args) -> Result<Output, CallError> {
        let statement = args.required_str("sql")?;
        let analyze = args.bool("analyze")?.unwrap_or(false);
        // The host's guard checks the statement inside EXPLAIN as it checks any query, and
        // refuses ANALYZE unless the operator enabled it.
        let options = if analyze {
            "ANALYZE, FORMAT JSON"
        } else {
            "FORMAT JSON"
        };
        let explain = format!("EXPLAIN ({options}) {statement}");
        let result = match guest_sdk::query(&explain, &[]) {
            Ok(result) => result,
            Err(e) => return Ok(Output::error(describe_query_error(&e))),
        };
        let document = result
            .rows
            .first()
            .and_then(|row| row.first())
            .map(guest_sdk::value_to_json)
            .unwrap_or(Value::Null);
        let Some(top) = document.get(0) else {
            // The JSON reader stops at 128 levels (about 60 nested plan steps) and leaves
            // the text as a string.
            return Ok(Output::error(if document.is_string() {
                "the plan is nested too deeply to return as JSON; run EXPLAIN (FORMAT TEXT) \
                 through query_sql instead"
            } else {
                "EXPLAIN returned no plan"
            }));
        };
        let plan = top.get("Plan").cloned().unwrap_or(Value::Null);
        let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64);
        let mut summary = String::new();
        let mut shown = 0;
        summarize(&plan, 0, &mut summary, &mut shown);
        if shown >= SUMMARY_NODES {
            summary.push_str("… (more steps in the structured plan)\n");
        }
        let planning = number(top, "Planning Time");
        let execution = number(top, "Execution Time");
        if let Some(ms) = planning {
            let _ = writeln!(summary, "Planning time: {ms:.3} ms");
        }
        if let Some(ms) = execution {
            let _ = writeln!(summary, "Execution time: {ms:.3} ms");
        }
        let structured = json!({
            "total_cost": plan.get("Total Cost").cloned().unwrap_or(json!(0)),
            "estimated_rows": plan.get("Plan Rows").cloned().unwrap_or(json!(0)),
            "analyzed": analyze,
            "planning_ms": planning,
            "execution_ms": execution,
            "plan": plan,
        });
        Ok(Output {
            text: summary.trim_end().to_owned(),
            structured: Some(structured.to_string()),
            is_error: false,
        })
    }
}

/// One line per plan node, psql's text format in short: `-> Seq Scan on orders
/// (cost=0.00..1.05 rows=5)`, with actual time and rows once analyzed.
fn summarize(node: &Value, depth: usize, out: &mut String, shown: &mut usize) {
    if *shown >= SUMMARY_NODES {
        return;
    }
    *shown += 1;
    let text = |key: &str| node.get(key).and_then(Value::as_str);
    let number = |key: &str| node.get(key).and_then(Value::as_f64);
    let indent = "  ".repeat(depth);
    let arrow = if depth > 0 { "-> " } else { "" };
    let _ = write!(out, "{indent}{arrow}{}", text("Node Type").unwrap_or("?"));
    if let Some(index) = text("Index Name") {
        let _ = write!(out, " using {index}");
    }
    if let Some(relation) = text("Relation Name") {
        let _ = write!(out, " on {relation}");
    }
    let _ = write!(
        out,
        " (cost={:.2}..{:.2} rows={})",
        number("Startup Cost").unwrap_or(0.0),
        number("Total Cost").unwrap_or(0.0),
        number("Plan Rows").unwrap_or(0.0)
    );
    if let (Some(time), Some(rows)) = (number("Actual Total Time"), number("Actual Rows")) {
        let _ = write!(out, " (actual time={time:.3} ms rows={rows})");
    }
    out.push('\n');
    for child in node
        .get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        summarize(child, depth + 1, out, shown);
    }
}

guest_sdk::export_tools!(QuerySql, ExplainQuery);
