//! MCP protocol behaviour on the tools: listing, annotations, unknown tools.

use crate::util::TestServer;
use serde_json::json;

crate::trials!(protocol: tools_are_listed_in_order_with_schemas_and_annotations, unknown_tool_is_invalid_params);

async fn tools_are_listed_in_order_with_schemas_and_annotations() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let response = mcp.request("tools/list", json!({})).await;
    let tools = response["result"]["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["describe_table", "list_tables", "query_sql"]);
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
