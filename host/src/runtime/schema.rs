//! Tool arguments checked against the JSON Schema the component declared, by the host,
//! before the component runs. Schemas compile when the component loads; they cannot
//! fetch anything (`$ref` to a URL or a file fails to compile, so the component is
//! rejected).

use serde_json::{Map, Value};

/// How many problems one error message lists.
const MAX_REPORTED: usize = 3;

/// A compiled `inputSchema`.
pub struct ArgumentSchema(jsonschema::Validator);

impl std::fmt::Debug for ArgumentSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArgumentSchema")
    }
}

impl ArgumentSchema {
    pub fn compile(schema: &Map<String, Value>) -> Result<Self, String> {
        jsonschema::validator_for(&Value::Object(schema.clone()))
            .map(Self)
            .map_err(|e| format!("not a valid JSON Schema: {e}"))
    }

    /// `Ok` or a message naming where the arguments are wrong, e.g.
    /// "`/limit`: 0 is less than the minimum of 1".
    pub fn check(&self, arguments: &Value) -> Result<(), String> {
        let problems: Vec<String> = self
            .0
            .iter_errors(arguments)
            .take(MAX_REPORTED + 1)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() {
                    "arguments".to_owned()
                } else {
                    format!("`{at}`")
                };
                format!("{at}: {}", short(&e.to_string()))
            })
            .collect();
        match problems.len() {
            0 => Ok(()),
            n if n > MAX_REPORTED => {
                Err(format!("{}; and more", problems[..MAX_REPORTED].join("; ")))
            }
            _ => Err(problems.join("; ")),
        }
    }
}

/// Validation messages quote the offending value, which may be huge.
fn short(message: &str) -> String {
    const MAX: usize = 200;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> ArgumentSchema {
        let Value::Object(map) = value else {
            panic!("an object")
        };
        ArgumentSchema::compile(&map).unwrap()
    }

    #[test]
    fn names_what_is_wrong() {
        let s = schema(json!({
            "type": "object",
            "properties": {"sql": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
            "required": ["sql"],
            "additionalProperties": false
        }));
        assert!(s.check(&json!({"sql": "SELECT 1", "limit": 5})).is_ok());
        let e = s.check(&json!({"limit": 0})).unwrap_err();
        assert!(e.contains("`/limit`") && e.contains("sql"), "{e}");
        assert!(s.check(&json!({"sql": 5})).unwrap_err().contains("`/sql`"));
        assert!(
            s.check(&json!({"sql": "x", "extra": 1}))
                .unwrap_err()
                .contains("extra")
        );
        let huge = "x".repeat(10_000);
        assert!(
            s.check(&json!({"sql": 1, "limit": huge}))
                .unwrap_err()
                .len()
                < 1000
        );
    }

    #[test]
    fn refuses_schemas_that_would_fetch() {
        let remote = json!({"$ref": "https://example.com/schema.json"});
        let Value::Object(map) = remote else {
            unreachable!()
        };
        assert!(ArgumentSchema::compile(&map).is_err());
        let bad = json!({"type": 12});
        let Value::Object(map) = bad else {
            unreachable!()
        };
        assert!(ArgumentSchema::compile(&map).is_err());
    }
}
