//! Response builders: every body the server sends is one `BoxBody`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::{Value, json};
use std::convert::Infallible;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_bytes(status, Bytes::from(value.to_string()))
}

/// A body that is JSON already.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error body: `{"error": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// A plain body.
pub fn text(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

/// No body at all (204 and the like).
pub fn empty() -> Body {
    http_body_util::Empty::new().boxed()
}

/// 405 with the methods the route allows.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// 429 with `Retry-After` and a JSON-RPC error (code [`crate::limits::LIMITED_CODE`]) naming the limit.
pub fn too_many(id: &Value, message: &str, kind: &str, retry_after: u64) -> Response<Body> {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": crate::limits::LIMITED_CODE,
            "message": message,
            "data": {"kind": kind, "retryAfter": retry_after},
        },
    });
    let mut response = json(StatusCode::TOO_MANY_REQUESTS, &body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// What a request body may be: hyper's `Incoming` from a connection, or any body a test
/// builds (routing is tested in-process, without a socket).
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}
