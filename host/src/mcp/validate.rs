//! Checks a posted JSON-RPC message before it is dispatched, so malformed input gets the
//! JSON-RPC error the specification names (-32700 parse error, -32600 invalid request,
//! -32602 invalid params) instead of whatever the SDK's deserializer makes of it.

mod strict;

use serde_json::{Map, Value, json};

/// Why a message was rejected; becomes an HTTP 400 with a JSON-RPC error body.
#[derive(Debug, PartialEq)]
pub struct Rejection {
    pub code: i32,
    pub message: String,
    /// the request's id, when it had a usable one
    pub id: Value,
}

impl Rejection {
    fn new(code: i32, message: impl Into<String>, id: &Value) -> Self {
        Self {
            code,
            message: message.into(),
            id: id.clone(),
        }
    }

    /// The JSON-RPC error response.
    pub fn to_json(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": { "code": self.code, "message": self.message },
        })
    }
}

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const INVALID_PARAMS: i32 = -32602;

/// What the HTTP layer needs to know of a message before the transport has it.
#[derive(Debug, Default)]
pub struct Peek {
    pub method: Option<String>,
    pub id: Value,
    /// `tools/call`: the tool and its arguments
    pub tool: Option<String>,
    pub arguments: Option<Value>,
}

/// Reads a message's method, id and, for `tools/call`, tool and arguments (all absent
/// when the body is not a JSON object).
pub fn peek(body: &[u8]) -> Peek {
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(body) else {
        return Peek::default();
    };
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = message.remove("id").unwrap_or(Value::Null);
    let (tool, arguments) = match (method.as_deref(), message.get_mut("params")) {
        (Some("tools/call"), Some(Value::Object(params))) => (
            params
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            params.remove("arguments"),
        ),
        _ => (None, None),
    };
    Peek {
        method,
        id,
        tool,
        arguments,
    }
}

/// Accepts one JSON-RPC 2.0 request, notification or response whose params, where
/// present, are an object, and whose `tools/call` names a tool and passes an object.
pub fn check(body: &[u8]) -> Result<(), Rejection> {
    let value: Value = strict::parse(body).map_err(|e| match e.classify() {
        // Valid JSON, but a key named twice: not a message anyone may send.
        serde_json::error::Category::Data => Rejection::new(
            INVALID_REQUEST,
            format!("invalid request: {e}"),
            &Value::Null,
        ),
        _ => Rejection::new(PARSE_ERROR, format!("parse error: {e}"), &Value::Null),
    })?;
    let message = match value {
        Value::Object(message) => message,
        Value::Array(_) => {
            return Err(Rejection::new(
                INVALID_REQUEST,
                "JSON-RPC batches are not supported; send one message per request",
                &Value::Null,
            ));
        }
        _ => {
            return Err(Rejection::new(
                INVALID_REQUEST,
                "a JSON-RPC message must be an object",
                &Value::Null,
            ));
        }
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let usable_id = match &id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    let reply_id = if usable_id { id.clone() } else { Value::Null };
    if message.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(Rejection::new(
            INVALID_REQUEST,
            "\"jsonrpc\" must be \"2.0\"",
            &reply_id,
        ));
    }
    if message.contains_key("id") && !usable_id {
        return Err(Rejection::new(
            INVALID_REQUEST,
            "\"id\" must be a string or an integer",
            &Value::Null,
        ));
    }
    match message.get("method") {
        Some(Value::String(method)) => check_params(method, &message, &reply_id),
        Some(_) => Err(Rejection::new(
            INVALID_REQUEST,
            "\"method\" must be a string",
            &reply_id,
        )),
        None if usable_id && (message.contains_key("result") || message.contains_key("error")) => {
            Ok(()) // a response to a request of ours
        }
        None => Err(Rejection::new(
            INVALID_REQUEST,
            "a request needs a \"method\" (or, as a response, an \"id\" and a \"result\" or \"error\")",
            &reply_id,
        )),
    }
}

fn check_params(method: &str, message: &Map<String, Value>, id: &Value) -> Result<(), Rejection> {
    let params = match message.get("params") {
        None => return Ok(()),
        Some(Value::Object(params)) => params,
        Some(_) => {
            return Err(Rejection::new(
                INVALID_PARAMS,
                "\"params\" must be an object",
                id,
            ));
        }
    };
    if method == "tools/call" {
        if !matches!(params.get("name"), Some(Value::String(_))) {
            return Err(Rejection::new(
                INVALID_PARAMS,
                "tools/call needs a tool \"name\" (a string)",
                id,
            ));
        }
        if !matches!(
            params.get("arguments"),
            None | Some(Value::Object(_)) | Some(Value::Null)
        ) {
            return Err(Rejection::new(
                INVALID_PARAMS,
                "tools/call \"arguments\" must be an object",
                id,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_str(body: &str) -> Result<(), (i32, Value)> {
        check(body.as_bytes()).map_err(|r| (r.code, r.id))
    }

    #[test]
    fn accepts_requests_notifications_and_responses() {
        assert!(check_str(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_ok());
        assert!(check_str(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","arguments":{}}}"#).is_ok());
        assert!(check_str(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_ok());
        assert!(check_str(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#).is_ok());
        assert!(check_str(r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"m"}}"#).is_ok());
    }

    #[test]
    fn names_the_right_error() {
        assert_eq!(check_str("{nope"), Err((PARSE_ERROR, Value::Null)));
        assert_eq!(check_str(""), Err((PARSE_ERROR, Value::Null)));
        assert_eq!(check_str("[]"), Err((INVALID_REQUEST, Value::Null)));
        assert_eq!(
            check_str(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"x"}"#),
            Err((INVALID_REQUEST, Value::Null))
        );
        assert_eq!(check_str(r#"{"a":1,"b":"#), Err((PARSE_ERROR, Value::Null)));
        assert_eq!(check_str("42"), Err((INVALID_REQUEST, Value::Null)));
        assert_eq!(
            check_str(r#"{"jsonrpc":"1.0","id":3,"method":"m"}"#),
            Err((INVALID_REQUEST, json!(3)))
        );
        assert_eq!(
            check_str(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"m"}"#),
            Err((INVALID_REQUEST, Value::Null))
        );
        assert_eq!(
            check_str(r#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#),
            Err((INVALID_REQUEST, Value::Null))
        );
        assert_eq!(
            check_str(r#"{"jsonrpc":"2.0","id":4}"#),
            Err((INVALID_REQUEST, json!(4)))
        );
        assert_eq!(
            check_str(r#"{"jsonrpc":"2.0","id":4,"method":5}"#),
            Err((INVALID_REQUEST, json!(4)))
        );
        assert_eq!(
            check_str(r#"{"jsonrpc":"2.0","id":5,"method":"m","params":[1]}"#),
            Err((INVALID_PARAMS, json!(5)))
        );
        assert_eq!(
            check_str(r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{}}"#),
            Err((INVALID_PARAMS, json!(6)))
        );
        assert_eq!(
            check_str(
                r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"q","arguments":"x"}}"#
            ),
            Err((INVALID_PARAMS, json!(6)))
        );
    }
}
