//! What the login role can do. PostgreSQL lets any session reset its role
//! (`set_config('role', 'none', true)`), so the role the server logs in as is the only
//! boundary on what a statement may touch. It is inspected when the server starts and on
//! every new pooled connection; one that can write or act beyond reading is refused, with
//! the SQL that makes a proper read-only role, unless the operator overrides that loudly.

use serde::Serialize;
use std::time::Duration;
use tokio_postgres::Client;

/// One query: what the session's login role can do, and every role it could switch to
/// with `set_config('role', …)` (every role it is a member of, inherited or not: such a
/// switch needs membership alone), taken together. Attributes, the predefined roles held,
/// samples of what may be written, created or is owned (five of each, and how many).
const INSPECT: &str = "\
WITH me AS (
  SELECT oid, rolname, rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user
), reach AS (
  -- A superuser may become anyone; it is refused for being one, so look no further.
  SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb,
         r.rolreplication
  FROM pg_catalog.pg_roles r, me
  WHERE r.oid = me.oid
     OR (NOT me.rolsuper AND pg_catalog.pg_has_role(me.oid, r.oid, 'MEMBER'))
), predefined AS (
  SELECT coalesce(array_agg(rolname::text ORDER BY rolname), '{}') AS names FROM reach
  WHERE rolname IN ('pg_write_server_files', 'pg_read_server_files',
                    'pg_execute_server_program', 'pg_signal_backend',
                    'pg_write_all_data', 'pg_read_all_data', 'pg_checkpoint')
), rel AS (
  SELECT c.oid, c.relkind, c.relowner, n.nspname, c.relname,
         pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS name
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
), writable AS (
  -- pg_settings is updatable by everyone: an UPDATE of it is set_config(), which the
  -- guard's rollback undoes.
  SELECT DISTINCT rel.name FROM rel, reach
  WHERE NOT (rel.nspname = 'pg_catalog' AND rel.relname = 'pg_settings')
    AND CASE WHEN rel.relkind = 'S'
             THEN pg_catalog.has_sequence_privilege(reach.oid, rel.oid, 'UPDATE, USAGE')
             ELSE pg_catalog.has_table_privilege(reach.oid, rel.oid,
                                                 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER')
                  OR pg_catalog.has_any_column_privilege(reach.oid, rel.oid, 'INSERT, UPDATE')
        END
), owned AS (
  SELECT name FROM rel
  WHERE nspname NOT IN ('pg_catalog', 'information_schema')
    AND relowner IN (SELECT oid FROM reach)
), creatable AS (
  SELECT DISTINCT pg_catalog.quote_ident(n.nspname) AS name
  FROM pg_catalog.pg_namespace n, reach
  WHERE n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
    AND pg_catalog.has_schema_privilege(reach.oid, n.oid, 'CREATE')
)
SELECT me.rolname::text,
       (SELECT bool_or(rolsuper) FROM reach), (SELECT bool_or(rolbypassrls) FROM reach),
       (SELECT bool_or(rolcreaterole) FROM reach), (SELECT bool_or(rolcreatedb) FROM reach),
       (SELECT bool_or(rolreplication) FROM reach),
       predefined.names,
       (SELECT bool_or(pg_catalog.has_database_privilege(oid, current_database(), 'CREATE'))
        FROM reach),
       (SELECT count(*) FROM writable),
       ARRAY(SELECT name FROM writable ORDER BY name LIMIT 5),
       (SELECT count(*) FROM owned),
       ARRAY(SELECT name FROM owned ORDER BY name LIMIT 5),
       ARRAY(SELECT name FROM creatable ORDER BY name LIMIT 5),
       current_database()::text,
       ARRAY(SELECT rolname::text FROM reach WHERE oid <> me.oid AND rolname NOT LIKE 'pg\\_%'
             ORDER BY rolname),
       current_user::text,
       -- Every role may create in public: PostgreSQL 14 and older, and clusters upgraded
       -- from them, grant it to PUBLIC.
       EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
               WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE')
FROM me, predefined";

/// Predefined roles that only read: reported, never a reason to refuse.
const READ_ONLY_PREDEFINED: &[&str] = &["pg_read_all_data"];

/// What the login role may do beyond reading what it was granted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoleReport {
    pub role: String,
    pub database: String,
    /// each thing the role can do that a read-only role cannot, in words
    pub capabilities: Vec<String>,
    /// what it can read beyond its grants (reported, allowed)
    pub notes: Vec<String>,
}

impl RoleReport {
    /// Whether the role may only read.
    pub fn read_only(&self) -> bool {
        self.capabilities.is_empty()
    }

    /// The refusal: what the role can do, and how to make one that can only read
    /// (the recipe `mcp-sandbox role-sql` prints, for schema public).
    pub fn refusal(&self) -> String {
        let recipe = super::recipe::render(&super::recipe::Recipe {
            role: "mcp_reader",
            database: &self.database,
            schemas: &["public".to_owned()],
            owners: &[],
        });
        format!(
            "the database role `{role}` can do more than read: {what}. mcp-sandbox connects \
             as a role that can only read, because PostgreSQL lets any statement reset its \
             role, so the login role is the boundary. Create one with this SQL (for other \
             schemas, and tables your migrations create later: mcp-sandbox role-sql \
             --database {database} --schemas A,B --owner ROLE):\n\n{recipe}\n\
             and put it in the database URL; or, knowing the risk, pass \
             --insecure-allow-privileged-role",
            role = self.role,
            what = self.capabilities.join("; "),
            database = shell_word(&self.database),
        )
    }
}

/// `text` as one POSIX shell word: bare when it is plainly one, else single-quoted (a
/// database's name is pasted into a shell from this message).
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn some(total: i64, sample: &[String]) -> String {
    let list = sample.join(", ");
    if total as usize > sample.len() {
        format!("{total} ({list}, …)")
    } else {
        list
    }
}

/// Inspects the role `client` is logged in as, in a read-only transaction of its own
/// under `timeout` (not the session's statement timeout, which may be a few ms).
pub async fn inspect(
    client: &Client,
    timeout: Duration,
) -> Result<RoleReport, tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await?;
    let row = client.query_one(INSPECT, &[]).await;
    client.batch_execute("ROLLBACK").await?;
    let row = row?;
    let role: String = row.try_get(0)?;
    let mut capabilities = Vec::new();
    let mut notes = Vec::new();
    for (index, what) in [
        (1, "is a superuser"),
        (2, "bypasses row-level security (BYPASSRLS)"),
        (3, "can create and alter roles (CREATEROLE)"),
        (4, "can create databases (CREATEDB)"),
        (5, "can replicate (REPLICATION)"),
    ] {
        if row.try_get::<_, bool>(index)? {
            capabilities.push(what.to_owned());
        }
    }
    for name in row.try_get::<_, Vec<String>>(6)? {
        if READ_ONLY_PREDEFINED.contains(&name.as_str()) {
            notes.push(format!("has the rights of {name}"));
        } else {
            capabilities.push(format!("has the rights of {name}"));
        }
    }
    if row.try_get::<_, bool>(7)? {
        capabilities.push("can create schemas in the database (CREATE)".into());
    }
    let writable: i64 = row.try_get(8)?;
    if writable > 0 {
        let sample: Vec<String> = row.try_get(9)?;
        capabilities.push(format!(
            "may write (INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, or advance a sequence) to {}",
            some(writable, &sample)
        ));
    }
    let owned: i64 = row.try_get(10)?;
    if owned > 0 {
        let sample: Vec<String> = row.try_get(11)?;
        capabilities.push(format!("owns {}", some(owned, &sample)));
    }
    let creatable: Vec<String> = row.try_get(12)?;
    if !creatable.is_empty() {
        let mut what = format!("may create objects in schema {}", creatable.join(", "));
        if creatable.iter().any(|s| s == "public") && row.try_get::<_, bool>(16)? {
            what.push_str(
                " (every role may create in public here, as PostgreSQL 14 and older let them: \
                 REVOKE CREATE ON SCHEMA public FROM PUBLIC, PostgreSQL 15's default)",
            );
        }
        capabilities.push(what);
    }
    let others: Vec<String> = row.try_get(14)?;
    if !others.is_empty() && !capabilities.is_empty() {
        // What it can do may come from a role it can switch to.
        capabilities.push(format!(
            "(this counts the roles it can switch to with set_config('role', …): {})",
            others.join(", ")
        ));
    }
    let current: String = row.try_get(15)?;
    if current != role {
        notes.push(format!(
            "starts each session as role {current} (ALTER ROLE … SET role, or the URL's options)"
        ));
    }
    Ok(RoleReport {
        role,
        database: row.try_get(13)?,
        capabilities,
        notes,
    })
}
