//! SQL tools declared in `.sql.toml` files: served from the components directory and the
//! admin API through the built-in `sql-tool` component, their arguments checked against
//! the declaration before any instance, bound as parameters, and broken files refused
//! with the file, the line and the reason while the live version keeps serving.

use crate::util::db::superuser;
use crate::util::metrics::count;
use crate::util::{Http, TOKEN_AUTH, TempDir, TestServer};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

crate::trials!(sql_tools: the_example_file_is_served_with_derived_schemas, arguments_outside_the_declaration_are_refused_before_any_instance, parameters_are_bound_never_spliced, broken_files_are_refused_with_file_line_and_reason, declared_tools_swap_roll_back_and_are_removed, curated_tools_alone_with_query_sql_disabled, a_file_the_database_cannot_check_yet_is_retried, component_check_reads_sql_tool_files, fifty_tools_load_quickly, the_docs_quote_the_example_and_its_listing, token_scopes_name_declared_tools);

const ADMIN: &str = "admin-token-0123456789ab";
const ADMIN_AUTH: &str = "Bearer admin-token-0123456789ab";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/examples/shop.sql.toml")
}

/// A components directory holding the example file as `shop.sql.toml`.
fn shop_dir() -> TempDir {
    let dir = TempDir::new();
    std::fs::copy(example(), dir.path().join("shop.sql.toml")).unwrap();
    dir
}

async fn server(dir: &TempDir, flags: &[&str]) -> TestServer {
    let mut all = vec![
        "--admin-token",
        ADMIN,
        "--components-dir",
        dir.path_str(),
        "--watch-interval",
        "50ms",
    ];
    all.extend(flags);
    TestServer::with_flags(&all).await
}

async fn admin(http: &Http, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = http
        .send(method, path, &[("authorization", ADMIN_AUTH)], body)
        .await;
    let body = if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    };
    (response.status, body)
}

/// The admin view of component `name`, or Null.
async fn view(http: &Http, name: &str) -> Value {
    let (status, body) = admin(http, Method::GET, "/admin/components", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn tools(server: &TestServer) -> Vec<Value> {
    let mut mcp = server.mcp().await;
    let listed = mcp.request("tools/list", json!({})).await;
    listed["result"]["tools"].as_array().unwrap().clone()
}

fn names(tools: &[Value]) -> Vec<&str> {
    tools.iter().map(|t| t["name"].as_str().unwrap()).collect()
}

/// Polls until `done` holds of the listed tools (a directory change is applied after the
/// directory has looked the same for one more interval).
async fn wait_for_tools(server: &TestServer, done: impl Fn(&[&str]) -> bool) {
    let started = Instant::now();
    loop {
        let listed = tools(server).await;
        if done(&names(&listed)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "tools are still {:?}",
            names(&listed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The example file: both tools listed with schemas derived from the declaration and from
/// what Postgres says of the result columns, and called with good arguments.
async fn the_example_file_is_served_with_derived_schemas() {
    let dir = shop_dir();
    let server = server(&dir, &[]).await;
    let listed = tools(&server).await;
    for name in ["orders_of_customer", "products_by_sku", "query_sql"] {
        assert!(names(&listed).contains(&name), "{:?}", names(&listed));
    }
    let orders = listed
        .iter()
        .find(|t| t["name"] == "orders_of_customer")
        .unwrap();
    assert_eq!(orders["title"], "Orders of a customer", "{orders}");
    assert_eq!(orders["annotations"]["readOnlyHint"], true, "{orders}");
    assert_eq!(orders["annotations"]["destructiveHint"], false, "{orders}");
    let input = &orders["inputSchema"];
    assert_eq!(input["required"], json!(["customer_id"]), "{input}");
    assert_eq!(input["additionalProperties"], false, "{input}");
    assert_eq!(input["properties"]["customer_id"]["type"], "integer");
    assert_eq!(input["properties"]["customer_id"]["minimum"], 1);
    assert_eq!(input["properties"]["limit"]["default"], 20);
    assert_eq!(input["properties"]["limit"]["maximum"], 100);
    assert_eq!(
        input["properties"]["status"]["type"],
        json!(["string", "null"])
    );
    let described = input["properties"]["status"]["description"]
        .as_str()
        .unwrap();
    assert!(described.contains("order_status"), "{described}");
    let row = &orders["outputSchema"]["properties"]["rows"]["items"];
    assert_eq!(
        row["required"],
        json!(["id", "status", "placed_at", "items"]),
        "{row}"
    );
    assert_eq!(
        row["properties"]["id"]["type"],
        json!(["integer", "string", "null"])
    );
    assert_eq!(
        row["properties"]["status"]["type"],
        json!(["string", "null"])
    );

    let mut mcp = server.mcp().await;
    let all = mcp
        .structured("orders_of_customer", json!({"customer_id": 1}))
        .await;
    let rows = all["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{all}");
    assert_eq!(all["row_count"], rows.len());
    assert_eq!(all["truncated"], false);
    let times: Vec<&str> = rows
        .iter()
        .map(|r| r["placed_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{all}");
    let superuser = superuser().await;
    let expected: i64 = superuser
        .query_one("SELECT count(*) FROM orders WHERE customer_id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows.len() as i64, expected.min(20), "{all}");
    let one = mcp
        .structured("orders_of_customer", json!({"customer_id": 1, "limit": 1}))
        .await;
    assert_eq!(one["row_count"], 1, "{one}");
    let status = rows[0]["status"].as_str().unwrap();
    let filtered = mcp
        .structured(
            "orders_of_customer",
            json!({"customer_id": 1, "status": status}),
        )
        .await;
    let filtered = filtered["rows"].as_array().unwrap();
    assert!(!filtered.is_empty() && filtered.iter().all(|r| r["status"] == status));
    // An explicit null is the same as leaving it out.
    let null = mcp
        .structured(
            "orders_of_customer",
            json!({"customer_id": 1, "status": null}),
        )
        .await;
    assert_eq!(null, all);

    let products = mcp
        .structured(
            "products_by_sku",
            json!({"skus": ["MS-02", "KB-01", "none"]}),
        )
        .await;
    assert_eq!(
        products["rows"],
        json!([
            {"sku": "KB-01", "name": "Mechanical keyboard", "price": "129.00", "tags": ["hardware", "input"]},
            {"sku": "MS-02", "name": "Wireless mouse", "price": "49.50", "tags": ["hardware", "input"]},
        ]),
        "{products}"
    );
    let none = mcp.structured("products_by_sku", json!({"skus": []})).await;
    assert_eq!(none["row_count"], 0, "{none}");

    // Served by the built-in sql-tool component under the file's name, and counted per
    // tool like any other.
    let shop = view(&server.http(), "shop").await;
    assert_eq!(shop["world"], "tool-component", "{shop}");
    assert!(
        shop["source"].as_str().unwrap().ends_with("shop.sql.toml"),
        "{shop}"
    );
    let text = server.metrics().await;
    assert!(
        count(
            &text,
            "mcp_tool_calls_total",
            &[("tool", "orders_of_customer"), ("outcome", "ok")]
        ) >= 4.0,
        "per-tool metrics"
    );
}

/// Arguments outside the declared types and constraints are -32602, and no instance
/// ran: the component's call count does not move.
async fn arguments_outside_the_declaration_are_refused_before_any_instance() {
    let dir = shop_dir();
    let server = server(&dir, &[]).await;
    let http = server.http();
    let mut mcp = server.mcp().await;
    let before = view(&http, "shop").await["calls"].as_u64().unwrap();
    let refused = [
        ("orders_of_customer", json!({})),
        ("orders_of_customer", json!({"customer_id": 0})),
        ("orders_of_customer", json!({"customer_id": "1 OR 1=1"})),
        ("orders_of_customer", json!({"customer_id": 1.5})),
        (
            "orders_of_customer",
            json!({"customer_id": 1, "limit": 101}),
        ),
        (
            "orders_of_customer",
            json!({"customer_id": 1, "status": "lost"}),
        ),
        (
            "orders_of_customer",
            json!({"customer_id": 1, "extra": true}),
        ),
        ("products_by_sku", json!({"skus": "KB-01"})),
        ("products_by_sku", json!({"skus": [1, 2]})),
        ("products_by_sku", json!({"skus": [["KB-01"]]})),
        ("products_by_sku", json!({"skus": vec!["x"; 51]})),
    ];
    for (tool, arguments) in &refused {
        let error = mcp.protocol_error(tool, arguments.clone()).await;
        assert_eq!(error["code"], -32602, "{tool} {arguments}: {error}");
    }
    assert_eq!(
        view(&http, "shop").await["calls"].as_u64().unwrap(),
        before,
        "an instance ran for refused arguments"
    );
    // 2.0 is an integer to JSON Schema; it reaches Postgres as 2.
    let two = mcp
        .structured(
            "orders_of_customer",
            json!({"customer_id": 1, "limit": 2.0}),
        )
        .await;
    assert_eq!(two["row_count"], 2, "{two}");
}

/// Hostile values reach Postgres as bound parameters: they match nothing or fail as a
/// tool error, and the database is unchanged.
async fn parameters_are_bound_never_spliced() {
    let dir = shop_dir();
    let server = server(&dir, &[]).await;
    let mut mcp = server.mcp().await;
    let superuser = superuser().await;
    let count_products = async || -> i64 {
        superuser
            .query_one("SELECT count(*) FROM products", &[])
            .await
            .unwrap()
            .get(0)
    };
    let products = count_products().await;
    let hostile = [
        "KB-01'); DELETE FROM products; --",
        "KB-01' OR '1'='1",
        "\",\"KB-01",
        "KB-01\"}",
        "{KB-01}",
        "\\",
        "NULL",
        "$1",
        "'; SELECT pg_sleep(10); --",
    ];
    for value in hostile {
        let out = mcp
            .structured("products_by_sku", json!({"skus": [value]}))
            .await;
        assert_eq!(out["row_count"], 0, "{value:?} matched: {out}");
    }
    // Elements with the array syntax's own characters stay whole, one element each.
    let out = mcp
        .structured(
            "products_by_sku",
            json!({"skus": ["KB-01", "a,b", "c\"d", "e\\f", " MS-02 "]}),
        )
        .await;
    assert_eq!(out["row_count"], 1, "{out}");
    // Postgres text cannot hold NUL: refused before it could cut a value short.
    for arguments in [
        json!({"skus": ["KB\u{0}01"]}),
        json!({"skus": ["KB-01\u{0}\",\"MS-02"]}),
    ] {
        let error = mcp.protocol_error("products_by_sku", arguments).await;
        assert_eq!(error["code"], -32602, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("NUL"),
            "{error}"
        );
    }
    // An integer beyond int8: Postgres refuses it, as a tool error.
    let error = mcp
        .tool_error("orders_of_customer", json!({"customer_id": 1e20}))
        .await;
    assert!(error.contains("SQLSTATE 22"), "{error}");
    assert_eq!(count_products().await, products);
}

/// Each broken file is refused with its name, the line and the reason, through the
/// directory (readiness names it) and the admin API (422), and the live version stays.
async fn broken_files_are_refused_with_file_line_and_reason() {
    let dir = TempDir::new();
    let good = "[[tool]]\nname = \"shop_answer\"\ndescription = \"The answer\"\nstatement = \"SELECT 42 AS answer\"\n";
    std::fs::write(dir.path().join("answer.sql.toml"), good).unwrap();
    let server = server(&dir, &[]).await;
    let http = server.http();
    let mut mcp = server.mcp().await;
    let answer = mcp.structured("shop_answer", json!({})).await;
    assert_eq!(answer["rows"], json!([{"answer": 42}]));

    let tool = |statement: &str, params: &str| {
        format!(
            "[[tool]]\nname = \"shop_answer\"\ndescription = \"The answer\"\nstatement = \"{statement}\"\nparam = [{params}]\n"
        )
    };
    let broken: Vec<(String, &str, &str)> = vec![
        (
            "[[tool]]\nname = \"shop_answer\"\ndescription = \"The answer\nstatement = \"SELECT 1\"\n"
                .into(),
            "line 3",
            "invalid basic string",
        ),
        (
            tool("SELECT $1::int AS a", r#"{ name = "a", type = "integr" }"#),
            "line 5",
            "unknown type `integr`",
        ),
        (
            tool("SELECT $1::int + $2::int AS a", r#"{ name = "a", type = "integer" }"#),
            "line 1",
            "takes 2 parameters",
        ),
        (
            tool("SELECT 1 AS a", r#"{ name = "a", type = "integer" }"#),
            "line 1",
            "takes 0 parameters",
        ),
        (
            tool("DELETE FROM orders WHERE id = $1", r#"{ name = "a", type = "integer" }"#),
            "line 4",
            "only read-only queries",
        ),
        (
            tool(
                "WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d WHERE id = $1",
                r#"{ name = "a", type = "integer" }"#,
            ),
            "line 4",
            "a data-modifying WITH",
        ),
        (
            tool("SELECT email FROM customers WHERE id = $1", r#"{ name = "a", type = "string" }"#),
            "line 1",
            "declared string but the statement uses it as int8",
        ),
        (
            tool("SELECT nosuch FROM customers WHERE id = $1", r#"{ name = "a", type = "integer" }"#),
            "line 4",
            "42703",
        ),
        (
            tool("SELECT 1 AS a, 2 AS a WHERE $1", r#"{ name = "a", type = "boolean" }"#),
            "line 1",
            "two columns named `a`",
        ),
    ];
    let mut rejections = 0.0;
    for (text, line, reason) in &broken {
        // The admin API: 422 with the reason.
        let (status, body) = admin(
            &http,
            Method::PUT,
            "/admin/components/answer",
            text.clone().into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("answer.sql.toml"), "{error}");
        assert!(
            error.contains(line) && error.contains(reason),
            "{text}\n{error}"
        );
        rejections += 1.0;
        // The directory: rejected, named by readiness (which holds), the live version
        // stays.
        std::fs::write(dir.path().join("answer.sql.toml"), text).unwrap();
        let started = Instant::now();
        loop {
            let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
            let body = ready.json();
            let listed = body["rejected"][0]["reason"].as_str().unwrap_or("");
            if listed.contains(line) && listed.contains(reason) {
                assert_eq!(ready.status, StatusCode::OK, "{body}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{text}: not rejected: {}",
                ready.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rejections += 1.0;
        let answer = mcp.structured("shop_answer", json!({})).await;
        assert_eq!(answer["rows"], json!([{"answer": 42}]), "{text}");
    }
    let text = server.metrics().await;
    assert_eq!(
        count(&text, "component_swaps_total", &[("result", "rejected")]),
        rejections
    );
    // Fixed: served again, readiness clear.
    std::fs::write(dir.path().join("answer.sql.toml"), good.replace("42", "43")).unwrap();
    let started = Instant::now();
    loop {
        let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
        let answer = mcp.structured("shop_answer", json!({})).await;
        let clear = ready.json()["rejected"] == json!([]);
        if ready.status == StatusCode::OK && clear && answer["rows"] == json!([{"answer": 43}]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A version marker and a sleep: `SELECT 'vN' AS version FROM pg_sleep($1)`.
fn versioned(version: &str, tool: &str) -> Vec<u8> {
    format!(
        "[[tool]]\nname = \"{tool}\"\ndescription = \"Which version\"\n\
         statement = \"SELECT '{version}' AS version FROM pg_sleep($1)\"\n\
         param = [{{ name = \"sleep\", type = \"number\", default = 0, maximum = 5 }}]\n"
    )
    .into_bytes()
}

/// Put through the admin API, replaced while a call is in flight (which finishes on the
/// old version), rolled back, and removed; sessions are told the tool list changed.
async fn declared_tools_swap_roll_back_and_are_removed() {
    let dir = TempDir::new();
    let server = server(&dir, &[]).await;
    let http = server.http();
    let put =
        async |body: Vec<u8>| admin(&http, Method::PUT, "/admin/components/versions", body).await;
    let (status, body) = put(versioned("v1", "which_version")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["component"]["tools"],
        json!(["which_version"]),
        "{body}"
    );
    let mut mcp = server.mcp().await;
    let out = mcp.structured("which_version", json!({})).await;
    assert_eq!(out["rows"][0]["version"], "v1");

    let mut slow = server.mcp().await;
    let in_flight = tokio::spawn(async move {
        slow.structured("which_version", json!({"sleep": 1.5}))
            .await
    });
    // Wait until the slow call holds its connection, then swap under it.
    let started = Instant::now();
    while count(
        &server.metrics().await,
        "db_pool_connections",
        &[("state", "in_use")],
    ) < 1.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = put(versioned("v2", "which_version")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = mcp.structured("which_version", json!({})).await;
    assert_eq!(out["rows"][0]["version"], "v2");
    let old = in_flight.await.unwrap();
    assert_eq!(old["rows"][0]["version"], "v1", "{old}");

    let (status, body) = admin(
        &http,
        Method::POST,
        "/admin/components/versions/rollback",
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = mcp.structured("which_version", json!({})).await;
    assert_eq!(out["rows"][0]["version"], "v1");

    // A rename moves the tool; a session listening is told.
    let mut stream = mcp.open_stream().await;
    let (status, body) = put(versioned("v3", "which_version_now")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let note = stream.next_message(Duration::from_secs(10)).await.unwrap();
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    wait_for_tools(&server, |n| {
        n.contains(&"which_version_now") && !n.contains(&"which_version")
    })
    .await;

    let (status, _) = admin(
        &http,
        Method::DELETE,
        "/admin/components/versions",
        Vec::new(),
    )
    .await;
    assert!(status.is_success(), "{status}");
    wait_for_tools(&server, |n| !n.contains(&"which_version_now")).await;
    let error = mcp.protocol_error("which_version_now", json!({})).await;
    assert_eq!(error["code"], -32602, "{error}");
}

/// `--disable-builtin query-sql`: the curated tools and the catalog tools, no free-form
/// SQL (`explain_query`, which takes any query, goes with `query_sql`).
async fn curated_tools_alone_with_query_sql_disabled() {
    let dir = shop_dir();
    let server = server(&dir, &["--disable-builtin", "query-sql"]).await;
    let listed = tools(&server).await;
    assert_eq!(
        names(&listed),
        [
            "describe_table",
            "list_schemas",
            "list_tables",
            "orders_of_customer",
            "products_by_sku"
        ]
    );
    let mut mcp = server.mcp().await;
    let error = mcp
        .protocol_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
    let out = mcp
        .structured("orders_of_customer", json!({"customer_id": 2}))
        .await;
    assert!(out["row_count"].as_u64().unwrap() > 0, "{out}");
}

/// While no connection can be had (the one pooled connection is busy), a new file cannot
/// be checked: readiness says so, and the watcher tries it again, unchanged, until it
/// loads.
async fn a_file_the_database_cannot_check_yet_is_retried() {
    let dir = TempDir::new();
    let server = server(&dir, &["--pool-size", "1", "--pool-timeout", "200ms"]).await;
    let http = server.http();
    let mut busy = server.mcp().await;
    let holder = tokio::spawn(async move {
        busy.structured(
            "query_sql",
            json!({"sql": "SELECT 1 AS done FROM pg_sleep(3)"}),
        )
        .await
    });
    let started = Instant::now();
    while count(
        &server.metrics().await,
        "db_pool_connections",
        &[("state", "in_use")],
    ) < 1.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(
        dir.path().join("later.sql.toml"),
        "[[tool]]\nname = \"later\"\ndescription = \"Loaded once checked\"\nstatement = \"SELECT 1 AS one\"\n",
    )
    .unwrap();
    let started = Instant::now();
    loop {
        let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
        let reason = ready.json()["rejected"][0]["reason"].clone();
        if let Some(reason) = reason.as_str() {
            assert!(reason.contains("cannot check"), "{reason}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(holder.await.unwrap()["rows"], json!([[1]]));
    wait_for_tools(&server, |n| n.contains(&"later")).await;
    // Readiness is re-checked at most every PROBE_CACHE (500 ms): poll for it.
    let started = Instant::now();
    loop {
        let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
        if ready.status == StatusCode::OK && ready.json()["rejected"] == json!([]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_binary(args: &[&str], database_url: Option<&str>) -> (bool, String, String) {
    let mut command = std::process::Command::new(crate::binary::binary());
    command.args(args).env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `mcp-sandbox component check FILE.sql.toml` prepares the statements against the
/// database it is given, and says why a broken file would be refused.
async fn component_check_reads_sql_tool_files() {
    let example = example();
    let example = example.to_str().unwrap();
    let (ok, _, stderr) = run_binary(&["component", "check", example], None);
    assert!(!ok);
    assert!(stderr.contains("--database-url"), "{stderr}");
    let url = crate::util::db::reader_url();
    let (ok, stdout, stderr) = run_binary(&["component", "check", example], Some(&url));
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["name"], "shop", "{report}");
    assert_eq!(report["tools"][0]["name"], "orders_of_customer", "{report}");
    assert!(report["tools"][0]["outputSchema"].is_object(), "{report}");

    let dir = TempDir::new();
    let broken = dir.path().join("broken.sql.toml");
    std::fs::write(
        &broken,
        "[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT nosuch FROM customers\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run_binary(
        &["component", "check", broken.to_str().unwrap()],
        Some(&url),
    );
    assert!(!ok);
    assert!(
        stderr.contains("broken.sql.toml line 4") && stderr.contains("42703"),
        "{stderr}"
    );

    // A file naming its source is checked against the sources file, as `serve
    // --sources` would load it; against one database it is refused, saying why.
    let named = dir.path().join("named.sql.toml");
    std::fs::write(
        &named,
        "source = \"shop\"\n[[tool]]\nname = \"n\"\ndescription = \"d\"\nstatement = \"SELECT \
         count(*) AS n FROM customers\"\n",
    )
    .unwrap();
    let named = named.to_str().unwrap();
    let (ok, _, stderr) = run_binary(&["component", "check", named], Some(&url));
    assert!(!ok);
    assert!(
        stderr.contains("it names source `shop`, but this server serves one database"),
        "{stderr}"
    );
    let sources = dir.path().join("sources.toml");
    std::fs::write(
        &sources,
        format!("[[source]]\nname = \"shop\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let (ok, stdout, stderr) = run_binary(
        &[
            "component",
            "check",
            named,
            "--sources",
            sources.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"n\""), "{stdout}");
}

/// A file of fifty tools loads (every statement prepared) well within a second; the
/// bound keeps 3x slack over what this machine measures.
async fn fifty_tools_load_quickly() {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "[[tool]]\nname = \"orders_{i}\"\ndescription = \"Orders of a customer ({i})\"\n\
             statement = \"SELECT id, status, placed_at FROM orders WHERE customer_id = $1 AND id > {i} LIMIT $2\"\n\
             param = [{{ name = \"customer_id\", type = \"integer\" }}, {{ name = \"limit\", type = \"integer\", default = 10 }}]\n\n"
        ));
    }
    let dir = TempDir::new();
    let file = dir.path().join("many.sql.toml");
    std::fs::write(&file, &text).unwrap();
    let url = crate::util::db::reader_url();
    let (ok, stdout, stderr) =
        run_binary(&["component", "check", file.to_str().unwrap()], Some(&url));
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["tools"].as_array().unwrap().len(), 50);
    let load_ms = report["load_ms"].as_f64().unwrap();
    eprintln!("fifty declared tools loaded in {load_ms} ms");
    assert!(load_ms < 3000.0, "{load_ms} ms");
}

/// docs/components.md quotes the example file and the `tools/list` entry a server
/// derives from it, both exactly: the docs show what the code does.
async fn the_docs_quote_the_example_and_its_listing() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/components.md"),
    )
    .unwrap();
    let file = std::fs::read_to_string(example()).unwrap();
    assert!(
        readme.contains(file.trim_end()),
        "docs/components.md must quote components/examples/shop.sql.toml exactly"
    );
    let dir = shop_dir();
    let server = server(&dir, &[]).await;
    let listed = tools(&server).await;
    let entry = listed
        .iter()
        .find(|t| t["name"] == "orders_of_customer")
        .unwrap_or_else(|| panic!("not listed: {listed:?}"));
    let pretty = serde_json::to_string_pretty(entry).unwrap();
    assert!(
        readme.contains(&pretty),
        "docs/components.md must quote the tools/list entry of orders_of_customer exactly:\n{pretty}"
    );
}

/// A token scoped to one declared tool sees and calls only that one: scopes know declared
/// tools by name like any other, and a refusal is counted for the tool.
async fn token_scopes_name_declared_tools() {
    let dir = shop_dir();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\nname = \"curator\"\ntoken = \"curator-token-0123456789\"\n\
         tools = [\"orders_of_customer\"]\n",
    )
    .unwrap();
    let server = server(&dir, &["--tokens-file", tokens.to_str().unwrap()]).await;
    let mut curator = server.mcp_as(Some("curator-token-0123456789")).await;
    let listed = curator.request("tools/list", json!({})).await;
    let listed = listed["result"]["tools"].as_array().unwrap();
    assert_eq!(names(listed), ["orders_of_customer"]);
    curator
        .structured("orders_of_customer", json!({"customer_id": 2}))
        .await;
    for (tool, arguments) in [
        ("products_by_sku", json!({"skus": ["KB-01"]})),
        ("query_sql", json!({"sql": "SELECT 1"})),
    ] {
        let error = curator.protocol_error(tool, arguments).await;
        assert_eq!(error["code"], -32003, "{tool}: {error}");
    }
    assert_eq!(
        count(
            &server.metrics().await,
            "mcp_tool_calls_total",
            &[("tool", "products_by_sku"), ("outcome", "denied")]
        ),
        1.0
    );
}
