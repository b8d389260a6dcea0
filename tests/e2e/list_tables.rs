//! `list_tables` against the sample schema.

use crate::util::{Mcp, TestServer};
use serde_json::{Value, json};

crate::trials!(list_tables: lists_tables_and_views_with_kinds, other_schema, unknown_schema_is_a_tool_error, wrong_argument_type_is_invalid_params, a_pattern_filters_names, pages_follow_the_cursor, pattern_and_cursor_are_bound_not_spliced, thousands_of_tables_page_through, list_schemas_counts_what_list_tables_lists);

fn find<'a>(tables: &'a Value, name: &str) -> &'a Value {
    tables
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {tables}"))
}

async fn lists_tables_and_views_with_kinds() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp.structured("list_tables", json!({})).await;
    assert_eq!(out["schema"], "public");
    let tables = &out["tables"];
    let names: Vec<&str> = tables
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ProductReviews",
            "customers",
            "order_items",
            "order_totals",
            "orders",
            "product_sales",
            "products"
        ]
    );
    assert_eq!(find(tables, "customers")["kind"], "table");
    assert_eq!(
        find(tables, "customers")["comment"],
        "People with an account in the shop"
    );
    assert_eq!(find(tables, "customers")["rows_estimate"], 5);
    assert_eq!(find(tables, "order_totals")["kind"], "view");
    assert_eq!(find(tables, "product_sales")["kind"], "materialized view");
    assert_eq!(find(tables, "ProductReviews")["kind"], "table");
}

async fn other_schema() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured("list_tables", json!({"schema": "information_schema"}))
        .await;
    assert_eq!(out["schema"], "information_schema");
    assert_eq!(find(&out["tables"], "tables")["kind"], "view");
}

async fn unknown_schema_is_a_tool_error() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let text = mcp
        .tool_error("list_tables", json!({"schema": "nope"}))
        .await;
    assert_eq!(
        text,
        "schema \"nope\" does not exist or this role may not use it (no USAGE); \
         list_schemas shows the schemas it may use"
    );
}

async fn wrong_argument_type_is_invalid_params() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let error = mcp
        .protocol_error("list_tables", json!({"schema": 42}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("schema"),
        "{error}"
    );
}

fn names(out: &Value) -> Vec<String> {
    out["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("no tables in {out}"))
        .iter()
        .map(|t| t["name"].as_str().expect("a name").to_owned())
        .collect()
}

async fn a_pattern_filters_names() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured("list_tables", json!({"pattern": "order%"}))
        .await;
    assert_eq!(names(&out), ["order_items", "order_totals", "orders"]);
    assert_eq!(out["next_cursor"], Value::Null);
    // Case-insensitive; `_` is one character.
    let out = mcp
        .structured("list_tables", json!({"pattern": "%REVIEW%"}))
        .await;
    assert_eq!(names(&out), ["ProductReviews"]);
    let out = mcp
        .structured("list_tables", json!({"pattern": "order_"}))
        .await;
    assert_eq!(names(&out), ["orders"]);
    // Nothing matches: an empty page of an existing schema, not an error.
    let out = mcp
        .structured("list_tables", json!({"pattern": "no-such-table"}))
        .await;
    assert_eq!(names(&out), Vec::<String>::new());
}

/// Every page of `list_tables` with `args`, following `next_cursor` to the end.
async fn all_pages(mcp: &mut Mcp, args: Value) -> (Vec<String>, usize) {
    let (mut seen, mut pages) = (Vec::new(), 0);
    let mut args = args;
    loop {
        let out = mcp.structured("list_tables", args.clone()).await;
        pages += 1;
        seen.extend(names(&out));
        match out["next_cursor"].as_str() {
            Some(cursor) => args["cursor"] = cursor.into(),
            None => return (seen, pages),
        }
        assert!(pages < 1000, "the pages never end");
    }
}

async fn pages_follow_the_cursor() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let first = mcp.structured("list_tables", json!({"limit": 3})).await;
    assert_eq!(
        names(&first),
        ["ProductReviews", "customers", "order_items"]
    );
    assert_eq!(first["next_cursor"], "order_items");
    let (all, pages) = all_pages(&mut mcp, json!({"limit": 3})).await;
    assert_eq!(
        all,
        [
            "ProductReviews",
            "customers",
            "order_items",
            "order_totals",
            "orders",
            "product_sales",
            "products"
        ]
    );
    assert_eq!(pages, 3);
    // A page that ends exactly at the last table says so.
    let out = mcp.structured("list_tables", json!({"limit": 7})).await;
    assert_eq!(out["next_cursor"], Value::Null);
    // Limits outside 1..=1000 are refused before any instance runs.
    for limit in [json!(0), json!(1001), json!(-1), json!("10")] {
        let error = mcp
            .protocol_error("list_tables", json!({"limit": limit}))
            .await;
        assert_eq!(error["code"], -32602, "{limit}: {error}");
    }
}

async fn pattern_and_cursor_are_bound_not_spliced() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    for hostile in [
        "x' OR '1'='1",
        "'; DROP TABLE customers; --",
        "%' UNION SELECT rolname, 'table', NULL, NULL FROM pg_roles --",
        "$1",
    ] {
        let out = mcp
            .structured("list_tables", json!({"pattern": hostile}))
            .await;
        assert_eq!(names(&out), Vec::<String>::new(), "{hostile}: {out}");
        let out = mcp
            .structured("list_tables", json!({"cursor": hostile}))
            .await;
        // Only names sorting after the cursor's text, as a name; never an error.
        for name in names(&out) {
            assert!(name.as_str() > hostile, "{hostile}: {name}");
        }
    }
    let out = mcp
        .structured("list_tables", json!({"pattern": "customers"}))
        .await;
    assert_eq!(names(&out), ["customers"], "the table is still there");
    // A pattern past its bound is refused before any instance; a NUL (which no
    // Postgres text holds) is the database's refusal, as a tool error.
    let error = mcp
        .protocol_error("list_tables", json!({"pattern": "%".repeat(257)}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
    for argument in ["pattern", "cursor"] {
        let text = mcp
            .tool_error("list_tables", json!({argument: "a\u{0}b"}))
            .await;
        assert!(!text.is_empty(), "{argument}");
    }
}

/// Runs `statement` (a `format()` template: `%s` is the table number, 00001 on) for
/// tables 1 to `tables`, 250 a transaction: each table holds a lock until commit, and
/// the lock table is shared with every other test.
async fn each_table(db: &tokio_postgres::Client, tables: usize, statement: &str) {
    for start in (1..=tables).step_by(250) {
        db.batch_execute(&format!(
            "DO $$ BEGIN
               FOR i IN {start}..{} LOOP
                 EXECUTE format('{statement}', lpad(i::text, 5, '0'));
               END LOOP;
             END $$;",
            (start + 249).min(tables)
        ))
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// A schema of 1,500 tables: pages of the default size (200) cover every table once.
async fn thousands_of_tables_page_through() {
    const TABLES: usize = 1500;
    let schema = format!("many_{}", std::process::id());
    let db = crate::util::db::superuser().await;
    // (USAGE: without it the catalog tools hide the schema.)
    db.batch_execute(&format!(
        "CREATE SCHEMA {schema}; GRANT USAGE ON SCHEMA {schema} TO PUBLIC"
    ))
    .await
    .expect("creating the schema");
    each_table(&db, TABLES, &format!("CREATE TABLE {schema}.t%s (id int)")).await;
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let first = mcp
        .structured("list_tables", json!({"schema": &schema}))
        .await;
    assert_eq!(names(&first).len(), 200);
    let (all, pages) = all_pages(&mut mcp, json!({"schema": &schema})).await;
    let expected: Vec<String> = (1..=TABLES).map(|i| format!("t{i:05}")).collect();
    assert_eq!(all, expected);
    assert_eq!(pages, TABLES.div_ceil(200));
    let (some, _) = all_pages(
        &mut mcp,
        json!({"schema": &schema, "pattern": "t014%", "limit": 30}),
    )
    .await;
    assert_eq!(some.len(), 100, "t01400..t01499");
    each_table(&db, TABLES, &format!("DROP TABLE {schema}.t%s")).await;
    db.batch_execute(&format!("DROP SCHEMA {schema}"))
        .await
        .expect("dropping the schema");
}

/// `list_schemas`: the schemas the role may use, each counted as `list_tables` lists it;
/// a schema without USAGE is not named; system schemas only on request.
async fn list_schemas_counts_what_list_tables_lists() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp.structured("list_schemas", json!({})).await;
    assert_eq!(out["truncated"], false);
    let schemas = out["schemas"].as_array().unwrap();
    let names: Vec<&str> = schemas
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"public") && names.contains(&"test_objects"),
        "{out}"
    );
    // vault: the reader has no USAGE on it; system schemas were not asked for.
    for hidden in ["vault", "pg_catalog", "information_schema"] {
        assert!(!names.contains(&hidden), "{hidden} listed: {out}");
    }
    // Other tests create and drop schemas of their own meanwhile: compare the fixed ones.
    for schema in schemas
        .iter()
        .filter(|s| s["name"] == "public" || s["name"] == "test_objects")
    {
        let name = schema["name"].as_str().unwrap();
        let tables = mcp
            .structured("list_tables", json!({"schema": name, "limit": 1000}))
            .await;
        assert_eq!(
            schema["tables"].as_u64().unwrap() as usize,
            tables["tables"].as_array().unwrap().len(),
            "{name}: {schema} vs {tables}"
        );
    }
    let public = schemas.iter().find(|s| s["name"] == "public").unwrap();
    assert_eq!(public["tables"], 7);
    assert!(public["owner"].is_string(), "{public}");

    let all = mcp
        .structured("list_schemas", json!({"include_system": true}))
        .await;
    let names: Vec<&str> = all["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"pg_catalog") && names.contains(&"information_schema"));
    assert!(!names.contains(&"vault"));
    let error = mcp
        .protocol_error("list_schemas", json!({"include_system": "yes"}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
}
