//! `--audit-redact`: regular expressions whose matches in a record's arguments and error
//! text are replaced before the record is written (e-mail addresses, card numbers, …).

use regex::Regex;
use serde_json::Value;

/// What a match becomes.
pub const REDACTED: &str = "[redacted]";

/// The patterns, compiled once.
#[derive(Clone, Debug, Default)]
pub struct Redactor(Vec<Regex>);

impl Redactor {
    /// Compiles `patterns`; the error names the pattern that does not compile.
    pub fn new(patterns: &[String]) -> Result<Self, regex::Error> {
        patterns
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every string in `value` (object keys too), nested at any depth.
    pub fn apply(&self, value: &mut Value) {
        if self.0.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.apply_str(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.apply(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.apply(&mut v);
                    map.insert(self.apply_str(&key), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    pub fn apply_str(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for pattern in &self.0 {
            if pattern.is_match(&out) {
                out = pattern.replace_all(&out, REDACTED).into_owned();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_are_replaced_everywhere_in_the_arguments() {
        let redactor =
            Redactor::new(&[r"[\w.+-]+@[\w-]+\.[\w.]+".into(), r"\b\d{16}\b".into()]).unwrap();
        let mut args = json!({
            "sql": "SELECT * FROM users WHERE email = 'ann@example.com'",
            "nested": [{"card": "4111111111111111"}, 3, null],
            "bob@example.org": true,
        });
        redactor.apply(&mut args);
        let text = args.to_string();
        assert!(!text.contains("ann@example.com"), "{text}");
        assert!(!text.contains("4111111111111111"), "{text}");
        assert!(!text.contains("bob@example.org"), "{text}");
        assert_eq!(
            args["sql"],
            "SELECT * FROM users WHERE email = '[redacted]'"
        );
        assert!(Redactor::new(&["(unclosed".into()]).is_err());
    }
}
