//! `query_sql`: faithful types, the row cap, SQL errors and refused writes.

use crate::util::TestServer;
use serde_json::{Value, json};

crate::trials!(query_sql: values_keep_their_postgres_types, row_cap_sets_truncated, server_row_cap_applies, invalid_sql_is_a_tool_error_and_the_session_continues, writes_are_refused_and_change_nothing, limit_must_be_positive, statement_forms_keep_their_meaning, a_changed_table_is_prepared_afresh, prepared_statements_stay_bounded, explain_query_shows_the_plan, explain_analyze_runs_only_when_enabled);

const TYPES: &str = r#"SELECT NULL::int AS n, true AS b, 42::int2 AS i2, 9007199254740993::int8 AS big,
  -9007199254740991::int8 AS safe, 1.5::float8 AS f, 'NaN'::float8 AS nan,
  12345678901234567890.123456789::numeric AS num, 'hé'::text AS t,
  '2024-02-29 12:34:56.789+00'::timestamptz AS ts, '2024-02-29 12:34:56'::timestamp AS local,
  '2024-02-29'::date AS d, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
  ARRAY[1, NULL, 3] AS arr, ARRAY[['a','b'],['c','d']] AS grid,
  '{"k": [1, 2.5, null]}'::jsonb AS j, '\xdeadbeef'::bytea AS raw,
  interval '1 day 2 hours' AS iv, 'paid'::order_status AS e, '10.0.0.0/8'::cidr AS net,
  ARRAY[9007199254740993]::int8[] AS bigs"#;

async fn values_keep_their_postgres_types() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp.structured("query_sql", json!({"sql": TYPES})).await;
    let columns: Vec<(String, String)> = out["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let row = &out["rows"][0];
    let get = |name: &str| -> &Value {
        let i = columns.iter().position(|(n, _)| n == name).unwrap();
        &row[i]
    };
    let type_of = |name: &str| columns.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(get("n"), &json!(null));
    assert_eq!(get("b"), &json!(true));
    assert_eq!(get("i2"), &json!(42));
    assert_eq!(
        get("big"),
        &json!("9007199254740993"),
        "beyond 2^53: exact digits"
    );
    assert_eq!(get("safe"), &json!(-9007199254740991i64));
    assert_eq!(get("f"), &json!(1.5));
    assert_eq!(get("nan"), &json!("NaN"));
    assert_eq!(get("num"), &json!("12345678901234567890.123456789"));
    assert_eq!(get("t"), &json!("hé"));
    assert_eq!(get("ts"), &json!("2024-02-29T12:34:56.789Z"));
    assert_eq!(get("local"), &json!("2024-02-29T12:34:56"));
    assert_eq!(get("d"), &json!("2024-02-29"));
    assert_eq!(get("u"), &json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(get("arr"), &json!([1, null, 3]));
    assert_eq!(get("grid"), &json!([["a", "b"], ["c", "d"]]));
    assert_eq!(get("j"), &json!({"k": [1, 2.5, null]}));
    assert_eq!(get("raw"), &json!("\\xdeadbeef"));
    assert_eq!(get("iv"), &json!("P1DT2H"));
    assert_eq!(get("e"), &json!("paid"));
    assert_eq!(get("net"), &json!("10.0.0.0/8"));
    assert_eq!(get("bigs"), &json!(["9007199254740993"]));
    assert_eq!(type_of("big"), "int8");
    assert_eq!(type_of("ts"), "timestamptz");
    assert_eq!(type_of("arr"), "_int4");
    assert_eq!(type_of("e"), "order_status");
    assert_eq!(out["truncated"], false);
    assert_eq!(out["row_count"], 1);
}

async fn row_cap_sets_truncated() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let sql = "SELECT id FROM orders ORDER BY id";
    let out = mcp
        .structured("query_sql", json!({"sql": sql, "limit": 2}))
        .await;
    assert_eq!(out["rows"], json!([[1], [2]]));
    assert_eq!(out["truncated"], true);
    let all = mcp
        .structured("query_sql", json!({"sql": sql, "limit": 6}))
        .await;
    assert_eq!(all["row_count"], 6);
    assert_eq!(all["truncated"], false, "exactly the cap is not truncated");
}

async fn server_row_cap_applies() {
    let server = TestServer::with_flags(&["--max-rows", "3"]).await;
    let mut mcp = server.mcp().await;
    let sql = "SELECT g FROM generate_series(1, 1000000) g";
    let out = mcp
        .structured("query_sql", json!({"sql": sql, "limit": 100}))
        .await;
    assert_eq!(out["rows"], json!([[1], [2], [3]]));
    assert_eq!(out["truncated"], true);
}

async fn invalid_sql_is_a_tool_error_and_the_session_continues() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let text = mcp
        .tool_error("query_sql", json!({"sql": "SELECT * FROM nope"}))
        .await;
    assert!(
        text.starts_with("ERROR: relation \"nope\" does not exist (SQLSTATE 42P01)"),
        "{text}"
    );
    assert!(
        text.contains("POSITION: 15"),
        "position is in the caller's statement: {text}"
    );
    let text = mcp
        .tool_error("query_sql", json!({"sql": "SELECT FROM WHERE"}))
        .await;
    assert!(text.contains("SQLSTATE 42601"), "{text}");
    // A typo is named as one, with the word meant; a write is refused as a write.
    let text = mcp.tool_error("query_sql", json!({"sql": "SELEC 1"})).await;
    assert!(
        text.starts_with(
            "refused: syntax error: `SELEC` is not a SQL command (did you mean SELECT?)"
        ),
        "{text}"
    );
    let text = mcp
        .tool_error(
            "query_sql",
            json!({"sql": "INSERT INTO orders DEFAULT VALUES"}),
        )
        .await;
    assert!(
        text.starts_with("refused: only read-only queries"),
        "{text}"
    );
    let text = mcp
        .tool_error(
            "query_sql",
            json!({"sql": "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone"}),
        )
        .await;
    assert!(
        text.starts_with("refused: a query with DELETE inside it (a data-modifying WITH)"),
        "{text}"
    );
    let out = mcp
        .structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(out["rows"], json!([[1]]));
}

async fn writes_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let count = "SELECT count(*) FROM orders";
    let before = mcp.structured("query_sql", json!({"sql": count})).await;
    for sql in [
        "DELETE FROM orders",
        "SELECT 1; DELETE FROM orders",
        "WITH gone AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM gone",
        "SELECT nextval('products_id_seq')",
        "EXPLAIN ANALYZE DELETE FROM orders",
    ] {
        let text = mcp.tool_error("query_sql", json!({"sql": sql})).await;
        assert!(!text.is_empty(), "{sql}");
    }
    let after = mcp.structured("query_sql", json!({"sql": count})).await;
    assert_eq!(before, after);
}

async fn limit_must_be_positive() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let error = mcp
        .protocol_error("query_sql", json!({"sql": "SELECT 1", "limit": 0}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
    let error = mcp.protocol_error("query_sql", json!({"limit": 5})).await;
    assert_eq!(error["code"], -32602, "{error}");
}

/// The guard wraps row-returning queries (`SELECT * FROM (…) LIMIT`); none of these may
/// notice.
async fn statement_forms_keep_their_meaning() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    for (sql, rows) in [
        ("SELECT 1 AS x;", json!([[1]])),
        ("SELECT 1 AS x ; ;\n", json!([[1]])),
        ("SELECT 1 AS x -- a trailing comment", json!([[1]])),
        ("SELECT 1 AS x /* a trailing block */", json!([[1]])),
        ("SELECT 1 AS a, 2 AS a", json!([[1, 2]])),
        ("VALUES (2), (1) ORDER BY 1 DESC", json!([[2], [1]])),
        (
            "(SELECT 1) UNION ALL (SELECT 2) ORDER BY 1 DESC",
            json!([[2], [1]]),
        ),
        (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) \
             SELECT i FROM n ORDER BY i DESC",
            json!([[3], [2], [1]]),
        ),
        ("TABLE products ORDER BY id DESC LIMIT 1", json!(null)),
    ] {
        let out = mcp.structured("query_sql", json!({"sql": sql})).await;
        match rows {
            Value::Null => assert_eq!(out["row_count"], 1, "{sql}: {out}"),
            rows => assert_eq!(out["rows"], rows, "{sql}"),
        }
    }
    let out = mcp
        .structured("query_sql", json!({"sql": "SELECT 1 AS a, 2 AS a"}))
        .await;
    assert_eq!(out["columns"][0]["name"], "a", "{out}");
    assert_eq!(out["columns"][1]["name"], "a", "{out}");
    // The cap still applies to the caller's order.
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT id FROM orders ORDER BY id DESC", "limit": 2}),
        )
        .await;
    assert_eq!(out["rows"], json!([[6], [5]]));
    assert_eq!(out["truncated"], true);
    // Nothing the caller writes at the end can swallow what the guard appends.
    let text = mcp
        .tool_error("query_sql", json!({"sql": "SELECT 1 /* unterminated"}))
        .await;
    assert!(text.starts_with("refused: unterminated"), "{text}");
    // Closing the guard's parenthesis early still leaves one query, capped: `LIMIT`
    // can only end the outermost one.
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT g FROM generate_series(1, 5) g) AS t, (SELECT 1", "limit": 2}),
        )
        .await;
    assert_eq!(out["rows"], json!([[1, 1], [2, 1]]));
    assert_eq!(out["truncated"], true);
}

/// Statements are prepared once per pooled connection; a table altered since then must
/// still answer, with its new columns, not "cached plan must not change result type".
async fn a_changed_table_is_prepared_afresh() {
    let server = TestServer::with_flags(&["--pool-size", "1"]).await;
    let mut mcp = server.mcp().await;
    let sql = json!({"sql": "SELECT * FROM test_objects.prepared_afresh"});
    for _ in 0..2 {
        let out = mcp.structured("query_sql", sql.clone()).await;
        assert_eq!(out["rows"], json!([[1]]), "{out}");
    }
    crate::util::db::superuser()
        .await
        .batch_execute("ALTER TABLE test_objects.prepared_afresh ADD COLUMN b int DEFAULT 2")
        .await
        .unwrap();
    let out = mcp.structured("query_sql", sql).await;
    assert_eq!(out["rows"], json!([[1, 2]]), "{out}");
    assert_eq!(out["columns"][1]["name"], "b", "{out}");
}

/// Each pooled connection keeps the statements it prepared, up to a bound: ad-hoc SQL
/// must not grow a backend's memory without end.
async fn prepared_statements_stay_bounded() {
    let server = TestServer::with_flags(&["--pool-size", "1"]).await;
    let mut mcp = server.mcp().await;
    let count = json!({"sql": "SELECT count(*) FROM pg_prepared_statements"});
    let first = mcp.structured("query_sql", count.clone()).await;
    assert_eq!(first["rows"], json!([[1]]), "the count's own statement");
    for i in 0..300 {
        mcp.structured("query_sql", json!({"sql": format!("SELECT {i} AS i")}))
            .await;
    }
    let out = mcp.structured("query_sql", count).await;
    let held = out["rows"][0][0].as_i64().unwrap();
    assert!((1..=257).contains(&held), "{held} prepared statements held");
}

/// `explain_query`: the plan as structured content (the top node, its cost and rows) and
/// an indented text summary naming each step.
async fn explain_query_shows_the_plan() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let sql = "SELECT c.email, count(*) FROM customers c JOIN orders o ON o.customer_id = c.id \
               GROUP BY c.email";
    let result = mcp.result("explain_query", json!({"sql": sql})).await;
    assert_eq!(result["isError"], false, "{result}");
    let out = &result["structuredContent"];
    assert_eq!(out["analyzed"], false);
    assert_eq!(out["execution_ms"], Value::Null);
    assert!(out["plan"]["Node Type"].is_string(), "{out}");
    assert_eq!(out["total_cost"], out["plan"]["Total Cost"]);
    assert_eq!(out["estimated_rows"], out["plan"]["Plan Rows"]);
    assert!(out["total_cost"].as_f64().unwrap() > 0.0, "{out}");
    let text = result["content"][0]["text"].as_str().unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(out["plan"]["Node Type"].as_str().unwrap()) && first.contains("cost="),
        "{text}"
    );
    assert!(
        text.contains("-> ") && text.contains(" on orders"),
        "{text}"
    );
    // Nothing ran: the plan holds no actual times.
    assert!(!out["plan"].to_string().contains("Actual"), "{out}");

    // What the guard refuses, explain_query refuses, with the guard's reason.
    for (sql, reason) in [
        ("DELETE FROM orders", "read-only"),
        ("EXPLAIN SELECT 1", "takes a query"),
        ("SELECT 1; SELECT 2", "multiple commands"),
        ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
        ("SELECT 1) ANALYZE (SELECT 1", "syntax error"),
        // Outside query_sql's LIMIT wrapper this would parse, and create a table.
        ("SELECT * INTO TEMP stolen FROM orders", "INTO"),
    ] {
        let error = mcp.tool_error("explain_query", json!({"sql": sql})).await;
        assert!(error.contains(reason), "{sql}: {error}");
    }
    // A plan nested deeper than the JSON reader goes (a join of 80 relations) is a tool
    // error that says so and where to turn.
    let deep = (2..=80).fold(
        String::from("SELECT 1 FROM generate_series(1, 1) t1"),
        |sql, i| format!("{sql} JOIN generate_series(1, 1) t{i} ON true"),
    );
    let error = mcp.tool_error("explain_query", json!({"sql": deep})).await;
    assert!(error.contains("nested too deeply"), "{error}");
    // A syntax error is Postgres's, and the session goes on.
    let error = mcp
        .tool_error("explain_query", json!({"sql": "SELECT * FROM"}))
        .await;
    assert!(error.contains("syntax error"), "{error}");
    let error = mcp
        .protocol_error(
            "explain_query",
            json!({"sql": "SELECT 1", "analyze": "yes"}),
        )
        .await;
    assert_eq!(error["code"], -32602, "{error}");
}

/// ANALYZE runs the statement: refused unless the operator allows it, in explain_query and
/// in query_sql alike; allowed, it measures, and a writing function still writes nothing.
async fn explain_analyze_runs_only_when_enabled() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let error = mcp
        .tool_error(
            "explain_query",
            json!({"sql": "SELECT * FROM orders", "analyze": true}),
        )
        .await;
    assert!(error.contains("--allow-explain-analyze"), "{error}");
    let error = mcp
        .tool_error(
            "query_sql",
            json!({"sql": "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM orders"}),
        )
        .await;
    assert!(error.contains("--allow-explain-analyze"), "{error}");
    // Plain EXPLAIN through query_sql is still fine.
    mcp.structured("query_sql", json!({"sql": "EXPLAIN SELECT * FROM orders"}))
        .await;

    let server = TestServer::with_flags(&["--allow-explain-analyze"]).await;
    let mut mcp = server.mcp().await;
    let result = mcp
        .result(
            "explain_query",
            json!({"sql": "SELECT * FROM orders", "analyze": true}),
        )
        .await;
    assert_eq!(result["isError"], false, "{result}");
    let out = &result["structuredContent"];
    assert_eq!(out["analyzed"], true);
    assert!(out["execution_ms"].as_f64().is_some(), "{out}");
    assert_eq!(out["plan"]["Actual Rows"], 6, "{out}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("actual time=") && text.contains("Execution time:"),
        "{text}"
    );

    let superuser = crate::util::db::superuser().await;
    let prices = async || -> String {
        superuser
            .query_one(
                "SELECT string_agg(price::text, ',' ORDER BY id) FROM products",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    let before = prices().await;
    // SELECT … INTO would create a (temporary) table even in a read-only transaction.
    let error = mcp
        .tool_error(
            "explain_query",
            json!({"sql": "SELECT * INTO TEMP stolen FROM orders", "analyze": true}),
        )
        .await;
    assert!(error.contains("INTO"), "{error}");
    let error = mcp
        .tool_error(
            "explain_query",
            json!({"sql": "SELECT public.bump_price()", "analyze": true}),
        )
        .await;
    assert!(!error.is_empty());
    assert_eq!(prices().await, before);
}
