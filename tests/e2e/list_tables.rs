//! `list_tables` against the sample schema.

use crate::util::TestServer;
use serde_json::{Value, json};

crate::trials!(list_tables: lists_tables_and_views_with_kinds, other_schema, unknown_schema_is_a_tool_error, wrong_argument_type_is_invalid_params);

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
    assert_eq!(text, "schema \"nope\" does not exist");
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
