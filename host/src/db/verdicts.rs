//! The guard's verdict on a statement text, remembered: a component runs the same
//! statements on every call, and lexing a long catalog query again each time was about
//! 5% of the server's CPU per `describe_table` call (BENCHMARKS.md, "Speed, round two").

use super::statement::{self, Path};
use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

/// What the guard decides from the text alone: how it runs, and whether it is an
/// EXPLAIN ANALYZE (which the server's settings may refuse).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub path: Path,
    pub analyzes: bool,
}

/// Texts longer than this are judged afresh each time (query_sql's are rarely repeated).
const MAX_TEXT: usize = 8 * 1024;
/// At most this many texts; when full, the map starts over.
const MAX_TEXTS: usize = 512;

type Judged = Result<Verdict, String>;

static VERDICTS: LazyLock<RwLock<HashMap<Box<str>, Judged>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// `statement::classify` and `statement::analyzes` of `sql`, from memory when it was
/// judged before. Both are pure functions of the text.
pub fn judge(sql: &str) -> Judged {
    if sql.len() > MAX_TEXT {
        return judge_afresh(sql);
    }
    if let Some(judged) = VERDICTS.read().unwrap_or_else(|e| e.into_inner()).get(sql) {
        return judged.clone();
    }
    let judged = judge_afresh(sql);
    let mut verdicts = VERDICTS.write().unwrap_or_else(|e| e.into_inner());
    if verdicts.len() >= MAX_TEXTS {
        verdicts.clear();
    }
    verdicts.insert(sql.into(), judged.clone());
    judged
}

fn judge_afresh(sql: &str) -> Judged {
    let path = statement::classify(sql)?;
    let analyzes = path == Path::Direct && statement::analyzes(sql);
    Ok(Verdict { path, analyzes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_verdict_is_the_fresh_one() {
        let texts = [
            "SELECT 1",
            "DELETE FROM t",
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "SHOW work_mem",
        ];
        for _ in 0..2 {
            for text in texts {
                assert_eq!(judge(text), judge_afresh(text), "{text}");
            }
        }
        assert!(judge("DELETE FROM t").is_err());
        assert_eq!(
            judge("EXPLAIN ANALYZE SELECT 1"),
            Ok(Verdict {
                path: Path::Direct,
                analyzes: true
            })
        );
    }

    #[test]
    fn the_memory_stays_bounded() {
        for i in 0..(MAX_TEXTS * 2 + 7) {
            assert!(judge(&format!("SELECT {i}")).is_ok());
        }
        let long = format!("SELECT '{}'", "x".repeat(MAX_TEXT));
        assert!(judge(&long).is_ok());
        let verdicts = VERDICTS.read().unwrap_or_else(|e| e.into_inner());
        assert!(verdicts.len() <= MAX_TEXTS);
        assert!(!verdicts.contains_key(long.as_str()));
    }
}
