//! `role-sql`'s arguments: the role to make, the database and schemas it reads, and the
//! roles that create tables there later.

use clap::Args;

#[derive(Debug, Args)]
pub struct RoleSqlArgs {
    /// The login role to create
    #[arg(long, default_value = "mcp_reader", value_parser = parse_role)]
    pub role: String,

    /// The database it connects to
    #[arg(long, value_parser = parse_name)]
    pub database: String,

    /// The schemas it reads, separated by commas (every schema your tools should see)
    #[arg(long, value_delimiter = ',', default_value = "public", value_parser = parse_name)]
    pub schemas: Vec<String>,

    /// The roles that create tables in those schemas later (your migrations' role), so
    /// that those tables are readable too; repeat or separate with commas [default: the
    /// role that runs the SQL]
    #[arg(long = "owner", value_delimiter = ',', value_parser = parse_role)]
    pub owners: Vec<String>,
}

/// A name PostgreSQL keeps whole: not empty, at most 63 bytes (it cuts longer ones
/// short, silently), no control character (a name with a line break is legal SQL, but
/// no one means it).
fn parse_name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("an empty name".into());
    }
    if text.len() > 63 {
        return Err(format!(
            "{} bytes: PostgreSQL keeps the first 63 bytes of a name",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("a control character (a line break, a NUL…) in a name".into());
    }
    Ok(text.to_owned())
}

/// A name a login role may have: [`parse_name`], and not one PostgreSQL reserves.
fn parse_role(text: &str) -> Result<String, String> {
    let name = parse_name(text)?;
    let lower = name.to_ascii_lowercase();
    if [
        "public",
        "none",
        "current_user",
        "current_role",
        "session_user",
    ]
    .contains(&lower.as_str())
    {
        return Err(format!(
            "`{name}` is reserved: PostgreSQL has no role by that name"
        ));
    }
    if name.starts_with("pg_") {
        return Err(format!(
            "`{name}`: role names starting pg_ are PostgreSQL's own"
        ));
    }
    Ok(name)
}
