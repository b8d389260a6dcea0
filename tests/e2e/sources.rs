//! Several databases served by one server (`--sources`): the shared cluster's sample shop
//! and a library in a second cluster of its own. Tools take a `database` argument,
//! declared SQL tools name their source, each source reports on its own, one down leaves
//! the other serving, and the file reloads while the server serves.

use crate::util::db::{reader_url, superuser_url};
use crate::util::metrics::sample;
use crate::util::server::{TOKEN, start_error_with};
use crate::util::{TempDir, TestServer};
use http::StatusCode;
use mcp_sandbox::demo::TempPostgres;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::trials!(sources: two_databases_are_served_by_name, one_source_down_leaves_the_other_serving, the_sources_file_reloads_while_serving, bad_sources_stop_the_start_naming_the_source, the_binary_serves_a_sources_file_over_stdio, a_token_uses_only_its_databases);

/// The library's login role: reads `books`, nothing else.
const LIBRARIAN: &str = "librarian";

/// A second cluster holding the library (three books), read by [`LIBRARIAN`].
async fn library() -> TempPostgres {
    let pg = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let (client, connection) =
        tokio_postgres::connect(&pg.url("postgres", "postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE ROLE {LIBRARIAN} LOGIN; \
             CREATE TABLE books (id int PRIMARY KEY, title text NOT NULL); \
             INSERT INTO books VALUES (1, 'Dune'), (2, 'Emma'), (3, 'Ulysses'); \
             GRANT SELECT ON books TO {LIBRARIAN}"
        ))
        .await
        .unwrap();
    pg
}

/// A sources file naming the shop (the default) and, if given, the library.
fn sources_text(library: Option<&TempPostgres>) -> String {
    let mut text = format!(
        "[[source]]\nname = \"shop\"\ndescription = \"Orders and customers\"\nurl = \"{}\"\n",
        reader_url()
    );
    if let Some(pg) = library {
        text.push_str(&format!(
            "\n[[source]]\nname = \"library\"\ndescription = \"The books\"\nurl = \"{}\"\n\
             pool_size = 3\nmax_rows = 2\n",
            pg.url(LIBRARIAN, "postgres")
        ));
    }
    text
}

async fn server(dir: &TempDir, flags: &[&str]) -> TestServer {
    let sources = dir.path().join("sources.toml");
    let mut args = vec![
        "mcp-sandbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--sources",
        sources.to_str().unwrap(),
        "--watch-interval",
        "50ms",
    ];
    args.extend(flags);
    TestServer::from_args(&args, Some(TOKEN)).await
}

/// The `database` property of `tool`'s input schema as listed.
async fn database_arg(server: &TestServer, tool: &str) -> Value {
    let mut mcp = server.mcp().await;
    let listed = mcp.request("tools/list", json!({})).await;
    listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tool)
        .map(|t| t["inputSchema"]["properties"]["database"].clone())
        .unwrap_or(Value::Null)
}

async fn stop(pg: TempPostgres) -> TempPostgres {
    tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap()
}

async fn two_databases_are_served_by_name() {
    let pg = library().await;
    let dir = TempDir::new();
    std::fs::write(dir.path().join("sources.toml"), sources_text(Some(&pg))).unwrap();
    let components = TempDir::new();
    std::fs::write(
        components.path().join("catalog.sql.toml"),
        "source = \"library\"\n[[tool]]\nname = \"book_titles\"\ndescription = \"Every \
         title\"\nstatement = \"SELECT title FROM books ORDER BY id\"\n\n[[tool]]\nname = \
         \"shop_customers\"\ndescription = \"How many customers\"\nsource = \"shop\"\n\
         statement = \"SELECT count(*) AS n FROM customers\"\n",
    )
    .unwrap();
    std::fs::write(
        components.path().join("lost.sql.toml"),
        "[[tool]]\nname = \"lost\"\ndescription = \"Reads a source nobody serves\"\nsource = \
         \"archive\"\nstatement = \"SELECT 1 AS one\"\n",
    )
    .unwrap();
    let server = server(&dir, &["--components-dir", components.path_str()]).await;

    // Every tool of a component takes `database`, listing the sources, default first.
    let arg = database_arg(&server, "query_sql").await;
    assert_eq!(arg["enum"], json!(["shop", "library"]), "{arg}");
    let description = arg["description"].as_str().unwrap();
    assert!(description.contains("Default: shop"), "{description}");
    assert!(description.contains("library: The books"), "{description}");
    assert_eq!(
        database_arg(&server, "list_tables").await["enum"][1],
        "library"
    );
    // Declared SQL tools name their source instead.
    assert_eq!(database_arg(&server, "book_titles").await, Value::Null);

    let mut mcp = server.mcp().await;
    let books = "SELECT title FROM books ORDER BY id";
    // The default is the shop, which has no books.
    let error = mcp.tool_error("query_sql", json!({ "sql": books })).await;
    assert!(error.contains("books"), "{error}");
    // The library's own cap (max_rows = 2) applies to it.
    let out = mcp
        .structured("query_sql", json!({"sql": books, "database": "library"}))
        .await;
    assert_eq!(out["rows"], json!([["Dune"], ["Emma"]]), "{out}");
    assert_eq!(out["truncated"], true);
    let shop = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT count(*) FROM customers", "database": "shop"}),
        )
        .await;
    assert_eq!(shop["row_count"], 1);
    let tables = mcp
        .structured("list_tables", json!({"database": "library"}))
        .await;
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["books"], "{tables}");
    let titles = mcp.structured("book_titles", json!({})).await;
    assert_eq!(
        titles["rows"],
        json!([{"title": "Dune"}, {"title": "Emma"}])
    );
    let customers = mcp.structured("shop_customers", json!({})).await;
    assert!(
        customers["rows"][0]["n"].as_i64().unwrap() > 0,
        "{customers}"
    );
    // A declared tool takes no `database`: its file chose.
    let error = mcp
        .protocol_error("book_titles", json!({"database": "shop"}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");

    // What a hostile or confused caller sends next: an unknown name (said, with the known
    // ones), a name in another case, a number, a very long name.
    for (database, expected) in [
        (
            json!("archive"),
            "unknown database `archive`; this server serves: shop, library",
        ),
        (json!("Library"), "unknown database `Library`"),
        (json!(7), "must be a string, one of: shop, library"),
        (json!(null), "must be a string"),
        (json!("x".repeat(100_000)), "unknown database"),
    ] {
        let error = mcp
            .protocol_error(
                "query_sql",
                json!({"sql": "SELECT 1", "database": database}),
            )
            .await;
        assert_eq!(error["code"], -32602, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(
            message.len() < 400,
            "the name is cut short: {}",
            message.len()
        );
    }

    // A file naming a source nobody serves is refused, saying which.
    let health = server.probe("/health").await.json();
    let lost = health["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "lost")
        .cloned()
        .unwrap_or_else(|| panic!("lost.sql.toml is not rejected: {health}"));
    assert!(
        lost["reason"]
            .as_str()
            .unwrap()
            .contains("unknown database `archive`; this server serves: shop, library"),
        "{lost}"
    );
    // Each source reports on its own: its checks, pool and login role.
    let sources = health["sources"].as_array().unwrap();
    let names: Vec<&str> = sources
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop", "library"], "{health}");
    for source in sources {
        assert_eq!(source["state"], "ok", "{source}");
    }
    assert_eq!(sources[1]["pool"]["max"], 3, "{health}");
    assert_eq!(
        sources[1]["database"]["role"]["name"], LIBRARIAN,
        "{health}"
    );
    let checks: Vec<&str> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        checks.iter().any(|c| c.starts_with("library/")),
        "{checks:?}"
    );
    // Anyone sees each source's state, nothing more.
    let summary = server.http().get("/health", &[]).await.json();
    assert_eq!(
        summary["sources"],
        json!([{"name": "shop", "state": "ok"}, {"name": "library", "state": "ok"}]),
        "{summary}"
    );
    let ready = server.probe("/ready").await.json();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["sources"][1]["name"], "library", "{ready}");
    assert_eq!(ready["sources"][1]["ok"], true, "{ready}");

    // Each pool is a metric of its own; the old gauges sum them.
    let metrics = server.metrics().await;
    let max = |source| {
        sample(
            &metrics,
            "db_source_connections",
            &[("source", source), ("state", "max")],
        )
    };
    assert_eq!(max("library"), Some(3.0), "{metrics}");
    let shop_max = max("shop").unwrap();
    assert_eq!(
        sample(&metrics, "db_pool_max_connections", &[]),
        Some(shop_max + 3.0)
    );
    drop(server);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

/// Polls `/health` (with the token) until `done` holds of it.
async fn until_health(server: &TestServer, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let response = server.probe("/health").await;
        let body = response.json();
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "/health is still {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_source_down_leaves_the_other_serving() {
    let pg = library().await;
    let dir = TempDir::new();
    std::fs::write(dir.path().join("sources.toml"), sources_text(Some(&pg))).unwrap();
    let server = server(&dir, &[]).await;
    let mut mcp = server.mcp().await;
    mcp.structured(
        "query_sql",
        json!({"sql": "SELECT 1", "database": "library"}),
    )
    .await;

    let pg = stop(pg).await;
    let health = until_health(&server, |h| h["sources"][1]["state"] == "down").await;
    // Degraded, not down: the shop still serves, so probes keep this replica.
    assert_eq!(health["state"], "degraded", "{health}");
    assert_eq!(health["sources"][0]["state"], "ok", "{health}");
    assert_eq!(server.probe("/health").await.status, StatusCode::OK);
    let ready = server.probe("/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    let ready = ready.json();
    let warnings = ready["warnings"].to_string();
    assert!(warnings.contains("source library is down"), "{ready}");
    assert_eq!(ready["sources"][1]["ok"], false, "{ready}");

    let shop = mcp
        .structured("query_sql", json!({"sql": "SELECT 2 AS two"}))
        .await;
    assert_eq!(shop["rows"], json!([[2]]));
    let started = Instant::now();
    let error = mcp
        .tool_error(
            "query_sql",
            json!({"sql": "SELECT 1", "database": "library"}),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(
        error.contains("unavailable") || error.contains("connect"),
        "{error}"
    );

    let pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.start_server().unwrap();
        pg
    })
    .await
    .unwrap();
    until_health(&server, |h| h["state"] == "ok").await;
    mcp.structured(
        "query_sql",
        json!({"sql": "SELECT 1", "database": "library"}),
    )
    .await;
    drop(server);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

/// Polls the listed `database` enum of `query_sql` until it is `want`.
async fn until_sources(server: &TestServer, want: Value) {
    let started = Instant::now();
    loop {
        let arg = database_arg(server, "query_sql").await;
        if arg["enum"] == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sources are still {arg}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_sources_file_reloads_while_serving() {
    let pg = library().await;
    let dir = TempDir::new();
    let file = dir.path().join("sources.toml");
    std::fs::write(&file, sources_text(None)).unwrap();
    let server = server(&dir, &[]).await;
    until_sources(&server, json!(["shop"])).await;
    let mut mcp = server.mcp().await;

    // Added: a listening session is told the tools changed; listed, and served.
    let mut stream = mcp.open_stream().await;
    std::fs::write(&file, sources_text(Some(&pg))).unwrap();
    let note = stream.next_message(Duration::from_secs(20)).await.unwrap();
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    until_sources(&server, json!(["shop", "library"])).await;
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT count(*) FROM books", "database": "library"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[3]]));

    // A file that does not parse is refused whole; the sources serving stay, and the
    // probes say why (without the file's text, which may hold a password).
    std::fs::write(
        &file,
        "[[source]]\nname = \"shop\"\nurl = \"postgres://u:hunter2@h/d\n",
    )
    .unwrap();
    let health = until_health(&server, |h| !h["sources_rejected"].is_null()).await;
    assert_eq!(health["state"], "degraded", "{health}");
    let reason = health["sources_rejected"].as_str().unwrap();
    assert!(reason.contains("not a valid sources file"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");
    let ready = server.probe("/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(
        ready.text().contains("the sources file was refused"),
        "{}",
        ready.text()
    );
    mcp.structured(
        "query_sql",
        json!({"sql": "SELECT 1", "database": "library"}),
    )
    .await;

    // A source whose role can write is refused whatever the database's state: the
    // whole file is, naming it.
    let mut privileged = sources_text(Some(&pg));
    privileged.push_str(&format!(
        "\n[[source]]\nname = \"admin\"\nurl = \"{}\"\n",
        superuser_url()
    ));
    std::fs::write(&file, privileged).unwrap();
    until_health(&server, |h| {
        h["sources_rejected"]
            .as_str()
            .is_some_and(|r| r.contains("source `admin`"))
    })
    .await;
    assert_eq!(
        database_arg(&server, "query_sql").await["enum"],
        json!(["shop", "library"])
    );

    // Removed: no longer listed, and a call naming it is told which remain.
    std::fs::write(&file, sources_text(None)).unwrap();
    until_sources(&server, json!(["shop"])).await;
    let healthy = until_health(&server, |h| h["sources_rejected"].is_null()).await;
    assert_eq!(healthy["state"], "ok", "{healthy}");
    let error = mcp
        .protocol_error(
            "query_sql",
            json!({"sql": "SELECT 1", "database": "library"}),
        )
        .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown database `library`; this server serves: shop"),
        "{error}"
    );
    drop(server);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

async fn bad_sources_stop_the_start_naming_the_source() {
    let dir = TempDir::new();
    let file = dir.path().join("sources.toml");
    let path = file.to_str().unwrap();
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write(&sources_text(None));
    let error = start_error_with(&["--sources", path, "--database-url", &reader_url()])
        .await
        .unwrap();
    assert!(
        error.contains("the sources file names every database"),
        "{error}"
    );
    let error = start_error_with(&[]).await.unwrap();
    assert!(
        error.contains("no database: give --database-url"),
        "{error}"
    );

    write("[[source]]\nname = \"shop\"\nurl_env = \"MCP_SANDBOX_TEST_UNSET_URL\"\n");
    let error = start_error_with(&["--sources", path]).await.unwrap();
    assert!(
        error.contains("source `shop`: url_env names MCP_SANDBOX_TEST_UNSET_URL, which is not set"),
        "{error}"
    );
    write(&format!(
        "[[source]]\nname = \"shop\"\nurl = \"{}\"\n[[source]]\nname = \"shop\"\nurl = \"{}\"\n",
        reader_url(),
        reader_url()
    ));
    let error = start_error_with(&["--sources", path]).await.unwrap();
    assert!(error.contains("source `shop` is named twice"), "{error}");
    // A role that can write, in any source, stops the start and is named.
    write(&format!(
        "{}\n[[source]]\nname = \"admin\"\nurl = \"{}\"\n",
        sources_text(None),
        superuser_url()
    ));
    let error = start_error_with(&["--sources", path]).await.unwrap();
    assert!(error.contains("source `admin`"), "{error}");
    assert!(error.contains("superuser"), "{error}");
    // A source that is down stops it too, unless the operator allows it.
    let port = crate::util::free_port();
    write(&format!(
        "{}\n[[source]]\nname = \"gone\"\nurl = \"postgres://{LIBRARIAN}@127.0.0.1:{port}/postgres\"\n\
         connect_timeout = \"1s\"\n",
        sources_text(None)
    ));
    let error = start_error_with(&["--sources", path]).await.unwrap();
    assert!(error.contains("source `gone`"), "{error}");
    assert!(error.contains("--allow-db-down-at-start"), "{error}");
    assert_eq!(
        start_error_with(&["--sources", path, "--allow-db-down-at-start"]).await,
        None
    );
}

/// The real binary, launched over stdio as a client launches it, the URLs in the
/// environment (`url_env`), not in the file.
async fn the_binary_serves_a_sources_file_over_stdio() {
    use crate::stdio::{Client, launch_command};
    let dir = TempDir::new();
    let file = dir.path().join("sources.toml");
    std::fs::write(
        &file,
        "[[source]]\nname = \"shop\"\nurl_env = \"SHOP_URL\"\n\n[[source]]\nname = \
         \"capped\"\nurl_env = \"CAPPED_URL\"\nmax_rows = 1\n",
    )
    .unwrap();
    let url = reader_url();
    let child = launch_command(
        &crate::binary::binary().to_string_lossy(),
        &["stdio", "--sources", file.to_str().unwrap()],
        &[("SHOP_URL", &url), ("CAPPED_URL", &url)],
    );
    let mut client = Client::new(child);
    client.initialize().await;
    let listed = client.request(1, "tools/list", json!({})).await;
    let query_sql = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "query_sql")
        .cloned()
        .unwrap();
    assert_eq!(
        query_sql["inputSchema"]["properties"]["database"]["enum"],
        json!(["shop", "capped"]),
        "{query_sql}"
    );
    let sql = "SELECT generate_series(1, 3)";
    for (id, database, rows) in [(2, "shop", 3), (3, "capped", 1)] {
        let answer = client
            .request(
                id,
                "tools/call",
                json!({"name": "query_sql", "arguments": {"sql": sql, "database": database}}),
            )
            .await;
        let out = &answer["result"]["structuredContent"];
        assert_eq!(out["row_count"], rows, "{answer}");
    }
    let (code, _) = client.close(Duration::from_secs(30)).await;
    assert_eq!(code, 0);
}

/// A token with `databases = [...]` reaches only those sources, through any tool.
async fn a_token_uses_only_its_databases() {
    let pg = library().await;
    let dir = TempDir::new();
    let sources = dir.path().join("sources.toml");
    std::fs::write(&sources, sources_text(Some(&pg))).unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\nname = \"clerk\"\ntoken = \"clerk-token-0123456789\"\ndatabases = [\"shop\"]\n\n\
         [[tokens]]\nname = \"reader\"\ntoken = \"reader-token-012345678\"\n",
    )
    .unwrap();
    let components = TempDir::new();
    std::fs::write(
        components.path().join("catalog.sql.toml"),
        "source = \"library\"\n[[tool]]\nname = \"book_titles\"\ndescription = \"Every \
         title\"\nstatement = \"SELECT title FROM books ORDER BY id\"\n",
    )
    .unwrap();
    let args = [
        "mcp-sandbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--sources",
        sources.to_str().unwrap(),
        "--tokens-file",
        tokens.to_str().unwrap(),
        "--components-dir",
        components.path_str(),
    ];
    let server = TestServer::from_args(&args, Some("reader-token-012345678")).await;
    let mut clerk = server.mcp_as(Some("clerk-token-0123456789")).await;
    let shop = clerk
        .structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(shop["rows"], json!([[1]]));
    for (tool, arguments) in [
        (
            "query_sql",
            json!({"sql": "SELECT 1", "database": "library"}),
        ),
        ("list_tables", json!({"database": "library"})),
        ("book_titles", json!({})),
    ] {
        let error = clerk.protocol_error(tool, arguments).await;
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("this caller may not use database `library`; it may use: shop"),
            "{tool}: {message}"
        );
    }
    // A token without the list reaches every source.
    let mut reader = server.mcp_as(Some("reader-token-012345678")).await;
    let titles = reader.structured("book_titles", json!({})).await;
    assert_eq!(titles["row_count"], 2, "{titles}");
    drop(server);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}
