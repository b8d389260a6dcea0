//! MCP protocol behaviour on the tools: listing, annotations, unknown tools.

use crate::util::{Mcp, TOKEN_AUTH, TestServer};
use http::StatusCode;
use serde_json::json;

crate::trials!(protocol: tools_are_listed_in_order_with_schemas_and_annotations, unknown_tool_is_invalid_params, handshake_revisions_are_negotiated);

async fn tools_are_listed_in_order_with_schemas_and_annotations() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let response = mcp.request("tools/list", json!({})).await;
    let tools = response["result"]["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, crate::util::BUILTIN_TOOLS);
    for tool in &tools {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        assert_eq!(tool["outputSchema"]["type"], "object", "{tool}");
        assert!(tool["title"].is_string(), "{tool}");
        let hints = &tool["annotations"];
        assert_eq!(hints["readOnlyHint"], true, "{tool}");
        assert_eq!(hints["destructiveHint"], false, "{tool}");
        assert_eq!(hints["idempotentHint"], true, "{tool}");
        assert_eq!(hints["openWorldHint"], false, "{tool}");
    }
    let again = mcp.request("tools/list", json!({})).await;
    assert_eq!(
        again["result"]["tools"],
        json!(tools),
        "stable across calls"
    );
}

async fn unknown_tool_is_invalid_params() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let error = mcp.protocol_error("drop_database", json!({})).await;
    assert_eq!(error["code"], -32602, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("drop_database"),
        "{error}"
    );
    mcp.structured("list_tables", json!({})).await;
}

async fn handshake_revisions_are_negotiated() {
    let server = TestServer::start().await;
    // Each handshake revision is answered in kind (`connect` asserts the echo), and the
    // session works in it.
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let mut mcp = Mcp::connect(server.http(), server.token.clone(), version).await;
        let pong = mcp.request("ping", json!({})).await;
        assert_eq!(pong["result"], json!({}), "{version}: {pong}");
        let one = mcp
            .structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
            .await;
        assert_eq!(one["rows"], json!([[1]]), "{version}");
        assert_eq!(
            mcp.delete_session().await,
            StatusCode::NO_CONTENT,
            "{version}"
        );
    }
    // A revision we do not know gets the newest handshake revision we serve.
    let (_, answer) = server.http().initialize(TOKEN_AUTH, "2099-01-01").await;
    assert_eq!(
        answer["result"]["protocolVersion"], "2025-11-25",
        "{answer}"
    );
}
