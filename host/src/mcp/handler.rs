//! The MCP server handler (rmcp's `ServerHandler`): `tools/list` from the registry,
//! `tools/call` dispatched to a sandboxed component, each outcome mapped to its MCP
//! failure class and logged with its phase timings.

use super::results::{to_mcp_result, to_mcp_tool};
use crate::access::{Identity, RequestInfo};
use crate::audit::{Audit, CallRecord};
use crate::invocation::Outcome;
use crate::limits::{LIMITED_CODE, Limited, Limiter, Permit};
use crate::metrics::{Metrics, UNKNOWN_TOOL};
use crate::runtime::{AsCaller, Fault, Invocation, Runtime, ToolOutput};
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorCode, ErrorData, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, RoleServer, SubscriptionContext};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// JSON-RPC code for a tool the caller's token may not use (implementation-defined).
const DENIED_CODE: ErrorCode = ErrorCode(-32003);
/// JSON-RPC code for a call refused because its audit record could not be written
/// (`--audit-required`).
const AUDIT_CODE: ErrorCode = ErrorCode(-32010);

const INSTRUCTIONS: &str = "Read-only access to a PostgreSQL database. Start with \
list_tables, then describe_table for the columns you need, then query_sql for one \
SELECT at a time. Every statement runs in a read-only transaction under a time limit \
and a row cap.";

/// One handler per MCP session (rmcp creates them through a factory); cheap to clone.
#[derive(Clone)]
pub struct McpHandler {
    runtime: Runtime,
    metrics: Arc<Metrics>,
    peers: Peers,
    audit: Audit,
    limiter: Limiter,
    /// stdio's one caller, for requests that came through no HTTP authentication; None
    /// over HTTP, where such a request may do nothing
    local: Option<Arc<Local>>,
}

/// The caller of a stdio server, and its session's name for the audit log.
struct Local {
    identity: Identity,
    session: Arc<str>,
}

impl McpHandler {
    /// Also starts telling every initialized session when the tool list changes.
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>, audit: Audit, limiter: Limiter) -> Self {
        let peers = Peers::default();
        peers.notify_on_changes(runtime.changes());
        Self {
            runtime,
            metrics,
            peers,
            audit,
            limiter,
            local: None,
        }
    }

    /// The handler of a stdio server: every request is `identity`'s (the user who
    /// launched it), in the one session `session`.
    pub fn local(
        runtime: Runtime,
        metrics: Arc<Metrics>,
        audit: Audit,
        limiter: Limiter,
        identity: Identity,
        session: &str,
    ) -> Self {
        let mut handler = Self::new(runtime, metrics, audit, limiter);
        handler.local = Some(Arc::new(Local {
            identity,
            session: Arc::from(session),
        }));
        handler
    }

    /// The identity `server/` attached to the HTTP request, or stdio's caller. None
    /// when neither: a request that did not come through authentication may do nothing.
    fn identity(&self, context: &RequestContext<RoleServer>) -> Option<Identity> {
        match (
            context.extensions.get::<http::request::Parts>(),
            &self.local,
        ) {
            (Some(_), _) => extension::<Identity>(context),
            (None, Some(local)) => Some(local.identity.clone()),
            (None, None) => None,
        }
    }

    /// The request's facts for the audit log: the HTTP request's, or a stdio call's.
    fn request_info(&self, context: &RequestContext<RoleServer>) -> RequestInfo {
        match (
            context.extensions.get::<http::request::Parts>(),
            &self.local,
        ) {
            (None, Some(local)) => RequestInfo {
                id: rmcp::transport::common::server_side_http::session_id(),
                remote: None,
                session: Some(local.session.clone()),
            },
            _ => extension::<RequestInfo>(context).unwrap_or_default(),
        }
    }
}

/// The HTTP layer's admission of this call: a slot it took (the stateless path answers
/// a refusal there with 429), or, in a session, the store's decision taken with the
/// session's touch (a refusal answered here as a JSON-RPC error). The handler then
/// takes no slot of its own.
#[derive(Clone, Default)]
pub struct Admitted(Arc<Mutex<Option<Result<Permit, Limited>>>>);

impl Admitted {
    pub fn new(decision: Result<Permit, Limited>) -> Self {
        Self(Arc::new(Mutex::new(Some(decision))))
    }

    fn take(&self) -> Option<Result<Permit, Limited>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The sessions to tell about tool list changes: every one that finished initializing.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<Vec<Peer<RoleServer>>>>);

impl Peers {
    fn add(&self, peer: Peer<RoleServer>) {
        let mut peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        peers.push(peer);
    }

    /// Sends `notifications/tools/list_changed` after every change, until the runtime
    /// is gone. Closed sessions are dropped; a slow one does not hold up the rest.
    fn notify_on_changes(&self, mut changes: watch::Receiver<u64>) {
        let peers = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(peers) = peers.upgrade() else { return };
                let live: Vec<Peer<RoleServer>> = {
                    let mut peers = peers.lock().unwrap_or_else(|e| e.into_inner());
                    peers.retain(|p| !p.is_transport_closed());
                    peers.clone()
                };
                tracing::debug!(sessions = live.len(), "notifying tools/list_changed");
                for peer in live {
                    tokio::spawn(async move {
                        let _ = peer.notify_tool_list_changed().await;
                    });
                }
            }
        });
    }
}

/// What `server/` attached to the HTTP request (the identity, the request's facts).
fn extension<T: Clone + Send + Sync + 'static>(context: &RequestContext<RoleServer>) -> Option<T> {
    context
        .extensions
        .get::<http::request::Parts>()?
        .extensions
        .get::<T>()
        .cloned()
}

/// The client's name and version: from the request's `_meta` (the stateless revision),
/// or from its `initialize` (sessions).
fn client_info(context: &RequestContext<RoleServer>) -> (Option<String>, Option<String>) {
    // The request's own `_meta` first: on the stateless path rmcp gives the peer a
    // placeholder (its own name and version), not the client's.
    let info = context
        .meta
        .client_info()
        .or_else(|| context.peer.peer_info().map(|p| p.client_info.clone()));
    match info {
        Some(i) => (Some(i.name), Some(i.version)),
        None => (None, None),
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        let mut server_info = Implementation::new("mcp-sandbox", env!("CARGO_PKG_VERSION"));
        server_info.title = Some("mcp-sandbox (sandboxed PostgreSQL tools)".into());
        let mut config = ServerConfig::new(capabilities);
        config.server_info = server_info;
        config.instructions = Some(INSTRUCTIONS.into());
        config
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.peers.add(context.peer);
    }

    /// `subscriptions/listen` (2026-07-28): the tool list is the only thing that changes.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::default();
        accepted.tools_list_changed = requested.tools_list_changed.filter(|&wanted| wanted);
        Some(accepted)
    }

    /// Sends `notifications/tools/list_changed` on the listen stream after every change,
    /// until the client cancels the request or closes the stream.
    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.runtime.changes();
        changes.mark_unchanged();
        let wants_tools = subscription.accepted().tools_list_changed == Some(true);
        loop {
            tokio::select! {
                () = subscription.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(()); // the runtime is gone: the server is stopping
                    }
                    if wants_tools
                        && subscription.sink().notify_tool_list_changed().await.is_err()
                    {
                        return Ok(()); // the stream is closed
                    }
                }
            }
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.identity(&context);
        let tools = self
            .runtime
            .tools()
            .iter()
            .filter(|t| caller.as_ref().is_some_and(|c| c.may_call(&t.name)))
            .map(to_mcp_tool)
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.runtime.tool(name).as_ref().map(to_mcp_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let audited = self.audit.is_on();
        let scope = CallScope {
            caller: self.identity(&context),
            // The stateless path took this call's slot already (to answer 429).
            admitted: extension::<Admitted>(&context).and_then(|a| a.take()),
            info: match audited {
                true => self.request_info(&context),
                false => RequestInfo::default(),
            },
            rpc_id: context.id.clone(),
            client: match audited {
                true => client_info(&context),
                false => (None, None),
            },
            ct: context.ct.clone(),
        };
        self.call(request, scope).await
    }
}

/// What a `tools/call` needs to know of the request that carried it, whichever way it
/// came (through rmcp's service, or answered directly: `mcp/direct.rs`).
pub(crate) struct CallScope {
    pub caller: Option<Identity>,
    /// the slot the HTTP layer took for the call (the stateless path answers 429)
    pub admitted: Option<Result<Permit, Limited>>,
    /// for the audit record (only read when the log is on)
    pub info: RequestInfo,
    pub rpc_id: rmcp::model::RequestId,
    /// the client's name and version (only read when the log is on)
    pub client: (Option<String>, Option<String>),
    /// cancelled when the client gives up on the call
    pub ct: tokio_util::sync::CancellationToken,
}

impl McpHandler {
    pub(super) fn audit_is_on(&self) -> bool {
        self.audit.is_on()
    }

    /// One `tools/call`: the token's scopes, the caller's limits, the sandboxed call,
    /// its log line, metrics and audit record.
    pub(crate) async fn call(
        &self,
        mut request: CallToolRequestParams,
        scope: CallScope,
    ) -> Result<CallToolResponse, ErrorData> {
        let CallScope {
            caller,
            admitted,
            info,
            rpc_id,
            client,
            ct,
        } = scope;
        let started = std::time::Instant::now();
        let mut audit = self.audit.is_on().then(|| {
            let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
            let rpc_id = serde_json::to_value(&rpc_id).unwrap_or(Value::Null);
            CallRecord::new(&request.name, arguments, info, rpc_id, client, started)
        });
        let allowed = caller.as_ref().is_some_and(|c| c.may_call(&request.name));
        // The caller's own login role (`--caller-roles`); a caller it does not map is
        // refused whatever the tool (even one not loaded yet), when so configured.
        let login = match self.runtime.roles().map(|r| r.login_for(caller.as_ref())) {
            None => None,
            Some(Ok(login)) => login,
            Some(Err(unmapped)) => {
                let label = self
                    .runtime
                    .tool(&request.name)
                    .map(|s| (s.name, s.component));
                let (tool, component) = label.unwrap_or_else(|| (UNKNOWN_TOOL.into(), "".into()));
                self.metrics.tool_call(
                    &tool,
                    &component,
                    Outcome::Denied,
                    std::time::Duration::ZERO,
                );
                tracing::info!(
                    target: "mcp_sandbox::invocation",
                    tool = &*request.name,
                    caller = caller.as_ref().map(|c| &*c.name),
                    outcome = Outcome::Denied.as_str(),
                    reason = "unmapped",
                    "tools/call"
                );
                let refusal = ErrorData::new(
                    DENIED_CODE,
                    unmapped.to_string(),
                    Some(json!({"kind": "unmapped"})),
                );
                return self
                    .refuse(audit.as_mut(), caller.as_ref(), Outcome::Denied, refusal)
                    .await;
            }
        };
        if !allowed && let Some(spec) = self.runtime.tool(&request.name) {
            self.metrics.tool_call(
                &spec.name,
                &spec.component,
                Outcome::Denied,
                std::time::Duration::ZERO,
            );
            tracing::info!(
                target: "mcp_sandbox::invocation",
                tool = &*request.name,
                caller = caller.as_ref().map(|c| &*c.name),
                client = caller.as_ref().and_then(|c| c.client.as_deref()),
                outcome = Outcome::Denied.as_str(),
                "tools/call"
            );
            let refusal = ErrorData::new(
                DENIED_CODE,
                format!("this token may not call `{}`", request.name),
                Some(json!({"kind": "denied"})),
            );
            return self
                .refuse(audit.as_mut(), caller.as_ref(), Outcome::Denied, refusal)
                .await;
        }
        let decided = match (admitted, &caller) {
            (Some(decision), _) => Some(decision),
            (None, Some(caller)) => Some(self.limiter.admit(caller).await),
            (None, None) => None,
        };
        let permit = match decided {
            None => None,
            Some(Ok(permit)) => Some(permit),
            Some(Err(limited)) => {
                let refusal = ErrorData::new(
                    ErrorCode(LIMITED_CODE),
                    limited.message(),
                    Some(json!({
                        "kind": limited.kind(),
                        "retryAfter": limited.retry_after_secs(),
                    })),
                );
                return self
                    .refuse(audit.as_mut(), caller.as_ref(), Outcome::Limited, refusal)
                    .await;
            }
        };
        if self.audit.refuses() {
            return self.audit_refusal(audit.as_mut(), caller.as_ref()).await;
        }
        // The audit record took its own copy; the call takes the arguments themselves.
        let arguments = Value::Object(request.arguments.take().unwrap_or_default());
        let invocation = self
            .runtime
            .call_tool(
                &request.name,
                &arguments,
                &ct,
                AsCaller {
                    login: login.as_deref(),
                    databases: caller.as_ref().and_then(|c| c.databases.as_deref()),
                },
            )
            .await;
        // The slot is free before the answer leaves: the caller's next call finds it so.
        if let Some(permit) = permit {
            permit.release().await;
        }
        // Counted here, once: the rmcp and the direct paths both call this.
        let label = match invocation.result {
            Err(Fault::UnknownTool(_)) => UNKNOWN_TOOL,
            _ => &*request.name,
        };
        self.metrics.tool_call(
            label,
            invocation.component.as_deref().unwrap_or(""),
            invocation.outcome(),
            invocation.timings.total,
        );
        log_invocation(&request.name, caller.as_ref(), &invocation);
        let Some(record) = audit.as_mut() else {
            return to_mcp_result(invocation).map(CallToolResponse::from);
        };
        let result = to_mcp_result(invocation.clone());
        let (bytes, error) = match (&result, &invocation.result) {
            // The text carries what the structured content does (as JSON): its length
            // is the answer's size, without serializing the structure again.
            (Ok(_), Ok(output)) => (
                output.text.len(),
                output.is_error.then(|| output.text.clone()),
            ),
            (Ok(result), Err(fault)) => (
                result
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.len()))
                    .sum(),
                Some(fault.to_string()),
            ),
            (Err(e), _) => (0, Some(e.message.to_string())),
        };
        record.invocation(&invocation, bytes, error);
        if self.write(record, caller.as_ref()).await.is_err() && self.audit.required() {
            self.audit.count_refusal("tool_call");
            return Err(audit_error());
        }
        result.map(CallToolResponse::from)
    }

    /// Answers a refusal, after recording it.
    async fn refuse(
        &self,
        record: Option<&mut CallRecord>,
        caller: Option<&Identity>,
        outcome: Outcome,
        refusal: ErrorData,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(record) = record {
            record.refused(outcome, &refusal.message);
            if self.write(record, caller).await.is_err() && self.audit.required() {
                self.audit.count_refusal("tool_call");
                return Err(audit_error());
            }
        }
        Err(refusal)
    }

    /// `--audit-required` and the log is failing: refuse before anything runs (the
    /// record of the refusal is still tried, and clears the state once it is written).
    async fn audit_refusal(
        &self,
        record: Option<&mut CallRecord>,
        caller: Option<&Identity>,
    ) -> Result<CallToolResponse, ErrorData> {
        let refusal = audit_error();
        if let Some(record) = record {
            record.refused(Outcome::AuditFailed, &refusal.message);
            // Once written, the log is writable again; this call is refused all the
            // same (nothing ran).
            let _ = self.write(record, caller).await;
        }
        self.audit.count_refusal("tool_call");
        Err(refusal)
    }

    async fn write(
        &self,
        record: &mut CallRecord,
        caller: Option<&Identity>,
    ) -> Result<(), crate::audit::AuditError> {
        let line = record
            .finish(caller, &self.audit)
            .map_err(|e| crate::audit::AuditError::Write(format!("serializing the record: {e}")))?;
        // What is left of the call's deadline (a little at least): the record never
        // holds the answer much past it.
        let left = self
            .runtime
            .limits()
            .timeout
            .saturating_sub(record.started.elapsed())
            .max(MIN_AUDIT_WAIT);
        self.audit.write_line("tool_call", line, left).await
    }
}

/// The least an audit record is waited for, even when the call used its whole deadline.
const MIN_AUDIT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

fn audit_error() -> ErrorData {
    ErrorData::new(
        AUDIT_CODE,
        "the call was refused: its audit record could not be written (--audit-required); \
         the operator must fix the audit log"
            .to_owned(),
        Some(json!({"kind": "audit_unavailable"})),
    )
}

/// One line per invocation: what ran, which version, how it ended, where time went.
/// The caller is named by its token's name or its OAuth subject and client, never by
/// anything secret.
pub(crate) fn log_invocation(
    tool: &str,
    caller: Option<&Identity>,
    invocation: &Invocation<ToolOutput>,
) {
    let outcome = invocation.outcome();
    let t = &invocation.timings;
    let digest = invocation.digest.as_deref().map(|d| &d[..d.len().min(12)]);
    tracing::info!(
        target: "mcp_sandbox::invocation",
        tool,
        caller = caller.map(|c| &*c.name),
        client = caller.and_then(|c| c.client.as_deref()),
        component = invocation.component.as_deref(),
        digest,
        database = invocation.database.as_deref(),
        outcome = outcome.as_str(),
        instantiate_us = t.instantiate.as_micros() as u64,
        guest_us = t.guest.as_micros() as u64,
        db_us = t.db.as_micros() as u64,
        queries = t.queries,
        total_us = t.total.as_micros() as u64,
        error = invocation.result.as_ref().err().map(|f| f.to_string()),
        "tools/call"
    );
}
