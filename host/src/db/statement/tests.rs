//! Unit tests of the statement classifier and the function denylist.

use super::*;

fn check(sql: &str, expect: Result<Path, &str>) {
    let got = classify(sql);
    match (got, expect) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{sql:?}"),
        (Err(got), Err(want)) => assert!(got.contains(want), "{sql:?}: {got:?} lacks {want:?}"),
        (got, want) => panic!("{sql:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn admits_reads() {
    check("SELECT 1", Ok(Path::Limited));
    check("  select * from t", Ok(Path::Limited));
    check("WITH x AS (SELECT 1) SELECT * FROM x", Ok(Path::Limited));
    check("VALUES (1), (2)", Ok(Path::Limited));
    check("TABLE users", Ok(Path::Limited));
    check("(SELECT 1) UNION (SELECT 2)", Ok(Path::Limited));
    check("-- a comment\nSELECT 1", Ok(Path::Limited));
    check("/* outer /* nested */ still */ SELECT 1", Ok(Path::Limited));
    check("EXPLAIN SELECT 1", Ok(Path::Direct));
    check("show search_path", Ok(Path::Direct));
}

#[test]
fn explain_takes_only_a_query_the_guard_admits() {
    for sql in [
        "EXPLAIN (FORMAT JSON) SELECT 1",
        "explain analyze verbose select 1",
        "EXPLAIN /* c */ (COSTS off, FORMAT json) /* x */ WITH x AS (SELECT 1) TABLE x",
        "EXPLAIN (FORMAT 'json') VALUES (1)",
        "EXPLAIN SELECT 'into' AS \"INTO\" /* into */",
    ] {
        check(sql, Ok(Path::Direct));
    }
    for (sql, reason) in [
        ("EXPLAIN DELETE FROM t", "got DELETE"),
        (
            "EXPLAIN (FORMAT JSON) INSERT INTO t VALUES (1)",
            "got INSERT",
        ),
        ("EXPLAIN ANALYZE UPDATE t SET a = 1", "got UPDATE"),
        ("EXPLAIN (FORMAT ')') DELETE FROM t", "got DELETE"),
        ("EXPLAIN EXPLAIN SELECT 1", "takes a query"),
        ("EXPLAIN CREATE TABLE x AS SELECT 1", "got CREATE"),
        ("EXPLAIN EXECUTE p", "got EXECUTE"),
        ("EXPLAIN DECLARE c CURSOR FOR SELECT 1", "got DECLARE"),
        (
            "EXPLAIN SELECT pg_terminate_backend(1)",
            "pg_terminate_backend",
        ),
        ("EXPLAIN (ANALYZE SELECT 1", "not closed"),
        ("EXPLAIN", "empty"),
        ("EXPLAIN ANALYZE", "empty"),
        // Postgres plans a parenthesised query here; the guard reads an option list
        // and refuses: a safe mistake
        ("EXPLAIN (SELECT 1)", "empty"),
        ("EXPLAIN SELECT * INTO TEMP stolen FROM t", "INTO"),
        ("EXPLAIN ANALYZE SELECT 1 AS a INTO t", "INTO"),
        (
            "EXPLAIN (FORMAT JSON) /* x */ SELECT * iNtO\tt FROM t",
            "INTO",
        ),
        (
            "EXPLAIN WITH x AS (SELECT 1) SELECT * INTO \"t\" FROM x",
            "INTO",
        ),
    ] {
        check(sql, Err(reason));
    }
}

#[test]
fn analyze_is_read_from_explains_options_only() {
    for sql in [
        "EXPLAIN ANALYZE SELECT 1",
        "explain analyse select 1",
        "EXPLAIN (FORMAT JSON, ANALYZE) SELECT 1",
        "EXPLAIN (ANALYZE false) SELECT 1",
        "EXPLAIN VERBOSE ANALYZE SELECT 1",
        "EXPLAIN (\"analyze\") SELECT 1",
        "  /* x */ EXPLAIN (BUFFERS, analyze) SELECT 1",
    ] {
        assert!(analyzes(sql), "{sql}");
    }
    for sql in [
        "EXPLAIN SELECT analyze FROM t",
        "EXPLAIN (FORMAT JSON) SELECT 'ANALYZE'",
        "EXPLAIN VERBOSE SELECT 1",
        "SHOW analyze",
        "SELECT 1",
    ] {
        assert!(!analyzes(sql), "{sql}");
    }
}

#[test]
fn refuses_everything_else() {
    check("", Err("empty"));
    check("  -- only a comment", Err("empty"));
    check("DELETE FROM t", Err("got DELETE"));
    check("/* SELECT */ DROP TABLE t", Err("got DROP"));
    check("COMMIT; DELETE FROM t", Err("got COMMIT"));
    check("begin", Err("got BEGIN"));
    check("SET ROLE admin", Err("got SET"));
    check("COPY t TO STDOUT", Err("got COPY"));
    check("DO $$ BEGIN END $$", Err("got DO"));
    check("PREPARE p AS SELECT 1", Err("got PREPARE"));
    check("LISTEN x", Err("got LISTEN"));
    check("/* open", Err("unterminated"));
    check(";SELECT 1", Err("keyword"));
    check("(DELETE FROM t)", Err("got DELETE"));
    check("(EXPLAIN SELECT 1)", Err("got EXPLAIN"));
}

#[test]
fn typos_are_named_as_typos_and_writes_as_writes() {
    check(
        "SELCT 1",
        Err("syntax error: `SELCT` is not a SQL command (did you mean SELECT?)"),
    );
    check("selec 1", Err("(did you mean SELECT?)"));
    check("EXPLIAN SELECT 1", Err("(did you mean EXPLAIN?)"));
    check(
        "frobnicate",
        Err("`frobnicate` is not a SQL command; a query starts with"),
    );
    // too short to guess from
    check("xy 1", Err("`xy` is not a SQL command; a query"));
    check(
        "UPDATE t SET a = 1",
        Err("only read-only queries are allowed"),
    );
}

#[test]
fn a_data_modifying_with_is_named() {
    for (sql, writer) in [
        (
            "WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d",
            "DELETE",
        ),
        (
            "with d as ( insert into t values (1) returning 1) select 1",
            "INSERT",
        ),
        (
            "WITH d AS (UPDATE t SET a = 1 RETURNING a) TABLE d",
            "UPDATE",
        ),
        (
            "WITH d AS (MERGE INTO t USING s ON true DO NOTHING) SELECT 1",
            "MERGE",
        ),
        (
            "WITH a AS (SELECT 1), d AS (/* c */ DELETE FROM t) SELECT 1",
            "DELETE",
        ),
        ("EXPLAIN WITH d AS (DELETE FROM t) SELECT 1", "DELETE"),
    ] {
        check(sql, Err(&format!("a query with {writer} inside it")));
    }
    // Words that only look like it: a column named delete, strings, comments.
    check("SELECT (delete) FROM t", Ok(Path::Limited));
    check("SELECT '(DELETE FROM t)'", Ok(Path::Limited));
    check("SELECT 1 -- (DELETE FROM t)", Ok(Path::Limited));
    check("SELECT (update) FROM t", Ok(Path::Limited));
}

#[test]
fn refuses_denied_functions_wherever_they_are_called() {
    check("SELECT pg_advisory_lock(1)", Err("pg_advisory_lock()"));
    check("SELECT PG_ADVISORY_LOCK (1)", Err("pg_advisory_lock()"));
    check(
        "SELECT pg_catalog.pg_try_advisory_lock(1)",
        Err("pg_try_advisory_lock()"),
    );
    check("SELECT \"pg_advisory_lock\"(1)", Err("pg_advisory_lock()"));
    check(
        "SELECT x FROM t WHERE pg_terminate_backend(pid)",
        Err("pg_terminate_backend()"),
    );
    check(
        "WITH a AS (SELECT lo_import('/etc/passwd')) SELECT 1",
        Err("lo_import()"),
    );
    check("EXPLAIN SELECT pg_notify('c', 'x')", Err("pg_notify()"));
    check(
        "SELECT * FROM ts_stat('SELECT to_tsvector(pg_terminate_backend(0)::text)')",
        Err("ts_stat()"),
    );
    check(
        "SELECT * FROM pg_catalog.\"ts_stat\"('SELECT 1', 'a')",
        Err("ts_stat()"),
    );
    check(
        "SELECT ts_rewrite('a'::tsquery, 'SELECT 1')",
        Err("ts_rewrite()"),
    );
    for export in [
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
    ] {
        let want = format!("{export}()");
        check(&format!("SELECT {export}(1)"), Err(want.as_str()));
    }
    check("SELECT lowrite(0, 'x')", Err("lowrite()"));
    check(
        "SELECT query_to_xml('DELETE FROM t', true, false, '')",
        Err("query_to_xml()"),
    );
    check(
        "SELECT U&\"\\0070g_advisory_lock\"(1)",
        Err("Unicode-escaped"),
    );
    check(
        "SELECT pg_advisory_lock /* c */ (1)",
        Err("pg_advisory_lock()"),
    );
    // Field notation calls a one-argument function.
    check(
        "SELECT (pid).pg_terminate_backend FROM pg_stat_activity",
        Err("pg_terminate_backend()"),
    );
    check("SELECT ('SELECT 1'::text).ts_stat", Err("ts_stat()"));
    check(
        "SELECT (1::bigint) . \"pg_advisory_lock\"",
        Err("pg_advisory_lock()"),
    );
    check("SELECT t.x.lo_get FROM t", Err("lo_get()"));
    check(
        "SELECT (x) /* c */ . PG_CANCEL_BACKEND FROM t",
        Err("pg_cancel_backend()"),
    );
}

#[test]
fn function_names_in_strings_and_comments_are_fine() {
    check("SELECT 'pg_advisory_lock(1)'", Ok(Path::Limited));
    check("SELECT E'it\\'s pg_notify(1)'", Ok(Path::Limited));
    check("SELECT 'it''s lo_import(1)'", Ok(Path::Limited));
    check(
        "SELECT $$pg_advisory_lock(1)$$, $tag$ lo_x() $tag$",
        Ok(Path::Limited),
    );
    check("SELECT 1 -- pg_advisory_lock(1)", Ok(Path::Limited));
    check("SELECT /* pg_notify(1) */ 1", Ok(Path::Limited));
    check(
        "SELECT lo_col, pg_advisory_lock_count FROM t",
        Ok(Path::Limited),
    );
    check("SELECT count(*) FROM pg_locks", Ok(Path::Limited));
    check("SELECT $1::int", Ok(Path::Limited));
    check("SELECT 'open", Err("unterminated string"));
    // Field access to ordinary columns stays fine.
    check("SELECT t.pid, (r).name FROM t", Ok(Path::Limited));
}

#[test]
fn lexes_as_postgres_does() {
    // A no-break space is part of an identifier to Postgres, not blank: `x\u{a0}e` is
    // one word, so what follows is a standard string, not an E'' one.
    check(
        "SELECT x\u{a0}e'\\', pg_terminate_backend(1) --'",
        Err("pg_terminate_backend()"),
    );
    check(
        "SELECT\u{a0}1",
        Err("is not a SQL command (it holds U+00A0"),
    );
    // A carriage return ends a `--` comment.
    check(
        "SELECT 1 AS a --x\r, pg_advisory_lock(42)",
        Err("pg_advisory_lock()"),
    );
    // Any non-ASCII character may be part of a dollar-quote tag.
    check(
        "SELECT $\u{20ac}$'$\u{20ac}$, pg_advisory_lock(7) --'",
        Err("pg_advisory_lock()"),
    );
    check(
        "SELECT $\u{a0}$'$\u{a0}$, pg_advisory_lock(7) --'",
        Err("pg_advisory_lock()"),
    );
}
