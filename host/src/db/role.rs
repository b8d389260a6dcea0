//! What the login role can do. PostgreSQL lets any session reset its role
//! (`set_config('role', 'none', true)`), so the role the server logs in as is the only
//! boundary on what a statement may touch. It is inspected when the server starts and on
//! every new pooled connection; one that can write or act beyond reading is refused, with
//! the SQL that makes a proper read-only role, unless the operator overrides that loudly.

use serde::Serialize;
use tokio_postgres::Client;

/// One query: the role's attributes, the predefined roles it has the rights of, and
/// samples of what it may write, create or owns (five of each, and how many in all).
const INSPECT: &str = "\
WITH me AS (
  SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication
  FROM pg_catalog.pg_roles WHERE rolname = current_user
), predefined AS (
  SELECT coalesce(array_agg(r.rolname ORDER BY r.rolname), '{}') AS names
  FROM pg_catalog.pg_roles r
  WHERE r.rolname IN ('pg_write_server_files', 'pg_read_server_files',
                      'pg_execute_server_program', 'pg_signal_backend',
                      'pg_write_all_data', 'pg_read_all_data', 'pg_checkpoint')
    AND pg_catalog.pg_has_role(current_user, r.oid, 'USAGE')
), rel AS (
  SELECT c.oid, c.relkind, n.nspname, c.relname,
         pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS name
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
), writable AS (
  -- pg_settings is updatable by everyone: an UPDATE of it is set_config(), which the
  -- guard's rollback undoes.
  SELECT name FROM rel
  WHERE NOT (nspname = 'pg_catalog' AND relname = 'pg_settings')
    AND CASE WHEN relkind = 'S'
             THEN pg_catalog.has_sequence_privilege(oid, 'UPDATE, USAGE')
             ELSE pg_catalog.has_table_privilege(oid, 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER')
                  OR pg_catalog.has_any_column_privilege(oid, 'INSERT, UPDATE') END
), owned AS (
  SELECT name FROM rel r JOIN pg_catalog.pg_class c ON c.oid = r.oid
  WHERE r.nspname NOT IN ('pg_catalog', 'information_schema')
    AND pg_catalog.pg_has_role(c.relowner, 'USAGE')
), creatable AS (
  SELECT pg_catalog.quote_ident(nspname) AS name FROM pg_catalog.pg_namespace
  WHERE nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
    AND pg_catalog.has_schema_privilege(oid, 'CREATE')
)
SELECT me.rolname::text, me.rolsuper, me.rolbypassrls, me.rolcreaterole, me.rolcreatedb,
       me.rolreplication, predefined.names::text[],
       pg_catalog.has_database_privilege(current_database(), 'CREATE'),
       (SELECT count(*) FROM writable),
       ARRAY(SELECT name FROM writable ORDER BY name LIMIT 5),
       (SELECT count(*) FROM owned),
       ARRAY(SELECT name FROM owned ORDER BY name LIMIT 5),
       ARRAY(SELECT name FROM creatable ORDER BY name LIMIT 5),
       current_database()::text
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

    /// The refusal: what the role can do, and how to make one that can only read.
    pub fn refusal(&self) -> String {
        format!(
            "the database role `{role}` can do more than read: {what}. mcp-sandbox connects \
             as a role that can only read, because PostgreSQL lets any statement reset its \
             role, so the login role is the boundary. Create one, e.g.:\n\
             \n  CREATE ROLE mcp_reader LOGIN PASSWORD '...';\
             \n  GRANT CONNECT ON DATABASE {database} TO mcp_reader;\
             \n  GRANT USAGE ON SCHEMA public TO mcp_reader;\
             \n  GRANT SELECT ON ALL TABLES IN SCHEMA public TO mcp_reader;\
             \n  ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO mcp_reader;\n\
             \nand put it in the database URL; or, knowing the risk, pass \
             --insecure-allow-privileged-role",
            role = self.role,
            what = self.capabilities.join("; "),
            database = quote_ident(&self.database),
        )
    }
}

fn quote_ident(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
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

/// Inspects the role `client` is logged in as.
pub async fn inspect(client: &Client) -> Result<RoleReport, tokio_postgres::Error> {
    let row = client.query_one(INSPECT, &[]).await?;
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
        capabilities.push(format!(
            "may create objects in schema {}",
            creatable.join(", ")
        ));
    }
    Ok(RoleReport {
        role,
        database: row.try_get(13)?,
        capabilities,
        notes,
    })
}
