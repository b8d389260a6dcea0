//! Classifies a statement by its leading keyword before it reaches Postgres: the first
//! layer of the read-only guard, and the router between the cursor path (row-returning
//! queries, fetched with a row cap) and the direct path (EXPLAIN, SHOW).

/// How the guard runs an admitted statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `SELECT`, `WITH`, `VALUES`, `TABLE`, `(`: wrapped in `DECLARE … CURSOR FOR`, which
    /// Postgres only accepts for a single row-returning query.
    Cursor,
    /// `EXPLAIN`, `SHOW`: run as they are; their output is small.
    Direct,
}

const CURSOR_KEYWORDS: &[&str] = &["select", "with", "values", "table"];
const DIRECT_KEYWORDS: &[&str] = &["explain", "show"];

/// Admits only statements that read; everything else is refused with a reason.
pub fn classify(sql: &str) -> Result<Path, String> {
    let mut rest = sql;
    let mut parenthesised = false;
    loop {
        rest = skip_blank(rest)?;
        match rest.strip_prefix('(') {
            Some(after) => {
                rest = after;
                parenthesised = true;
            }
            None => break,
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let keyword = word.to_ascii_lowercase();
    if keyword.is_empty() {
        return Err(if rest.is_empty() {
            "the statement is empty".into()
        } else {
            "the statement does not start with a keyword".into()
        });
    }
    if CURSOR_KEYWORDS.contains(&keyword.as_str()) {
        Ok(Path::Cursor)
    } else if DIRECT_KEYWORDS.contains(&keyword.as_str()) && !parenthesised {
        Ok(Path::Direct)
    } else {
        Err(format!(
            "only read-only queries are allowed (SELECT, WITH, VALUES, TABLE, EXPLAIN, SHOW); \
             got {}",
            word.to_ascii_uppercase()
        ))
    }
}

/// Skips whitespace and comments (`-- …` and nested `/* … */`).
fn skip_blank(mut s: &str) -> Result<&str, String> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix("--") {
            s = after.find('\n').map_or("", |i| &after[i + 1..]);
        } else if s.starts_with("/*") {
            let mut depth = 0usize;
            let mut chars = s.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                let next = chars.peek().map(|(_, n)| *n);
                match (c, next) {
                    ('/', Some('*')) => {
                        depth += 1;
                        chars.next();
                    }
                    ('*', Some('/')) => {
                        depth -= 1;
                        chars.next();
                        if depth == 0 {
                            end = Some(i + 2);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            match end {
                Some(end) => s = &s[end..],
                None => return Err("unterminated /* comment".into()),
            }
        } else {
            return Ok(s);
        }
    }
}

#[cfg(test)]
mod tests {
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
        check("SELECT 1", Ok(Path::Cursor));
        check("  select * from t", Ok(Path::Cursor));
        check("WITH x AS (SELECT 1) SELECT * FROM x", Ok(Path::Cursor));
        check("VALUES (1), (2)", Ok(Path::Cursor));
        check("TABLE users", Ok(Path::Cursor));
        check("(SELECT 1) UNION (SELECT 2)", Ok(Path::Cursor));
        check("-- a comment\nSELECT 1", Ok(Path::Cursor));
        check("/* outer /* nested */ still */ SELECT 1", Ok(Path::Cursor));
        check("EXPLAIN SELECT 1", Ok(Path::Direct));
        check("show search_path", Ok(Path::Direct));
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
    }
}
