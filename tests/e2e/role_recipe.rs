//! `mcp-sandbox role-sql`: its SQL, run as printed, makes a role the server accepts on a
//! database that lets every role create in `public` (PostgreSQL 14 and older, and
//! clusters upgraded from them), reading every schema named, tables made later included.

use crate::util::server::{TOKEN, TestServer, start_error};
use serde_json::json;

crate::trials!(role_recipe: the_printed_recipe_makes_a_reader_of_every_schema, hostile_names_are_refused_or_quoted);

const DATABASE: &str = "recipe_shop";

/// `url` (of the shared cluster's `postgres` database) for `DATABASE` instead.
fn in_database(url: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{DATABASE}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// `mcp-sandbox role-sql ARGS`: stdout, or stderr when it fails.
async fn role_sql(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(crate::binary::binary())
        .arg("role-sql")
        .args(args)
        .output()
        .await
        .expect("running mcp-sandbox role-sql");
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).expect("UTF-8 SQL")),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

async fn the_printed_recipe_makes_a_reader_of_every_schema() {
    let admin = crate::util::db::superuser().await;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .unwrap();
    let admin = connect(&in_database(&crate::util::db::superuser_url())).await;
    // As PostgreSQL 14 left it: every role may create in public. The owner (the
    // migrations' role) makes tables in three schemas; `recipe_naive` follows the
    // recipe older READMEs gave, which stops short of the revoke.
    admin
        .batch_execute(
            "GRANT CREATE ON SCHEMA public TO PUBLIC; \
             CREATE ROLE recipe_owner LOGIN; CREATE ROLE recipe_naive LOGIN; \
             CREATE SCHEMA sales AUTHORIZATION recipe_owner; \
             CREATE SCHEMA \"Ops Data\" AUTHORIZATION recipe_owner; \
             SET ROLE recipe_owner; \
             CREATE TABLE public.customers (id int); INSERT INTO public.customers VALUES (1); \
             CREATE TABLE sales.orders (id int); INSERT INTO sales.orders VALUES (1), (2); \
             CREATE TABLE \"Ops Data\".shifts (id int); RESET ROLE; \
             GRANT CONNECT ON DATABASE recipe_shop TO recipe_naive; \
             GRANT USAGE ON SCHEMA public TO recipe_naive; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO recipe_naive",
        )
        .await
        .unwrap();
    let naive = in_database(&crate::util::db::role_url("recipe_naive"));
    let refused = start_error(&naive, &[])
        .await
        .expect("refused: it can create");
    for expected in [
        "may create objects in schema public",
        "every role may",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "mcp-sandbox role-sql",
    ] {
        assert!(refused.contains(expected), "{expected:?} in {refused}");
    }

    let sql = role_sql(&[
        "--role",
        "recipe_reader",
        "--database",
        DATABASE,
        "--schemas",
        "public,sales,Ops Data",
        "--owner",
        "recipe_owner",
    ])
    .await
    .expect("the recipe");
    assert!(!sql.contains("PASSWORD '"), "no password in a file: {sql}");
    admin
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    // A table the owner makes after the recipe ran: the default privileges cover it.
    admin
        .batch_execute(
            "SET ROLE recipe_owner; CREATE TABLE sales.later (id int); \
             INSERT INTO sales.later VALUES (1), (2), (3); RESET ROLE",
        )
        .await
        .unwrap();

    let reader = in_database(&crate::util::db::role_url("recipe_reader"));
    assert_eq!(
        start_error(&reader, &[]).await,
        None,
        "the recipe's role starts"
    );
    assert_eq!(
        start_error(&naive, &[]).await,
        None,
        "the revoke healed the old recipe's"
    );
    let server = TestServer::launch(&reader, Some(TOKEN), &[]).await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT (SELECT count(*) FROM public.customers), \
                (SELECT count(*) FROM sales.orders), (SELECT count(*) FROM sales.later), \
                (SELECT count(*) FROM \"Ops Data\".shifts)"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[1, 2, 3, 0]]), "{out}");
    let tables = mcp
        .structured("list_tables", json!({"schema": "sales"}))
        .await;
    assert_eq!(
        tables["tables"].as_array().map(Vec::len),
        Some(2),
        "{tables}"
    );
}

/// Names that would end a statement are quoted; names no login role may have, or that
/// PostgreSQL would cut short, are refused before any SQL is printed.
async fn hostile_names_are_refused_or_quoted() {
    const LONG: &str = "oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo";
    let sql = role_sql(&[
        "--database",
        "shop",
        "--schemas",
        "x\"; DROP TABLE t; --",
        "--role",
        "user",
    ])
    .await
    .expect("quoted, not refused");
    assert!(
        sql.contains("GRANT USAGE ON SCHEMA \"x\"\"; DROP TABLE t; --\" TO \"user\";"),
        "{sql}"
    );
    for (args, why) in [
        (&["--role", "public"][..], "reserved"),
        (&["--role", "pg_reader"], "PostgreSQL's own"),
        (&["--role", ""], "empty"),
        (&["--schemas", "a,,b"], "empty"),
        (&["--owner", LONG], "63 bytes"),
        (&["--schemas", "s\nDROP TABLE t; --"], "control character"),
    ] {
        let mut all = vec!["--database", "shop"];
        all.extend(args);
        let error = role_sql(&all).await.expect_err("refused");
        assert!(error.contains(why), "{args:?}: {why:?} in {error}");
    }
}
