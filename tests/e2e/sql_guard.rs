//! The read-only SQL guard under attack: every form of write fails with a clear tool
//! error and a fingerprint of the data proves nothing changed; nothing leaks between
//! calls through a pooled connection; timeouts cancel on the server; caps hold.

use crate::util::TestServer;
use serde_json::json;
use std::time::{Duration, Instant};

crate::trials!(sql_guard: every_form_of_write_is_refused_and_nothing_changes, explain_query_refuses_what_the_guard_refuses, the_guard_holds_even_for_a_superuser_connection, nothing_leaks_between_calls, statement_timeout_cancels_on_the_server, million_rows_return_quickly_capped, byte_cap_truncates, a_privileged_login_role_is_refused, a_role_that_gains_writes_is_refused_on_new_connections, resetting_the_role_gains_nothing, db_role_is_gone_with_a_reason, functions_that_run_sql_text_are_refused_as_pg_proc_lists_them, no_denied_function_is_reached_through_sql_text, denied_functions_are_refused_in_field_notation, the_guard_reads_sql_as_postgres_does, exhausted_pool_fails_fast_and_recovers, connections_rest_outside_a_transaction);

/// Writes, DDL, transaction control, writable CTEs, writing functions, DO, COPY,
/// sequences, EXPLAIN ANALYZE, role changes, locks, LISTEN/NOTIFY, PREPARE, and the
/// functions that act outside the transaction.
const ATTACKS: &[&str] = &[
    "DELETE FROM orders",
    "UPDATE products SET price = 0",
    "INSERT INTO customers (email, full_name) VALUES ('x@example.com', 'x')",
    "MERGE INTO products p USING (SELECT 1 AS id) s ON p.id = s.id WHEN MATCHED THEN DELETE",
    "DROP TABLE orders",
    "CREATE TABLE stolen (x int)",
    "TRUNCATE orders",
    "ALTER TABLE orders ADD COLUMN x int",
    "GRANT ALL ON orders TO PUBLIC",
    "COMMENT ON TABLE orders IS 'pwned'",
    "SELECT 1; DELETE FROM orders",
    "COMMIT; DELETE FROM orders",
    "ROLLBACK; DELETE FROM orders",
    "END; DELETE FROM orders",
    "BEGIN; DELETE FROM orders",
    "SET TRANSACTION READ WRITE; DELETE FROM orders",
    "SELECT 1; COMMIT",
    "START TRANSACTION READ WRITE",
    "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
    "WITH cheap AS (UPDATE products SET price = 0 RETURNING *) SELECT count(*) FROM cheap",
    "SELECT public.bump_price()",
    "SELECT * FROM orders WHERE public.bump_price() > 0",
    "DO $$ BEGIN DELETE FROM orders; END $$",
    "COPY orders TO STDOUT",
    "COPY orders FROM STDIN",
    "COPY (SELECT 1) TO '/tmp/mcp-sandbox-copy'",
    "SELECT nextval('orders_id_seq')",
    "SELECT setval('orders_id_seq', 1000)",
    "EXPLAIN ANALYZE DELETE FROM orders",
    "EXPLAIN ANALYZE SELECT public.bump_price()",
    "EXPLAIN (ANALYZE) WITH d AS (DELETE FROM orders RETURNING 1) SELECT * FROM d",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "RESET ROLE",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT set_config('transaction_read_only', 'off', false)",
    "SELECT set_config('default_transaction_read_only', 'off', false), nextval('orders_id_seq')",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM orders FOR SHARE",
    "LOCK TABLE orders",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT pg_advisory_xact_lock(1)",
    "LISTEN ch",
    "NOTIFY ch",
    "UNLISTEN *",
    "SELECT pg_notify('ch', 'x')",
    "PREPARE p AS DELETE FROM orders",
    "EXECUTE p",
    "DEALLOCATE ALL",
    "DISCARD ALL",
    "SELECT * INTO stolen FROM orders",
    "SELECT * INTO TEMP stolen FROM orders",
    "CREATE TEMP TABLE t AS SELECT 1",
    "VACUUM orders",
    "ANALYZE orders",
    "REFRESH MATERIALIZED VIEW product_sales",
    "CALL nothing()",
    "CHECKPOINT",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_create(0)",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "SELECT pg_cancel_backend(pg_backend_pid())",
    "SELECT pg_reload_conf()",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT query_to_xml('DELETE FROM orders', true, false, '')",
    "SELECT \"pg_advisory_lock\"(1)",
    "SELECT U&\"\\0070g_advisory_lock\"(1)",
    "/* SELECT */ DELETE FROM orders",
    "(DELETE FROM orders)",
    "SELECT txid_current()",
    // Functions that run SQL given as text, which the statement check never sees.
    "SELECT * FROM ts_stat('SELECT to_tsvector(pg_terminate_backend(pg_backend_pid())::text)')",
    "SELECT * FROM pg_catalog.ts_stat('SELECT to_tsvector(public.bump_price()::text)', 'a')",
    "SELECT ts_rewrite('a'::tsquery, 'SELECT public.bump_price()::text::tsquery, ''b''::tsquery')",
    "SELECT query_to_xml_and_xmlschema('SELECT public.bump_price()', true, false, '')",
    "SELECT table_to_xml('orders', true, false, '')",
    "SELECT schema_to_xml('public', true, false, '')",
    "SELECT database_to_xml(true, false, '')",
    // Field notation calls a one-argument function without parentheses.
    "SELECT (1::bigint).pg_advisory_lock",
    "SELECT ('SELECT to_tsvector(public.bump_price()::text)'::text).ts_stat",
];

/// md5 of every row of every sample table, the sequences, and the catalog's object
/// counts: any change anywhere shows.
async fn fingerprint(db: &tokio_postgres::Client) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "customers",
        "products",
        "orders",
        "order_items",
        "\"ProductReviews\"",
    ] {
        let sql = format!(
            "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"
        );
        out.push(db.query_one(&sql, &[]).await.unwrap().get::<_, String>(0));
    }
    for seq in ["customers_id_seq", "products_id_seq", "orders_id_seq"] {
        let row = db
            .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
            .await
            .unwrap();
        out.push(format!(
            "{seq}={}/{}",
            row.get::<_, i64>(0),
            row.get::<_, bool>(1)
        ));
    }
    let catalog = "SELECT (SELECT count(*) FROM pg_class)::text || '/' || \
                   (SELECT count(*) FROM pg_roles) || '/' || (SELECT count(*) FROM pg_largeobject_metadata) || \
                   '/' || (SELECT coalesce(string_agg(d.description, ','), '') FROM pg_description d)";
    out.push(
        db.query_one(catalog, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
    );
    out
}

async fn every_form_of_write_is_refused_and_nothing_changes() {
    let report = attack(&crate::util::db::reader_url(), &[], &[]).await;
    eprintln!("attack report (as mcp_reader):\n{}", report.join("\n"));
}

/// Connected as the superuser (only with the loud override), with no role to fall back
/// on: the guard's own layers (keyword allowlist, one statement, read-only transaction,
/// rollback, function denylist) must stop every attack. A superuser may change its role
/// inside the transaction; that is rolled back with it.
async fn the_guard_holds_even_for_a_superuser_connection() {
    let harmless = ["SELECT set_config('role', 'postgres', false)"];
    let report = attack(
        &crate::util::db::superuser_url(),
        &harmless,
        &["--insecure-allow-privileged-role"],
    )
    .await;
    eprintln!("attack report (as superuser):\n{}", report.join("\n"));
}

/// Runs every attack through `query_sql` on a server connected to `url`; each must be a
/// tool error (except `may_succeed`) and the data must not change.
async fn attack(url: &str, may_succeed: &[&str], flags: &[&str]) -> Vec<String> {
    attack_through(
        url,
        may_succeed,
        flags,
        "query_sql",
        |sql| json!({"sql": sql}),
    )
    .await
}

/// `explain_query` puts the caller's text inside an EXPLAIN: everything the guard refuses
/// is refused there too, planned only or, with the operator's flag, analyzed (run).
async fn explain_query_refuses_what_the_guard_refuses() {
    let reader = crate::util::db::reader_url();
    // Planned but not run, these are harmless: query_sql refuses them only when they run
    // (the read-only transaction stops the write), and so does EXPLAIN ANALYZE below.
    let planned = [
        "SELECT public.bump_price()",
        "SELECT * FROM orders WHERE public.bump_price() > 0",
        "SELECT nextval('orders_id_seq')",
        "SELECT setval('orders_id_seq', 1000)",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT set_config('transaction_read_only', 'off', false)",
        "SELECT set_config('default_transaction_read_only', 'off', false), nextval('orders_id_seq')",
    ];
    for (flags, analyze, may_succeed) in [
        (&[][..], false, &planned[..]),
        (&["--allow-explain-analyze"][..], true, &[][..]),
    ] {
        let report = attack_through(
            &reader,
            may_succeed,
            flags,
            "explain_query",
            |sql| json!({"sql": sql, "analyze": analyze}),
        )
        .await;
        eprintln!(
            "attack report (explain_query, analyze {analyze}):\n{}",
            report.join("\n")
        );
    }
}

/// [`attack`] through any tool, `arguments` making its arguments from the attack.
async fn attack_through(
    url: &str,
    may_succeed: &[&str],
    flags: &[&str],
    tool: &str,
    arguments: impl Fn(&str) -> serde_json::Value,
) -> Vec<String> {
    // `public.bump_price()`, a function that writes, is created with the test database.
    let superuser = crate::util::db::superuser().await;
    let before = fingerprint(&superuser).await;
    let mut all = vec!["--pool-size", "2"];
    all.extend(flags);
    let server = TestServer::launch(url, Some(crate::util::server::TOKEN), &all).await;
    let mut mcp = server.mcp().await;
    let mut report = Vec::new();
    for sql in ATTACKS {
        let result = mcp.result(tool, arguments(sql)).await;
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !may_succeed.contains(sql) {
            assert_eq!(result["isError"], true, "{sql} was not refused: {text}");
            assert!(!text.is_empty(), "{sql}: the error says why");
        }
        report.push(format!(
            "{sql}  =>  {}{}",
            if result["isError"] == true {
                ""
            } else {
                "(admitted) "
            },
            text.lines().next().unwrap_or_default()
        ));
        assert_eq!(
            fingerprint(&superuser).await,
            before,
            "{sql} changed the data"
        );
    }
    // The session and the pool are still fine afterwards.
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT count(*) AS n FROM orders"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[6]]));
    report
}

/// The rollback goes out with the statement: when a call has answered, its connection
/// already rests outside any transaction (an idle-in-transaction connection would hold
/// back vacuum on the whole database).
async fn connections_rest_outside_a_transaction() {
    let url = format!(
        "{}?application_name=rests-outside",
        crate::util::db::reader_url()
    );
    let server = TestServer::launch(
        &url,
        Some(crate::util::server::TOKEN),
        &["--pool-size", "2"],
    )
    .await;
    let mut mcp = server.mcp().await;
    let superuser = crate::util::db::superuser().await;
    for sql in ["SELECT 1", "SELECT * FROM nope", "SHOW work_mem"] {
        mcp.result("query_sql", json!({"sql": sql})).await;
        let states: Vec<String> = superuser
            .query(
                "SELECT state FROM pg_stat_activity WHERE application_name = 'rests-outside'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(!states.is_empty(), "the pooled connection is open");
        assert!(states.iter().all(|s| s == "idle"), "{sql}: {states:?}");
    }
}

async fn nothing_leaks_between_calls() {
    // One pooled connection: every call reuses it.
    let server = TestServer::with_flags(&["--pool-size", "1", "--statement-timeout", "5s"]).await;
    let mut mcp = server.mcp().await;
    let show = async |mcp: &mut crate::util::Mcp, setting: &str| {
        let out = mcp
            .structured("query_sql", json!({"sql": format!("SHOW {setting}")}))
            .await;
        out["rows"][0][0].clone()
    };
    let defaults = (
        show(&mut mcp, "application_name").await,
        show(&mut mcp, "search_path").await,
        show(&mut mcp, "statement_timeout").await,
        show(&mut mcp, "work_mem").await,
    );
    for sql in [
        "SELECT set_config('application_name', 'leaked', false)",
        "SELECT set_config('search_path', 'pg_catalog', false)",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT set_config('work_mem', '1GB', false)",
        "SELECT set_config('application_name', 'leaked-local', true)",
    ] {
        mcp.structured("query_sql", json!({"sql": sql})).await;
    }
    let after = (
        show(&mut mcp, "application_name").await,
        show(&mut mcp, "search_path").await,
        show(&mut mcp, "statement_timeout").await,
        show(&mut mcp, "work_mem").await,
    );
    assert_eq!(after, defaults);
    assert_eq!(defaults.2, json!("5s"));
    // No temporary objects, prepared statements or cursors can be left behind.
    for sql in [
        "CREATE TEMP TABLE t (x int)",
        "PREPARE p AS SELECT 1",
        "DECLARE c CURSOR FOR SELECT 1",
    ] {
        mcp.tool_error("query_sql", json!({"sql": sql})).await;
    }
    let state = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS user_prepared, \
                    (SELECT count(*) FROM pg_cursors WHERE name NOT IN ('mcp_sandbox_cursor', '')) AS cursors, \
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') AS advisory"}),
        )
        .await;
    assert_eq!(
        state["rows"],
        json!([[0, 0, 0]]),
        "only the guard's own cursor and portal"
    );
}

async fn statement_timeout_cancels_on_the_server() {
    let server =
        TestServer::with_flags(&["--statement-timeout", "300ms", "--pool-size", "1"]).await;
    let mut mcp = server.mcp().await;
    let started = Instant::now();
    let text = mcp
        .tool_error("query_sql", json!({"sql": "SELECT pg_sleep(20)"}))
        .await;
    assert!(
        text.starts_with("canceled: the statement ran past its time limit")
            && text.contains("The statement timeout is 300ms: narrow the statement"),
        "the model is told the limit: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let superuser = crate::util::db::superuser().await;
    let running: i64 = superuser
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(20)%' \
             AND state = 'active' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "the statement was cancelled on the server");
    // The pool's only connection came back healthy.
    let out = mcp
        .structured("query_sql", json!({"sql": "SELECT 1 AS ok"}))
        .await;
    assert_eq!(out["rows"], json!([[1]]));
    let idle_timeout = mcp
        .structured(
            "query_sql",
            json!({"sql": "SHOW idle_in_transaction_session_timeout"}),
        )
        .await;
    assert_eq!(idle_timeout["rows"], json!([["35s"]]), "call timeout + 5s");
}

async fn million_rows_return_quickly_capped() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let started = Instant::now();
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 1000000) g"}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(out["row_count"], 1000);
    assert_eq!(out["truncated"], true);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

async fn byte_cap_truncates() {
    let server = TestServer::with_flags(&["--max-result-mib", "1"]).await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT g, repeat('x', 100000) AS blob FROM generate_series(1, 100) g"}),
        )
        .await;
    let rows = out["row_count"].as_u64().unwrap();
    assert!(
        (9..=11).contains(&rows),
        "about 1 MiB of 100 kB rows: {rows}"
    );
    assert_eq!(out["truncated"], true);
}

/// A login role that can write, or is a superuser, is refused at start with what it can
/// do and the SQL that makes a proper role; the loud override lets it in and says so in
/// `/health`, a metric and the log.
async fn a_privileged_login_role_is_refused() {
    let error = crate::util::server::start_error(&crate::util::db::superuser_url(), &[])
        .await
        .expect("a superuser is refused");
    for expected in [
        "`postgres` can do more than read",
        "is a superuser",
        "CREATE ROLE mcp_reader LOGIN",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO mcp_reader",
        "--insecure-allow-privileged-role",
    ] {
        assert!(error.contains(expected), "{expected:?} in {error}");
    }
    let writer = crate::util::db::role_url("probe_writer");
    let error = crate::util::server::start_error(&writer, &[])
        .await
        .expect("a writer is refused");
    assert!(
        error.contains("may write")
            && error.contains("public.orders")
            && error.contains("orders_id_seq"),
        "{error}"
    );
    for (role, what) in [
        ("probe_signaller", "pg_signal_backend"),
        ("probe_bypass", "BYPASSRLS"),
        // A superuser whose sessions start as a read-only role (ALTER ROLE … SET role):
        // set_config('role', 'none', true) is all it takes to be the superuser again.
        ("probe_super_defaulted", "is a superuser"),
        // Writes behind a membership it does not inherit, a set_config('role', …) away.
        ("probe_noinherit", "public.orders"),
    ] {
        let error = crate::util::server::start_error(&crate::util::db::role_url(role), &[])
            .await
            .expect("refused");
        assert!(error.contains(what), "{what} in {error}");
    }
    // A proper read-only role starts.
    assert_eq!(
        crate::util::server::start_error(&crate::util::db::role_url("probe_reader"), &[]).await,
        None
    );
    // The override: served, and said so.
    let server = TestServer::launch(
        &writer,
        Some(crate::util::server::TOKEN),
        &["--insecure-allow-privileged-role"],
    )
    .await;
    let health = server.probe("/health").await.json();
    let role = &health["database"]["role"];
    assert_eq!(role["name"], "probe_writer", "{health}");
    assert_eq!(role["read_only"], false);
    assert_eq!(role["allowed_by_override"], true);
    let metrics = server.metrics().await;
    assert_eq!(
        crate::util::metrics::count(&metrics, "db_role_privileged", &[]),
        1.0
    );
    let reader_server = TestServer::start().await;
    let metrics = reader_server.metrics().await;
    assert_eq!(
        crate::util::metrics::count(&metrics, "db_role_privileged", &[]),
        0.0
    );
}

/// Privileges granted after the start are caught on the next new connection: it is
/// refused, the call fails with a tool error saying why, and a revoke heals it.
async fn a_role_that_gains_writes_is_refused_on_new_connections() {
    let url = crate::util::db::role_url("probe_later");
    let server = TestServer::launch(
        &url,
        Some(crate::util::server::TOKEN),
        &["--pool-size", "1"],
    )
    .await;
    let mut mcp = server.mcp().await;
    mcp.structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    let superuser = crate::util::db::superuser().await;
    superuser
        .batch_execute(
            "GRANT DELETE ON public.orders TO probe_later; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'probe_later'",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let text = loop {
        let result = mcp
            .result("query_sql", json!({"sql": "SELECT 1 AS one"}))
            .await;
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if result["isError"] == true && text.contains("more than read") {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{result}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("unavailable"), "{text}");
    superuser
        .batch_execute("REVOKE DELETE ON public.orders FROM probe_later")
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let result = mcp
            .result("query_sql", json!({"sql": "SELECT 1 AS one"}))
            .await;
        if result["isError"] != true {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{result}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The red team's escape from `--db-role`, run against a proper login role: resetting
/// the role leaves the session as that role, and what it may not read stays out of
/// reach, through SQL text too.
async fn resetting_the_role_gains_nothing() {
    // vault.secrets ('the-secret') is made with the test database, out of mcp_reader's reach.
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT a.r, current_user::text AS who FROM (SELECT set_config('role', 'none', true) AS r) a"}),
        )
        .await;
    assert_eq!(out["rows"], json!([["none", "mcp_reader"]]));
    for sql in [
        "SELECT * FROM vault.secrets",
        "SELECT a.r, b.* FROM (SELECT set_config('role', 'none', true) AS r) a, LATERAL (SELECT * FROM vault.secrets) b",
        "SELECT set_config('role', 'postgres', true)",
        "SELECT a.r, b.* FROM (SELECT set_config('role','none',true) AS r) a, \
         LATERAL ts_stat('SELECT to_tsvector(s) FROM vault.secrets WHERE ' || (a.r IS NOT NULL)::text) b",
    ] {
        let text = mcp.tool_error("query_sql", json!({ "sql": sql })).await;
        assert!(!text.contains("the-secret"), "{sql}: {text}");
        assert!(
            text.contains("permission denied") || text.contains("not allowed"),
            "{sql}: {text}"
        );
    }
}

/// `--db-role` is gone: given, the server says why and what to do instead.
async fn db_role_is_gone_with_a_reason() {
    let error = crate::util::server::start_error(
        &crate::util::db::reader_url(),
        &["--db-role", "mcp_reader"],
    )
    .await
    .expect("refused");
    assert!(
        error.contains("--db-role")
            && error.contains("removed")
            && error.contains("read-only role"),
        "{error}"
    );
}

/// The class of functions that run SQL given as text (or read whole relations), as this
/// PostgreSQL's own catalog lists them: an input argument named `query`, `sqlquery` or
/// `select`, the `*_to_xml*` exports, and `ts_rewrite`, whose text argument is unnamed.
/// Every one is refused, whatever the spelling, so a new one in a later PostgreSQL fails
/// this test until the guard knows it.
async fn functions_that_run_sql_text_are_refused_as_pg_proc_lists_them() {
    let superuser = crate::util::db::superuser().await;
    let rows = superuser
        .query(
            "SELECT DISTINCT p.proname::text FROM pg_catalog.pg_proc p \
             WHERE p.pronamespace = 'pg_catalog'::regnamespace AND ( \
               p.proname ~ '_to_xml' OR p.proname = 'ts_rewrite' \
               OR EXISTS (SELECT 1 FROM unnest(p.proargnames, \
                            coalesce(p.proargmodes::text[], array_fill('i'::text, ARRAY[coalesce(cardinality(p.proargnames), 0)]))) \
                          AS a(name, mode) \
                          WHERE a.mode IN ('i', 'b', 'v') AND a.name IN ('query', 'sqlquery', 'select'))) \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for expected in [
        "ts_stat",
        "ts_rewrite",
        "query_to_xml",
        "table_to_xml",
        "cursor_to_xml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    for name in &names {
        for spelling in [
            format!("SELECT * FROM {name}('SELECT 1')"),
            format!("SELECT * FROM pg_catalog.{name}('SELECT 1')"),
            format!("SELECT * FROM \"{name}\" ('SELECT 1')"),
            format!("SELECT * FROM {} /* c */ ('SELECT 1')", name.to_uppercase()),
        ] {
            let text = mcp
                .tool_error("query_sql", json!({ "sql": spelling }))
                .await;
            assert!(text.contains("not allowed"), "{spelling}: {text}");
        }
    }
}

/// Another backend of the server's own role (a second connection as `mcp_reader`)
/// survives every attempt to signal it: through a function that runs SQL text, and
/// through field notation, which calls a one-argument function without parentheses.
async fn no_denied_function_is_reached_through_sql_text() {
    let (victim, connection) =
        tokio_postgres::connect(&crate::util::db::reader_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let kill = format!("pg_terminate_backend({pid})");
    for sql in [
        format!("SELECT * FROM ts_stat('SELECT to_tsvector({kill}::text)')"),
        format!("SELECT * FROM ts_stat('SELECT to_tsvector({kill}::text)', 'a')"),
        format!(
            "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery WHERE {kill}')"
        ),
        format!("SELECT query_to_xml('SELECT {kill}', true, false, '')"),
        format!("SELECT query_to_xmlschema('SELECT {kill}', true, false, '')"),
        format!("SELECT query_to_xml_and_xmlschema('SELECT {kill}', true, false, '')"),
        format!(
            "SELECT * FROM ts_stat(concat('SELECT to_tsvector(', 'pg_terminate', '_backend({pid})::text)'))"
        ),
        format!("SELECT ({pid}).pg_terminate_backend"),
        format!("SELECT (a.pid).pg_terminate_backend FROM pg_stat_activity a WHERE a.pid = {pid}"),
        format!("SELECT a.pid.pg_terminate_backend FROM pg_stat_activity a WHERE a.pid = {pid}"),
        format!(
            "SELECT * FROM ts_stat(('SELECT to_tsvector(' || ({pid}).pg_terminate_backend || ')'))"
        ),
    ] {
        let text = mcp.tool_error("query_sql", json!({ "sql": sql })).await;
        assert!(text.contains("not allowed"), "{sql}: {text}");
    }
    let alive: i32 = victim.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(alive, 1);
}

/// A differential check of the guard's lexer against Postgres's: statements built from
/// pieces where lexers disagree (comment ends, string kinds, dollar-quote tags, quoted
/// identifiers, Unicode blanks) followed by a denied call. Whenever the guard admits one,
/// Postgres must not see the call in it: `EXPLAIN (VERBOSE)` shows every function a plan
/// would run.
async fn the_guard_reads_sql_as_postgres_does() {
    const PIECES: &[&str] = &[
        "--c\r",
        "--c\n",
        "--",
        "/* c */",
        "/* /* c */ */",
        "/*",
        "*/",
        "'s'",
        "'",
        "''",
        "'\\'",
        "E'\\''",
        "e'",
        "E'",
        "$$",
        "$$d$$",
        "$t$",
        "$t$d$t$",
        "$\u{20ac}$",
        "$\u{a0}$",
        "$1",
        "\"q\"",
        "\"",
        "\"\"",
        "x\u{a0}e",
        "\u{a0}",
        "\u{2003}",
        "\t",
        "\x0b",
        "\x0c",
        "\r",
        "U&'x'",
        "b'0'",
        "x",
        ",",
        "(",
        ")",
        ".",
        " ",
    ];
    let superuser = crate::util::db::superuser().await;
    // A fixed seed: the same thousands of statements every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut admitted, mut checked) = (0, 0);
    for _ in 0..3000 {
        let mut sql = String::from("SELECT 1 AS a ");
        for _ in 0..(next() % 5 + 1) {
            sql.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            if next() % 2 == 0 {
                sql.push(' ');
            }
        }
        sql.push_str(", pg_advisory_xact_lock(7) AS b");
        if mcp_sandbox::db::admits(&sql).is_err() {
            continue;
        }
        admitted += 1;
        let explained = superuser
            .simple_query(&format!("EXPLAIN (VERBOSE) {sql}"))
            .await;
        let Ok(messages) = explained else { continue };
        checked += 1;
        let plan: String = messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert!(
            !plan.contains("pg_advisory"),
            "the guard admitted {sql:?}, in which Postgres calls a denied function:\n{plan}"
        );
    }
    eprintln!("lexer differential: {admitted} of 3000 admitted, {checked} planned by Postgres");
    assert!(
        checked > 0,
        "no admitted statement was valid SQL: the test checked nothing"
    );
}

/// Every function the guard denies that takes one argument (as this PostgreSQL's catalog
/// lists them) is refused in field notation too: `(x).name` and `t.x.name` call it.
async fn denied_functions_are_refused_in_field_notation() {
    let superuser = crate::util::db::superuser().await;
    let rows = superuser
        .query(
            "SELECT DISTINCT p.proname::text, format_type(p.proargtypes[0], NULL) \
             FROM pg_catalog.pg_proc p \
             WHERE p.pronamespace = 'pg_catalog'::regnamespace \
               AND p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let denied: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(name, _)| mcp_sandbox::db::denied_function(name))
        .collect();
    for expected in [
        "pg_terminate_backend",
        "pg_advisory_lock",
        "ts_stat",
        "lo_get",
    ] {
        assert!(
            denied.iter().any(|(n, _)| n == expected),
            "{expected} in {denied:?}"
        );
    }
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    for (name, arg_type) in &denied {
        for sql in [
            format!("SELECT (NULL::{arg_type}).{name}"),
            format!("SELECT t.x.\"{name}\" FROM (SELECT NULL::{arg_type} AS x) t"),
        ] {
            let text = mcp.tool_error("query_sql", json!({ "sql": sql })).await;
            assert!(text.contains("not allowed"), "{sql}: {text}");
        }
    }
}

async fn exhausted_pool_fails_fast_and_recovers() {
    let server = TestServer::with_flags(&["--pool-size", "1", "--pool-timeout", "300ms"]).await;
    let mut holder = server.mcp().await;
    let slow = tokio::spawn(async move {
        holder
            .structured(
                "query_sql",
                json!({"sql": "SELECT 1 AS done FROM pg_sleep(1.5)"}),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut other = server.mcp().await;
    let started = Instant::now();
    let text = other
        .tool_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert!(text.contains("busy"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap()["rows"], json!([[1]]));
    other
        .structured("query_sql", json!({"sql": "SELECT 1"}))
        .await;
}
