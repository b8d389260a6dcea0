//! Classifies a statement by its leading keyword before it reaches Postgres: the first
//! layer of the read-only guard, and the router between the limited path (row-returning
//! queries, fetched with a row cap) and the direct path (EXPLAIN, SHOW).

/// How the guard runs an admitted statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `SELECT`, `WITH`, `VALUES`, `TABLE`, `(`: wrapped in `SELECT * FROM (…) LIMIT`, which
    /// Postgres only accepts for a single row-returning query.
    Limited,
    /// `EXPLAIN`, `SHOW`: run as they are; their output is small.
    Direct,
}

const LIMITED_KEYWORDS: &[&str] = &["select", "with", "values", "table"];

/// Functions refused by name wherever they are called, quoted or not, schema-qualified or
/// not. Two classes; the login role's privileges remain the real boundary (SECURITY.md),
/// this layer turns the common cases into a clear refusal:
///
/// - functions that act outside the read-only transaction (other backends, session locks,
///   server files, notifications, transaction IDs, statistics, replication);
/// - functions that run SQL given as text, which this check never sees: `ts_stat` and the
///   query form of `ts_rewrite` run their argument, `query_to_xml*` and `cursor_to_xml*`
///   run a query or cursor, and `table_`, `schema_` and `database_to_xml*` read whole
///   relations. Found in `pg_proc` of PostgreSQL 15 and later by their SQL-text and
///   relation arguments (`tests/e2e/sql_guard.rs` derives the list from a live `pg_proc`
///   and checks every one is refused).
const DENIED_FUNCTIONS: &[&str] = &[
    // other backends and the server
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_stat_statements_reset",
    // notifications and messages
    "pg_notify",
    "pg_logical_emit_message",
    // server files (adminpack)
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    // large objects (beside the `lo_` prefix)
    "loread",
    "lowrite",
    // assign a transaction ID: not data, but state written outside our rollback
    "txid_current",
    "pg_current_xact_id",
    // run SQL given as text
    "ts_stat",
    "ts_rewrite",
];
/// Function-name prefixes refused the same way: advisory locks, large objects, server
/// files, dblink, statistics resets, replication slots and origins, backups and WAL
/// replay; and the XML exports that run a query or read whole relations (`query_to_xml`,
/// `query_to_xmlschema`, `query_to_xml_and_xmlschema`, and likewise for `cursor_`,
/// `table_`, `schema_` and `database_`).
const DENIED_PREFIXES: &[&str] = &[
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "pg_read_",
    "pg_ls_",
    "pg_stat_reset",
    "dblink",
    "pg_replication_origin_",
    "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_",
    "query_to_xml",
    "cursor_to_xml",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
];
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
    // Postgres's identifier characters (any non-ASCII one among them), so `SELECT\u{a0}1`
    // is one word, as Postgres reads it, and not the keyword.
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$' || !c.is_ascii())
        .collect();
    let keyword = word.to_ascii_lowercase();
    if keyword.is_empty() {
        return Err(if rest.is_empty() {
            "the statement is empty".into()
        } else {
            "the statement does not start with a keyword".into()
        });
    }
    if LIMITED_KEYWORDS.contains(&keyword.as_str()) {
        check_functions(sql)?;
        if let Some(writer) = writing_part(sql)? {
            return Err(format!(
                "a query with {writer} inside it (a data-modifying WITH) writes; only \
                 read-only queries are allowed"
            ));
        }
        Ok(Path::Limited)
    } else if DIRECT_KEYWORDS.contains(&keyword.as_str()) && !parenthesised {
        if keyword == "explain" {
            // EXPLAIN ANALYZE runs its statement, and EXPLAIN plans any statement: only a
            // query this guard admits may follow.
            let explained = explain(&rest[word.len()..])?;
            match classify(explained.statement) {
                // Outside the LIMIT wrapper, `SELECT … INTO TEMP t` parses, and creates a
                // table (read-only transactions allow temporary ones) and takes a
                // transaction id; planning alone takes the id. INTO is a reserved word:
                // no query needs it unquoted.
                Ok(Path::Limited) if writes_into(explained.statement)? => {
                    return Err(
                        "EXPLAIN of SELECT … INTO, which creates a table, is not allowed".into(),
                    );
                }
                Ok(Path::Limited) => {}
                Ok(Path::Direct) => {
                    return Err("EXPLAIN takes a query (SELECT, WITH, VALUES, TABLE)".into());
                }
                Err(reason) => return Err(format!("EXPLAIN of a refused statement: {reason}")),
            }
        }
        check_functions(sql)?;
        Ok(Path::Direct)
    } else if COMMANDS.contains(&keyword.as_str()) || DIRECT_KEYWORDS.contains(&keyword.as_str()) {
        Err(format!(
            "only read-only queries are allowed (SELECT, WITH, VALUES, TABLE, EXPLAIN, SHOW); \
             got {}",
            word.to_ascii_uppercase()
        ))
    } else {
        let guess = READ_KEYWORDS
            .iter()
            .find(|known| keyword.len() >= 3 && edit_distance(&keyword, known) <= 2)
            .map(|known| format!(" (did you mean {}?)", known.to_ascii_uppercase()))
            .unwrap_or_default();
        // A no-break space pasted from a document looks like a blank and is not one.
        let unseen = word
            .chars()
            .find(|c| !c.is_ascii())
            .map(|c| {
                format!(
                    " (it holds U+{:04X}, which PostgreSQL reads as part of a word)",
                    c as u32
                )
            })
            .unwrap_or_default();
        Err(format!(
            "syntax error: `{word}` is not a SQL command{unseen}{guess}; a query starts with \
             SELECT, WITH, VALUES, TABLE, EXPLAIN or SHOW"
        ))
    }
}

/// The words that may start a statement this guard admits, for suggestions.
const READ_KEYWORDS: &[&str] = &["select", "with", "values", "table", "explain", "show"];

/// PostgreSQL's other commands: refused as writes (or session changes), not as typos.
const COMMANDS: &[&str] = &[
    "abort",
    "alter",
    "analyze",
    "analyse",
    "begin",
    "call",
    "checkpoint",
    "close",
    "cluster",
    "comment",
    "commit",
    "copy",
    "create",
    "deallocate",
    "declare",
    "delete",
    "discard",
    "do",
    "drop",
    "end",
    "execute",
    "fetch",
    "grant",
    "import",
    "insert",
    "listen",
    "load",
    "lock",
    "merge",
    "move",
    "notify",
    "prepare",
    "reassign",
    "refresh",
    "reindex",
    "release",
    "reset",
    "revoke",
    "rollback",
    "savepoint",
    "security",
    "set",
    "start",
    "truncate",
    "unlisten",
    "update",
    "vacuum",
];

/// Levenshtein distance, for short ASCII words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// A data-modifying statement inside a query (`WITH d AS (DELETE FROM t …) SELECT …`),
/// named so the refusal says what writes. Postgres would refuse it anyway (read-only
/// transaction, or not at the top level); this only makes the reason plain. Only the
/// statement's shape counts: `(INSERT INTO`, `(UPDATE name`, `(DELETE FROM`,
/// `(MERGE INTO`, so a column called `delete` in parentheses is no writer.
fn writing_part(sql: &str) -> Result<Option<&'static str>, String> {
    let mut lexer = Lexer::new(sql);
    let mut window: [Option<Token>; 3] = [None, None, None];
    while let Some(token) = lexer.next_token()? {
        window = [window[1].take(), window[2].take(), Some(token)];
        let [
            Some(Token::Open),
            Some(Token::Identifier(verb)),
            Some(Token::Identifier(next)),
        ] = &window
        else {
            continue;
        };
        let writer = match (verb.as_str(), next.as_str()) {
            ("insert", "into") => "INSERT",
            ("merge", "into") => "MERGE",
            ("delete", "from") => "DELETE",
            ("update", _) => "UPDATE",
            _ => continue,
        };
        return Ok(Some(writer));
    }
    Ok(None)
}

/// Whether the word INTO appears in a statement outside strings and comments (the lexer
/// lower-cases unquoted words; a quoted `"into"` is refused too, rather than told apart).
fn writes_into(statement: &str) -> Result<bool, String> {
    let mut lexer = Lexer::new(statement);
    while let Some(token) = lexer.next_token()? {
        if matches!(&token, Token::Identifier(word) if word == "into") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a statement is an `EXPLAIN` that asks to run its statement: `ANALYZE` (or
/// `ANALYSE`) among its options, whatever follows it (`ANALYZE false` too: a safe
/// mistake). A statement the guard cannot read counts as one.
pub fn analyzes(sql: &str) -> bool {
    let Ok(rest) = skip_blank(sql) else {
        return true;
    };
    let Some(after) = rest
        .get(..7)
        .filter(|w| w.eq_ignore_ascii_case("explain"))
        .map(|_| &rest[7..])
    else {
        return false;
    };
    explain(after).map_or(true, |e| e.analyze)
}

/// An `EXPLAIN`'s options and the statement they apply to.
struct Explain<'a> {
    analyze: bool,
    statement: &'a str,
}

/// Reads what follows the `EXPLAIN` keyword: a parenthesised option list, or the old
/// unparenthesised `ANALYZE` and `VERBOSE`, then the statement.
fn explain(after: &str) -> Result<Explain<'_>, String> {
    let is_analyze = |word: &str| word == "analyze" || word == "analyse";
    let mut lexer = Lexer::new(after);
    let mut analyze = false;
    let mut before = lexer.rest;
    match lexer.next_token()? {
        Some(Token::Open) => {
            let mut depth = 1usize;
            while depth > 0 {
                match lexer.next_token()? {
                    Some(Token::Open) => depth += 1,
                    Some(Token::Close) => depth -= 1,
                    Some(Token::Identifier(word)) if is_analyze(&word) => analyze = true,
                    Some(_) => {}
                    None => return Err("EXPLAIN's option list is not closed".into()),
                }
            }
            before = lexer.rest;
        }
        Some(Token::Identifier(word)) if is_analyze(&word) || word == "verbose" => {
            analyze = is_analyze(&word);
            loop {
                before = lexer.rest;
                match lexer.next_token()? {
                    Some(Token::Identifier(word)) if is_analyze(&word) || word == "verbose" => {
                        analyze |= is_analyze(&word);
                    }
                    _ => break,
                }
            }
        }
        _ => {}
    }
    Ok(Explain {
        analyze,
        statement: before,
    })
}

/// Refuses calls of [`DENIED_FUNCTIONS`] and [`DENIED_PREFIXES`], outside strings and
/// comments, quoted or not, schema-qualified or not: every denied identifier followed by
/// `(`, and every one that follows a `.`, since PostgreSQL calls any one-argument
/// function written as a field (`(pid).pg_terminate_backend`, `t.col.lo_get`). A column
/// whose name matches a denied name is refused in that dotted form too; it is a better
/// mistake than the other.
fn check_functions(sql: &str) -> Result<(), String> {
    let refuse = |name: &str| {
        Err(format!(
            "function {name}() is not allowed: it acts outside the read-only transaction or \
             runs SQL this guard cannot see"
        ))
    };
    let mut last_identifier: Option<String> = None;
    let mut after_dot = false;
    for token in Lexer::new(sql) {
        let token = token?;
        let dotted = std::mem::replace(&mut after_dot, token == Token::Dot);
        match token {
            Token::Identifier(name) if dotted && denied(&name) => return refuse(&name),
            Token::Identifier(name) => last_identifier = Some(name),
            Token::Open => {
                if let Some(name) = last_identifier.take()
                    && denied(&name)
                {
                    return refuse(&name);
                }
            }
            Token::Dot => {}
            Token::Other | Token::Close => last_identifier = None,
        }
    }
    Ok(())
}

/// Whether calls of the function `name` (lower-case, as Postgres folds it) are refused.
pub fn denied(name: &str) -> bool {
    DENIED_FUNCTIONS.contains(&name) || DENIED_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// an identifier or keyword: unquoted ones lower-cased, quoted ones as written
    Identifier(String),
    Open,
    Close,
    Dot,
    Other,
}

/// Just enough of Postgres's lexer to find function calls: strings (`'…'`, `E'…'`,
/// `$tag$…$tag$`), quoted identifiers, comments, words.
struct Lexer<'a> {
    rest: &'a str,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str) -> Self {
        Self { rest: sql }
    }

    fn next_token(&mut self) -> Result<Option<Token>, String> {
        self.rest = skip_blank(self.rest)?;
        let mut chars = self.rest.chars();
        let Some(c) = chars.next() else {
            return Ok(None);
        };
        let token = match c {
            '(' => {
                self.advance(1);
                Token::Open
            }
            ')' => {
                self.advance(1);
                Token::Close
            }
            '.' => {
                self.advance(1);
                Token::Dot
            }
            '\'' => {
                self.skip_string(false)?;
                Token::Other
            }
            'e' | 'E' if self.rest[1..].starts_with('\'') => {
                self.advance(1);
                self.skip_string(true)?;
                Token::Other
            }
            'u' | 'U' if self.rest[1..].starts_with("&\"") => {
                // U&"\0070g_…" spells any name in escapes; refuse rather than decode.
                return Err("Unicode-escaped identifiers (U&\"…\") are not allowed".into());
            }
            '"' => Token::Identifier(self.quoted_identifier()?),
            '$' if self.dollar_tag().is_some() => {
                self.skip_dollar_string()?;
                Token::Other
            }
            // Postgres's classes: ASCII letters, `_` and every non-ASCII character start an
            // identifier; digits and `$` may follow.
            c if c.is_ascii_alphabetic() || c == '_' || !c.is_ascii() => {
                let end = self
                    .rest
                    .find(|c: char| {
                        !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii())
                    })
                    .unwrap_or(self.rest.len());
                let word = self.rest[..end].to_lowercase();
                self.advance(end);
                Token::Identifier(word)
            }
            c => {
                self.advance(c.len_utf8());
                Token::Other
            }
        };
        Ok(Some(token))
    }

    fn advance(&mut self, bytes: usize) {
        self.rest = &self.rest[bytes..];
    }

    /// At a `'`: skips the string; `''` is a quote, and with `escapes` so is `\'`.
    fn skip_string(&mut self, escapes: bool) -> Result<(), String> {
        let bytes = self.rest.as_bytes();
        let mut i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if escapes => i += 2,
                b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => {
                    self.advance(i + 1);
                    return Ok(());
                }
                _ => i += 1,
            }
        }
        Err("unterminated string literal".into())
    }

    fn quoted_identifier(&mut self) -> Result<String, String> {
        let mut name = String::new();
        let mut chars = self.rest.char_indices().skip(1).peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, n)| *n) == Some('"') {
                    chars.next();
                    name.push('"');
                } else {
                    self.advance(i + 1);
                    return Ok(name);
                }
            } else {
                name.push(c);
            }
        }
        Err("unterminated quoted identifier".into())
    }

    /// `$tag$` at the start of the rest, if it opens a dollar-quoted string.
    fn dollar_tag(&self) -> Option<&'a str> {
        let after = &self.rest[1..];
        let end = after.find('$')?;
        let tag = &after[..end];
        // Postgres's classes: `_`, ASCII letters and every non-ASCII character; digits
        // after the first.
        let valid = tag.chars().enumerate().all(|(i, c)| {
            c == '_' || c.is_ascii_alphabetic() || !c.is_ascii() || (i > 0 && c.is_ascii_digit())
        });
        valid.then(|| &self.rest[..end + 2])
    }

    fn skip_dollar_string(&mut self) -> Result<(), String> {
        let tag = self.dollar_tag().ok_or("bad dollar quote")?;
        let body = &self.rest[tag.len()..];
        let close = body.find(tag).ok_or("unterminated dollar-quoted string")?;
        self.advance(tag.len() + close + tag.len());
        Ok(())
    }
}

impl Iterator for Lexer<'_> {
    type Item = Result<Token, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_token() {
            Ok(Some(token)) => Some(Ok(token)),
            Ok(None) => None,
            Err(e) => {
                self.rest = "";
                Some(Err(e))
            }
        }
    }
}

/// Postgres's whitespace; other Unicode spaces are identifier characters to it.
const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r', '\x0b', '\x0c'];

/// Skips whitespace and comments (`-- …` and nested `/* … */`).
fn skip_blank(mut s: &str) -> Result<&str, String> {
    loop {
        s = s.trim_start_matches(WHITESPACE);
        if let Some(after) = s.strip_prefix("--") {
            // Postgres ends a `--` comment at a carriage return too.
            s = after.find(['\n', '\r']).map_or("", |i| &after[i + 1..]);
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
mod tests;
