//! The throwaway PostgreSQL the tests share: started on first use with the sample schema
//! (`host/src/demo/sample.sql`), removed by `main` when the tests are done.

use mcp_sandbox::demo::{READER_ROLE, TempPostgres, load_sample};
use std::sync::{Mutex, OnceLock, PoisonError};

static CLUSTER: Mutex<Option<TempPostgres>> = Mutex::new(None);
static PORT: OnceLock<u16> = OnceLock::new();

fn port() -> u16 {
    *PORT.get_or_init(|| {
        // Its own thread: callers are inside a tokio runtime, which cannot block_on.
        std::thread::spawn(|| {
            let pg = TempPostgres::start().expect("starting the test PostgreSQL");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async {
                    let url = pg.url("postgres", "postgres");
                    load_sample(&url).await?;
                    install_test_objects(&url).await?;
                    anyhow::Ok(())
                })
                .expect("loading the sample schema");
            let port = pg.port();
            *CLUSTER.lock().unwrap_or_else(PoisonError::into_inner) = Some(pg);
            port
        })
        .join()
        .expect("the database thread")
    })
}

/// Objects only the tests use, created once here: concurrent `CREATE OR REPLACE` of one
/// function from two tests races in the catalog (a unique-index violation).
async fn install_test_objects(url: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // A function that writes, for the SQL guard's attacks to call; a table (outside
    // `public`, whose listing tests compare whole) that
    // `query_sql::a_changed_table_is_prepared_afresh` alters; two tables whose names
    // differ only in case (`describe_table::exact_names_win_and_case_ties_are_named`).
    client
        .batch_execute(
            "CREATE FUNCTION public.bump_price() RETURNS int LANGUAGE sql AS \
             $$ UPDATE products SET price = price + 1 RETURNING 1 $$; \
             CREATE SCHEMA test_objects; GRANT USAGE ON SCHEMA test_objects TO PUBLIC; \
             CREATE TABLE test_objects.prepared_afresh (a int); \
             INSERT INTO test_objects.prepared_afresh VALUES (1); \
             GRANT SELECT ON test_objects.prepared_afresh TO PUBLIC; \
             CREATE TABLE test_objects.\"Twin\" (a int); \
             CREATE TABLE test_objects.\"TWIN\" (b int); \
             COMMENT ON COLUMN test_objects.\"Twin\".a IS 'the first twin''s column'",
        )
        .await?;
    // A table the reader may not read (`sql_guard::resetting_the_role_gains_nothing`),
    // and one it may, whose foreign key points into that schema (`red_team`), made here:
    // tests that fingerprint the catalog run beside that one.
    client
        .batch_execute(
            "CREATE SCHEMA vault; CREATE TABLE vault.secrets (s text); \
             INSERT INTO vault.secrets VALUES ('the-secret'); \
             CREATE TABLE vault.keyring (id int PRIMARY KEY); \
             CREATE TABLE test_objects.sealed (k int REFERENCES vault.keyring); \
             GRANT SELECT ON test_objects.sealed TO PUBLIC",
        )
        .await?;
    // Row-level security for the callers' own roles (`caller_roles`): each of two
    // roles sees only its notes, the server's reader only its own (none); a third role
    // can write, and is refused; two more whose pools one test watches.
    client
        .batch_execute(
            "CREATE SCHEMA rls; GRANT USAGE ON SCHEMA rls TO PUBLIC; \
             CREATE TABLE rls.notes (owner name NOT NULL, body text NOT NULL); \
             INSERT INTO rls.notes VALUES ('rls_alice', 'alice 1'), ('rls_alice', 'alice 2'), \
             ('rls_bob', 'bob 1'); \
             ALTER TABLE rls.notes ENABLE ROW LEVEL SECURITY; \
             CREATE POLICY mine ON rls.notes FOR SELECT USING (owner = current_user); \
             GRANT SELECT ON rls.notes TO PUBLIC; \
             CREATE ROLE rls_alice LOGIN; CREATE ROLE rls_bob LOGIN; \
             CREATE ROLE rls_writer LOGIN; GRANT INSERT ON rls.notes TO rls_writer; \
             CREATE ROLE rls_pooled_a LOGIN; CREATE ROLE rls_pooled_b LOGIN",
        )
        .await?;
    // Login roles for the role checks (`sql_guard`): what each may do is set here, once,
    // since concurrent GRANTs on one table collide in the catalog.
    let mut roles = String::from(
        // A role whose writes sit behind a membership it does not inherit: switching to
        // it takes only set_config('role', …).
        "CREATE ROLE probe_hidden_writer NOLOGIN; \
         GRANT INSERT ON public.orders TO probe_hidden_writer; \
         CREATE ROLE probe_noinherit LOGIN NOINHERIT IN ROLE probe_hidden_writer; \
         GRANT USAGE ON SCHEMA public TO probe_noinherit; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO probe_noinherit; \
         CREATE ROLE probe_reader_by_default NOLOGIN; \
         GRANT USAGE ON SCHEMA public TO probe_reader_by_default; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO probe_reader_by_default; \
         CREATE ROLE probe_super_defaulted LOGIN SUPERUSER; \
         ALTER ROLE probe_super_defaulted SET role = probe_reader_by_default;",
    );
    for (name, extra) in PROBE_ROLES {
        roles.push_str(&format!(
            "CREATE ROLE {name} LOGIN; GRANT USAGE ON SCHEMA public TO {name}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}; {extra};"
        ));
    }
    client.batch_execute(&roles).await
}

/// The login roles [`install_test_objects`] creates: a proper read-only role, and one
/// for each way a role can do more than read.
const PROBE_ROLES: &[(&str, &str)] = &[
    ("probe_reader", "SELECT 1"),
    (
        "probe_writer",
        "GRANT INSERT ON public.orders TO probe_writer; \
         GRANT USAGE ON SEQUENCE public.orders_id_seq TO probe_writer",
    ),
    (
        "probe_signaller",
        "GRANT pg_signal_backend TO probe_signaller",
    ),
    ("probe_bypass", "ALTER ROLE probe_bypass BYPASSRLS"),
    ("probe_later", "SELECT 1"),
];

/// A URL for one of the probe roles.
pub fn role_url(role: &str) -> String {
    format!("postgres://{role}@127.0.0.1:{}/postgres", port())
}

/// The read-only role the server connects as.
pub fn reader_url() -> String {
    format!("postgres://{READER_ROLE}@127.0.0.1:{}/postgres", port())
}

/// The superuser, for setting up and checking data.
pub fn superuser_url() -> String {
    format!("postgres://postgres@127.0.0.1:{}/postgres", port())
}

/// A superuser connection.
pub async fn superuser() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&superuser_url(), tokio_postgres::NoTls)
        .await
        .expect("connecting as superuser");
    tokio::spawn(connection);
    client
}

/// Stops and removes the shared cluster.
pub fn shutdown() {
    let cluster = CLUSTER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    drop(cluster);
}
