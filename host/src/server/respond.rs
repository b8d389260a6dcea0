//! Response builders: every body the server sends is one `BoxBody`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
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
