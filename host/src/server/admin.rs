//! The admin API (admin-scoped tokens only): the loaded components.

use super::App;
use super::respond::{self, Body};
use http::{Method, Response, StatusCode};
use serde_json::json;

pub async fn handle(app: &App, method: &Method, path: &str) -> Response<Body> {
    match (method, path) {
        (&Method::GET, "/admin/components") => respond::json(
            StatusCode::OK,
            &json!({ "components": app.runtime.components() }),
        ),
        (_, "/admin/components") => super::routes::method_not_allowed("GET"),
        _ => respond::error(StatusCode::NOT_FOUND, "no such admin resource"),
    }
}
