//! Tool arguments: the JSON object a client sent, with typed accessors whose errors
//! become `invalid-arguments`.

use crate::CallError;
use serde_json::{Map, Value};

/// The arguments object of one call.
#[derive(Debug, Default)]
pub struct Args(Map<String, Value>);

impl Args {
    /// Parses the arguments JSON; an empty string or `null` means no arguments.
    pub fn parse(json: &str) -> Result<Self, CallError> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(Value::Null) => Ok(Self::default()),
            Ok(other) => Err(CallError::InvalidArguments(format!(
                "arguments must be a JSON object, got {}",
                kind(&other)
            ))),
            Err(e) => Err(CallError::InvalidArguments(format!(
                "arguments are not valid JSON: {e}"
            ))),
        }
    }

    /// An optional string argument; `null` counts as absent.
    pub fn str(&self, key: &str) -> Result<Option<&str>, CallError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// A required, non-empty string argument.
    pub fn required_str(&self, key: &str) -> Result<&str, CallError> {
        match self.str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(CallError::InvalidArguments(format!(
                "argument `{key}` must not be empty"
            ))),
            None => Err(CallError::InvalidArguments(format!(
                "missing required argument `{key}`"
            ))),
        }
    }

    /// An optional non-negative integer argument that fits in `u32`.
    pub fn u32(&self, key: &str) -> Result<Option<u32>, CallError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    wrong_type(key, "a non-negative integer", &Value::Number(n.clone()))
                }),
            Some(other) => Err(wrong_type(key, "a non-negative integer", other)),
        }
    }

    /// An optional boolean argument; `null` counts as absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, CallError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(key, "a boolean", other)),
        }
    }

    /// The raw JSON value of an argument.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> CallError {
    CallError::InvalidArguments(format!(
        "argument `{key}` must be {expected}, got {}",
        kind(got)
    ))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
