//! SQL identifiers as users type them: `orders`, `"OrderItems"`, `sales.orders`,
//! `"My Schema"."My ""Quoted"" Table"`.

/// One name part; `quoted` parts match exactly, unquoted ones also case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub quoted: bool,
}

impl Name {
    pub fn exact(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            quoted: true,
        }
    }

    /// Whether both could name the same object.
    pub fn may_equal(&self, other: &Name) -> bool {
        if self.quoted && other.quoted {
            self.text == other.text
        } else {
            self.text.to_lowercase() == other.text.to_lowercase()
        }
    }
}

/// Parses `name` or `schema.name`; dots inside double quotes belong to the name.
pub fn parse_qualified(input: &str) -> Result<Vec<Name>, String> {
    let mut parts = Vec::new();
    let mut chars = input.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let part = if chars.peek() == Some(&'"') {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        text.push('"');
                    }
                    Some('"') => break,
                    Some(c) => text.push(c),
                    None => return Err(format!("unterminated quoted identifier in {input:?}")),
                }
            }
            Name { text, quoted: true }
        } else {
            let mut text = String::new();
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '"' {
                    break;
                }
                text.push(c);
                chars.next();
            }
            Name {
                text: text.trim().to_owned(),
                quoted: false,
            }
        };
        if part.text.is_empty() {
            return Err(format!("empty name part in {input:?}"));
        }
        parts.push(part);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => return Err(format!("unexpected {c:?} in {input:?}")),
        }
    }
}

/// Parses exactly one name part.
pub fn parse_one(input: &str) -> Result<Name, String> {
    let mut parts = parse_qualified(input)?;
    match (parts.pop(), parts.is_empty()) {
        (Some(name), true) => Ok(name),
        _ => Err(format!("expected a single name, got {input:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &[(&str, bool)]) {
        let got = parse_qualified(input).unwrap();
        let got: Vec<_> = got.iter().map(|n| (n.text.as_str(), n.quoted)).collect();
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn parses_plain_quoted_and_qualified_names() {
        check("orders", &[("orders", false)]);
        check("  Orders ", &[("Orders", false)]);
        check("\"OrderItems\"", &[("OrderItems", true)]);
        check("sales.orders", &[("sales", false), ("orders", false)]);
        check(
            "\"My Schema\".\"a.b\"",
            &[("My Schema", true), ("a.b", true)],
        );
        check("\"say \"\"hi\"\"\"", &[("say \"hi\"", true)]);
        check("s . t", &[("s", false), ("t", false)]);
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in ["", ".", "a.", ".a", "\"open", "\"a\"b", "a..b"] {
            assert!(parse_qualified(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_one("a.b").is_err());
    }

    #[test]
    fn quoted_names_compare_exactly() {
        let q = |t: &str| Name::exact(t);
        let u = |t: &str| Name {
            text: t.into(),
            quoted: false,
        };
        assert!(q("Sales").may_equal(&q("Sales")));
        assert!(!q("Sales").may_equal(&q("sales")));
        assert!(u("Sales").may_equal(&q("sales")));
    }
}
