//! The SQL that makes a login role able to read chosen schemas and nothing else: what
//! `mcp-sandbox role-sql` prints and the refusal of a privileged role quotes.

/// What the recipe is for.
#[derive(Clone, Debug)]
pub struct Recipe<'a> {
    /// the login role to create
    pub role: &'a str,
    pub database: &'a str,
    pub schemas: &'a [String],
    /// the roles that create tables there later (the migrations' role): default
    /// privileges belong to the role that creates a table, so each is named
    pub owners: &'a [String],
}

/// The recipe as SQL for psql, each step with why. Every name is quoted as an
/// identifier, so a name cannot end its statement; the one name written in a comment,
/// the role's, is left out if it holds a control character, which could end the comment.
pub fn render(recipe: &Recipe) -> String {
    let role = quote_ident(recipe.role);
    let mut sql = format!(
        "-- A login role that can read the schemas below and nothing else (PostgreSQL 13\n\
         -- and later). Run it as a superuser, connected to that database (psql -d DATABASE\n\
         -- -f FILE): another role's GRANTs on tables it does not own only warn, FOR ROLE\n\
         -- needs membership in that role, and on 14 and older public belongs to one.\n\
         CREATE ROLE {role} LOGIN;\n\
         -- Its password, set in psql so it reaches neither the server's log nor your history:\n\
         --   \\password {shown}\n\
         GRANT CONNECT ON DATABASE {database} TO {role};\n\
         \n\
         -- PostgreSQL 14 and older, and clusters upgraded from them, let every role create\n\
         -- objects in schema public, and mcp-sandbox refuses a role that can create. This is\n\
         -- PostgreSQL 15's default; a role that creates in public then needs its own\n\
         -- GRANT CREATE ON SCHEMA public TO it.\n\
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n",
        database = quote_ident(recipe.database),
        // The one name in a comment: a line break in it would end the comment.
        shown = if recipe.role.chars().any(char::is_control) {
            "ROLE".to_owned()
        } else {
            role.clone()
        },
    );
    for owner in recipe.owners {
        // The REVOKE must not stop a migration that creates tables in public.
        sql.push_str(&format!(
            "GRANT CREATE ON SCHEMA public TO {};\n",
            quote_ident(owner)
        ));
    }
    for schema in recipe.schemas {
        let schema = quote_ident(schema);
        sql.push_str(&format!(
            "\nGRANT USAGE ON SCHEMA {schema} TO {role};\n\
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};\n"
        ));
        if recipe.owners.is_empty() {
            sql.push_str(
                "-- Tables created later, by the role running this; for those your \
                 migrations create,\n-- name their role: role-sql --owner ROLE.\n",
            );
            sql.push_str(&format!(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role};\n"
            ));
        }
        if !recipe.owners.is_empty() {
            sql.push_str(
                "-- Tables these roles create later (running this takes membership in them, \
                 or a superuser):\n",
            );
        }
        for owner in recipe.owners {
            sql.push_str(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {schema} GRANT SELECT ON TABLES \
                 TO {role};\n",
                quote_ident(owner)
            ));
        }
    }
    sql
}

/// PostgreSQL's reserved key words (its documentation's appendix C): bare, they are not
/// names.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// `name` as a PostgreSQL identifier: bare when it is one already, else double-quoted.
pub fn quote_ident(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !RESERVED.contains(&name)
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_schema_is_granted_and_each_owner_defaults() {
        let sql = render(&Recipe {
            role: "mcp_reader",
            database: "shop",
            schemas: &names(&["public", "Sales"]),
            owners: &names(&["app", "etl"]),
        });
        for line in [
            "CREATE ROLE mcp_reader LOGIN;",
            "GRANT CONNECT ON DATABASE shop TO mcp_reader;",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
            "GRANT USAGE ON SCHEMA \"Sales\" TO mcp_reader;",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO mcp_reader;",
            "ALTER DEFAULT PRIVILEGES FOR ROLE etl IN SCHEMA \"Sales\" GRANT SELECT ON TABLES TO mcp_reader;",
            "GRANT CREATE ON SCHEMA public TO app;",
        ] {
            assert!(sql.lines().any(|l| l == line), "{line:?} in\n{sql}");
        }
        assert!(!sql.contains("PASSWORD '"), "no password in the file");
    }

    #[test]
    fn names_cannot_end_their_statement() {
        assert_eq!(quote_ident("mcp_reader"), "mcp_reader");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("Shop"), "\"Shop\"");
        assert_eq!(quote_ident("1st"), "\"1st\"");
        assert_eq!(
            quote_ident("a\"; DROP TABLE t; --"),
            "\"a\"\"; DROP TABLE t; --\""
        );
        assert_eq!(quote_ident("x\ny"), "\"x\ny\"");
        let sql = render(&Recipe {
            role: "r",
            database: "d",
            schemas: &names(&["s\nDROP TABLE t; --"]),
            owners: &[],
        });
        assert!(
            !sql.lines()
                .any(|l| l.starts_with("--") && l.contains("DROP")),
            "a name in a comment: {sql}"
        );
        let sql = render(&Recipe {
            role: "r\nDROP TABLE t; --",
            database: "d",
            schemas: &names(&["s"]),
            owners: &[],
        });
        assert!(
            sql.contains("--   \\password ROLE\n"),
            "the role's name left out of its comment: {sql}"
        );
    }
}
