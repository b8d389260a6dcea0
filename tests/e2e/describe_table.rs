//! `describe_table`: columns in order, keys, mixed-case and quoted names, errors.

use crate::util::TestServer;
use serde_json::json;

crate::trials!(describe_table: columns_in_order_with_keys, mixed_case_and_quoted_names, qualified_names, unknown_table_is_a_tool_error, missing_table_is_invalid_params, views_have_columns_without_keys, exact_names_win_and_case_ties_are_named);

async fn columns_in_order_with_keys() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured("describe_table", json!({"table": "orders"}))
        .await;
    assert_eq!(out["schema"], "public");
    assert_eq!(out["table"], "orders");
    assert_eq!(out["kind"], "table");
    assert_eq!(out["comment"], "One checkout by one customer");
    let columns = out["columns"].as_array().unwrap();
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["id", "customer_id", "status", "placed_at", "shipped_on"]
    );
    assert_eq!(columns[0]["type"], "bigint");
    assert_eq!(columns[0]["identity"], "always");
    assert_eq!(columns[0]["nullable"], false);
    assert_eq!(columns[2]["type"], "order_status");
    assert_eq!(columns[2]["default"], "'pending'::order_status");
    assert_eq!(columns[4]["nullable"], true);
    assert_eq!(out["primary_key"], json!(["id"]));
    assert_eq!(
        out["foreign_keys"],
        json!([{
            "name": "orders_customer_id_fkey",
            "columns": ["customer_id"],
            "references": {"schema": "public", "table": "customers", "columns": ["id"]}
        }])
    );

    let items = mcp
        .structured("describe_table", json!({"table": "order_items"}))
        .await;
    assert_eq!(items["primary_key"], json!(["order_id", "line_no"]));
    assert_eq!(items["foreign_keys"].as_array().unwrap().len(), 2);
    let customers = mcp
        .structured("describe_table", json!({"table": "customers"}))
        .await;
    assert_eq!(
        customers["unique"],
        json!([{"name": "customers_email_key", "columns": ["email"]}])
    );
    assert_eq!(
        customers["columns"][3]["comment"],
        "ISO 3166-1 alpha-2 country code"
    );
}

async fn mixed_case_and_quoted_names() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    for table in ["ProductReviews", "productreviews", "\"ProductReviews\""] {
        let out = mcp
            .structured("describe_table", json!({"table": table}))
            .await;
        assert_eq!(out["table"], "ProductReviews", "for {table}");
        assert_eq!(out["columns"][2]["name"], "Rating");
    }
    let text = mcp
        .tool_error("describe_table", json!({"table": "\"productreviews\""}))
        .await;
    assert!(text.contains("does not exist"), "{text}");
}

async fn qualified_names() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured("describe_table", json!({"table": "public.orders"}))
        .await;
    assert_eq!(out["table"], "orders");
    let out = mcp
        .structured(
            "describe_table",
            json!({"table": "tables", "schema": "information_schema"}),
        )
        .await;
    assert_eq!(out["kind"], "view");
    let error = mcp
        .protocol_error("describe_table", json!({"table": "a.b.c"}))
        .await;
    assert_eq!(error["code"], -32602);
}

async fn unknown_table_is_a_tool_error() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let text = mcp
        .tool_error("describe_table", json!({"table": "nope"}))
        .await;
    assert_eq!(
        text,
        "table \"public.nope\" does not exist or is in a schema this role may not use (no \
         USAGE); list_tables shows the tables of a schema"
    );
    // The session keeps working.
    mcp.structured("describe_table", json!({"table": "orders"}))
        .await;
}

async fn missing_table_is_invalid_params() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let error = mcp.protocol_error("describe_table", json!({})).await;
    assert_eq!(error["code"], -32602, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("table"),
        "{error}"
    );
}

async fn views_have_columns_without_keys() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured("describe_table", json!({"table": "order_totals"}))
        .await;
    assert_eq!(out["kind"], "view");
    assert_eq!(out["primary_key"], json!(null));
    assert_eq!(out["columns"].as_array().unwrap().len(), 4);
}

/// `test_objects."Twin"` and `test_objects."TWIN"`: a name that is exactly one of them
/// picks it (the index lookup), one that matches both only case-insensitively is refused
/// naming both (the fallback search), and a single case-insensitive match is found.
async fn exact_names_win_and_case_ties_are_named() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    for (table, column, comment) in [
        ("Twin", "a", json!("the first twin's column")),
        ("TWIN", "b", json!(null)),
        ("test_objects.Twin", "a", json!("the first twin's column")),
        ("\"test_objects\".\"TWIN\"", "b", json!(null)),
    ] {
        let out = mcp
            .structured(
                "describe_table",
                json!({"table": table, "schema": "test_objects"}),
            )
            .await;
        let name = table.rsplit('.').next().unwrap().trim_matches('"');
        assert_eq!(out["schema"], "test_objects", "{table}: {out}");
        assert_eq!(out["table"], name, "{table}: {out}");
        assert_eq!(out["columns"][0]["name"], column, "{table}: {out}");
        assert_eq!(out["columns"][0]["comment"], comment, "{table}: {out}");
    }
    for (table, schema) in [
        ("twin", "test_objects"),
        ("tWiN", "test_objects"),
        ("Twin", "TEST_OBJECTS"),
        ("test_objects.twin", "test_objects"),
    ] {
        let text = mcp
            .tool_error("describe_table", json!({"table": table, "schema": schema}))
            .await;
        assert!(
            text.contains("is ambiguous")
                && text.contains("\"test_objects\".\"TWIN\"")
                && text.contains("\"test_objects\".\"Twin\""),
            "{table} in {schema}: {text}"
        );
    }
    let text = mcp
        .tool_error(
            "describe_table",
            json!({"table": "\"twin\"", "schema": "test_objects"}),
        )
        .await;
    assert!(text.contains("does not exist"), "{text}");
    let out = mcp
        .structured(
            "describe_table",
            json!({"table": "Prepared_Afresh", "schema": "Test_Objects"}),
        )
        .await;
    assert_eq!(out["schema"], "test_objects", "{out}");
    assert_eq!(out["table"], "prepared_afresh", "{out}");
}
