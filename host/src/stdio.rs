//! `mcp-sandbox stdio`: one local MCP client over standard input and output, the way
//! clients launch the servers they run. No token: the MCP specification has a stdio
//! server trust the user who launched it, so the caller is one local identity
//! (`local:$USER`) that tool scopes, limits and the audit log see like any other.
//! Standard output carries JSON-RPC alone; logs go to standard error.

use crate::access::Identity;
use crate::config::{AuditArgs, DatabaseArgs, SandboxArgs, StdioArgs};
use crate::limits::{CallerLimits, Limiter};
use crate::mcp::McpHandler;
use crate::metrics::Metrics;
use rmcp::ServiceExt;
use rmcp::service::{QuitReason, ServerInitializeError};
use rmcp::transport::async_rw::AsyncRwTransport;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long calls in flight may finish after the client leaves or a signal arrives:
/// clients give a stdio server about 2 s after closing its input before they kill it.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

/// `mcp-sandbox stdio`.
pub async fn run(args: StdioArgs) -> anyhow::Result<()> {
    serve(
        args.database_url
            .as_ref()
            .map(crate::secret::Secret::expose),
        Parts {
            sandbox: &args.sandbox,
            database: &args.database,
            audit: &args.audit,
            limits: args.limits.caller_limits(),
            caller: args.caller_name(),
            max_request_bytes: (args.max_request_kib as usize) << 10,
        },
    )
    .await
}

/// What a stdio server is made of, beside its database.
pub struct Parts<'a> {
    pub sandbox: &'a SandboxArgs,
    pub database: &'a DatabaseArgs,
    pub audit: &'a AuditArgs,
    pub limits: CallerLimits,
    /// the local caller's name
    pub caller: String,
    pub max_request_bytes: usize,
}

/// Serves one client until it closes standard input (or SIGTERM / SIGINT); then lets
/// calls in flight finish (briefly), and closes the pool and the audit log.
pub async fn serve<'a>(
    database_url: impl Into<Option<&'a str>>,
    parts: Parts<'_>,
) -> anyhow::Result<()> {
    if parts.audit.writes_to_stdout() {
        anyhow::bail!(
            "--audit-log - writes to standard output, which carries the MCP messages here: \
             give the audit log a file"
        );
    }
    let core = crate::build_core(
        database_url.into(),
        parts.sandbox,
        parts.database,
        parts.audit,
        Arc::new(Metrics::new()),
        None,
    )
    .await?;
    if core
        .runtime
        .roles()
        .is_some_and(|r| r.unmapped == crate::db::UnmappedCallers::Refuse)
    {
        tracing::warn!(
            "--caller-roles: the local caller of stdio is never mapped and unmapped callers \
             are refused, so every call will be; set unmapped = \"default\" in the roles file"
        );
    }
    let identity = Identity::local(&parts.caller);
    tracing::info!(
        caller = &*identity.name,
        "serving one local client on stdio"
    );
    let limiter = Limiter::new(parts.limits, HashMap::new(), core.metrics.clone());
    let session = format!("stdio:{}", std::process::id());
    let handler = McpHandler::local(
        core.runtime.clone(),
        core.metrics.clone(),
        core.audit.clone(),
        limiter,
        identity,
        &session,
    );
    let (read, write) = rmcp::transport::stdio_pipes();
    let transport =
        AsyncRwTransport::new_server(read, write).with_max_line_length(parts.max_request_bytes);
    let ct = CancellationToken::new();
    let stop = crate::shutdown_signal();
    let served = async {
        match handler.serve_with_ct(transport, ct.clone()).await {
            Ok(running) => running
                .waiting()
                .await
                .map(Some)
                .map_err(anyhow::Error::from),
            // The client left (or the signal came) before initializing: nothing to do.
            Err(ServerInitializeError::ConnectionClosed(_) | ServerInitializeError::Cancelled) => {
                Ok(None)
            }
            Err(e) => Err(anyhow::anyhow!("the MCP handshake failed: {e}")),
        }
    };
    tokio::pin!(served);
    let ended = tokio::select! {
        ended = &mut served => ended,
        () = stop => {
            tracing::info!("signalled: stopping");
            ct.cancel();
            served.await
        }
    };
    match ended {
        Ok(Some(QuitReason::Closed)) | Ok(None) => tracing::info!("the client closed stdin"),
        Ok(Some(reason)) => tracing::info!(?reason, "stopped"),
        Err(e) => tracing::warn!("serving stdio ended: {e}"),
    }
    if !core.runtime.drain(DRAIN_TIMEOUT).await {
        tracing::warn!("tool calls still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    core.runtime.sources().close();
    core.audit.close(Duration::from_secs(1)).await;
    Ok(())
}
