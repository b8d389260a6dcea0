//! The sandbox's vocabulary in MCP's: a tool's spec as an MCP `Tool`, an invocation as a
//! tool result or a JSON-RPC error (DESIGN.md, failure classes).

use crate::runtime::{Fault, Invocation, ToolOutput, ToolSpec};
use rmcp::model::{CallToolResult, ContentBlock, ErrorCode, ErrorData, Tool, ToolAnnotations};
use serde_json::json;

/// JSON-RPC code for a call stopped at its deadline (the SDKs' `RequestTimeout`).
const TIMEOUT_CODE: ErrorCode = ErrorCode(-32001);
/// JSON-RPC code for a call the client cancelled (LSP's `RequestCancelled`). The spec
/// says a cancelled request gets no response, and rmcp drops it; the code is for logs.
const CANCELLED_CODE: ErrorCode = ErrorCode(-32800);

pub(crate) fn to_mcp_tool(spec: &ToolSpec) -> Tool {
    let mut annotations = ToolAnnotations::new()
        .read_only(spec.annotations.read_only)
        .destructive(spec.annotations.destructive)
        .idempotent(spec.annotations.idempotent)
        .open_world(spec.annotations.open_world);
    annotations.title = spec.title.clone();
    let mut tool = Tool::new_with_raw(
        spec.name.clone(),
        Some(spec.description.clone().into()),
        spec.input_schema.clone(),
    )
    .with_annotations(annotations);
    if let Some(title) = &spec.title {
        tool = tool.with_title(title.clone());
    }
    if let Some(schema) = &spec.output_schema {
        tool = tool.with_raw_output_schema(schema.clone());
    }
    tool
}

/// Maps an invocation to MCP (DESIGN.md, failure classes): a tool error is a result
/// with `isError`, a protocol error or a sandbox fault is a JSON-RPC error, a host fault
/// is a tool error the model can read.
pub(crate) fn to_mcp_result(
    invocation: Invocation<ToolOutput>,
) -> Result<CallToolResult, ErrorData> {
    let component = invocation.component.as_deref().unwrap_or("").to_owned();
    match invocation.result {
        Ok(mut output) => {
            // The component's error cannot name the limit (the WIT `timeout` carries
            // none); the host knows it, and the model needs it to write a faster query.
            if let Some(limit) = invocation.statement_timed_out.filter(|_| output.is_error) {
                output.text.push_str(&format!(
                    "\n\nThe statement timeout is {}: narrow the statement (a WHERE clause \
                     an index serves, a LIMIT, fewer rows joined) to finish within it.",
                    crate::units::format_duration(limit)
                ));
            }
            let content = vec![ContentBlock::text(output.text)];
            let mut result = if output.is_error {
                CallToolResult::error(content)
            } else {
                CallToolResult::success(content)
            };
            result.structured_content = output.structured;
            Ok(result)
        }
        Err(Fault::Unavailable(reason)) => Ok(CallToolResult::error(vec![ContentBlock::text(
            format!("unavailable: {reason}"),
        )])),
        Err(fault @ (Fault::UnknownTool(_) | Fault::InvalidArguments(_))) => {
            Err(ErrorData::invalid_params(fault.to_string(), None))
        }
        Err(fault @ Fault::Timeout(after)) => Err(ErrorData::new(
            TIMEOUT_CODE,
            fault.to_string(),
            Some(json!({
                "kind": "timeout",
                "component": component,
                "deadline_ms": after.as_millis(),
            })),
        )),
        Err(Fault::Trap { kind, message }) => Err(ErrorData::internal_error(
            format!("the `{component}` component trapped ({kind}): {message}"),
            Some(json!({"kind": kind.as_str(), "component": component})),
        )),
        Err(fault @ Fault::Cancelled) => Err(ErrorData::new(
            CANCELLED_CODE,
            fault.to_string(),
            Some(json!({"kind": "cancelled", "component": component})),
        )),
        Err(fault @ Fault::BadOutput(_)) => Err(ErrorData::internal_error(
            fault.to_string(),
            Some(json!({"kind": "bad_output", "component": component})),
        )),
    }
}
