//! The audit records a server writes, one type each, with plain fields: the audit log's
//! format is a contract operators verify offline, so it lives in one place. A tool call's
//! record is filled in as the call goes and serialized once, when it is written; the
//! others are written as built. (Their members are declared in the order they are
//! written: alphabetical for the records that were JSON objects before they had types.)

use super::Audit;
use crate::access::{Identity, RequestInfo};
use crate::invocation::{Invocation, Outcome, ToolOutput};
use serde_json::{Value, json};
use std::sync::Arc;

/// The audit record of one `tools/call`, filled in as the call goes and serialized
/// once, when it is written (no JSON tree is built for it).
pub struct CallRecord {
    time: String,
    info: RequestInfo,
    /// the JSON-RPC id, as the client sent it
    rpc_id: Value,
    client: Option<String>,
    client_version: Option<String>,
    tool: String,
    arguments: Value,
    ran: Option<Ran>,
    outcome: Outcome,
    error_class: Option<Outcome>,
    error: Option<String>,
    /// when the call arrived (its deadline counts from here)
    pub started: std::time::Instant,
}

/// What a call that ran adds to its record.
#[derive(serde::Serialize)]
struct Ran {
    component: Option<Arc<str>>,
    digest: Option<Arc<str>>,
    /// the source its queries went to (a server with a sources file)
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<Arc<str>>,
    queries: u32,
    rows: u64,
    timings_us: PhaseMicros,
    bytes: usize,
}

#[derive(serde::Serialize)]
struct PhaseMicros {
    instantiate: u64,
    guest: u64,
    db: u64,
    total: u64,
}

/// A record as written (members in this order).
#[derive(serde::Serialize)]
struct CallLine<'a> {
    time: &'a str,
    event: &'static str,
    request_id: &'a str,
    rpc_id: &'a Value,
    session: Option<&'a str>,
    remote: Option<std::net::SocketAddr>,
    client: Option<&'a str>,
    client_version: Option<&'a str>,
    tool: &'a str,
    #[serde(flatten)]
    ran: Option<&'a Ran>,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_class: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    caller: Value,
    arguments: &'a Value,
}

impl CallRecord {
    /// The record of a call of `tool` with `arguments`, as it arrives.
    pub fn new(
        tool: &str,
        arguments: Value,
        info: RequestInfo,
        rpc_id: Value,
        (client, client_version): (Option<String>, Option<String>),
        started: std::time::Instant,
    ) -> Self {
        Self {
            time: super::now_rfc3339(),
            info,
            rpc_id,
            client,
            client_version,
            tool: tool.to_owned(),
            arguments,
            ran: None,
            outcome: Outcome::Ok,
            error_class: None,
            error: None,
            started,
        }
    }

    /// The call was refused before it ran (`outcome` says why), with this message.
    pub fn refused(&mut self, outcome: Outcome, message: &str) {
        self.outcome = outcome;
        self.error_class = Some(outcome);
        self.error = Some(message.to_owned());
    }

    /// The call ran: what it produced, the answer's size in bytes and its error text.
    pub fn invocation(
        &mut self,
        invocation: &Invocation<ToolOutput>,
        bytes: usize,
        error: Option<String>,
    ) {
        let outcome = invocation.outcome();
        let t = &invocation.timings;
        self.ran = Some(Ran {
            component: invocation.component.clone(),
            digest: invocation.digest.clone(),
            database: invocation.database.clone(),
            queries: t.queries,
            rows: t.rows,
            timings_us: PhaseMicros {
                instantiate: t.instantiate.as_micros() as u64,
                guest: t.guest.as_micros() as u64,
                db: t.db.as_micros() as u64,
                total: t.total.as_micros() as u64,
            },
            bytes,
        });
        self.outcome = outcome;
        if outcome != Outcome::Ok {
            self.error_class = Some(outcome);
            self.error = error;
        }
    }

    /// The record's line, with the caller named and the redaction patterns applied.
    pub fn finish(&self, caller: Option<&Identity>, audit: &Audit) -> serde_json::Result<String> {
        let redacted;
        let arguments = if audit.redacts() {
            let mut copy = self.arguments.clone();
            audit.redact(&mut copy);
            redacted = copy;
            &redacted
        } else {
            &self.arguments
        };
        let error = self.error.as_deref().map(|e| audit.redact_text(e));
        let line = CallLine {
            time: &self.time,
            event: "tool_call",
            request_id: &self.info.id,
            rpc_id: &self.rpc_id,
            session: self.info.session.as_deref(),
            remote: self.info.remote,
            client: self.client.as_deref(),
            client_version: self.client_version.as_deref(),
            tool: &self.tool,
            ran: self.ran.as_ref(),
            outcome: self.outcome,
            error_class: self.error_class,
            error: error.as_deref(),
            caller: caller_json(caller),
            arguments,
        };
        serde_json::to_string(&line)
    }
}

/// Who called, as the audit record names them: never the token.
pub fn caller_json(caller: Option<&Identity>) -> Value {
    match caller {
        None => Value::Null,
        Some(c) => json!({
            "name": &*c.name,
            "origin": match c.origin {
                crate::access::Origin::Token => "token",
                crate::access::Origin::OAuth => "oauth",
                crate::access::Origin::Anonymous => "anonymous",
                crate::access::Origin::Local => "local",
            },
            "issuer": c.issuer.as_deref(),
            "oauth_client": c.client.as_deref(),
        }),
    }
}

/// A record the audit log writes; `EVENT` is its `event` member, for the metric.
pub trait Record: serde::Serialize {
    const EVENT: &'static str;
}

/// The common members: when, which request, from where.
pub fn request_members(info: &RequestInfo) -> (String, Arc<str>, Option<String>) {
    (
        super::now_rfc3339(),
        info.id.clone(),
        info.remote.map(|r| r.to_string()),
    )
}

/// An admin action that was carried out, rejected or failed.
#[derive(serde::Serialize)]
pub struct AdminRecord<'a> {
    pub action: &'a str,
    pub caller: Value,
    pub component: &'a str,
    pub digest: Option<Value>,
    pub error: Option<&'a str>,
    pub event: &'static str,
    pub outcome: &'static str,
    pub remote: Option<String>,
    pub request_id: Arc<str>,
    pub status: u16,
    pub time: String,
}

impl Record for AdminRecord<'_> {
    const EVENT: &'static str = "admin";
}

/// A request to the admin API by a caller who is not an admin.
#[derive(serde::Serialize)]
pub struct AdminRefusedRecord<'a> {
    pub caller: Value,
    pub error_class: &'static str,
    pub event: &'static str,
    pub method: &'a str,
    pub outcome: &'static str,
    pub path: &'a str,
    pub remote: Option<String>,
    pub request_id: Arc<str>,
    pub status: u16,
    pub time: String,
}

impl Record for AdminRefusedRecord<'_> {
    const EVENT: &'static str = "admin";
}

/// A refused sign-in.
#[derive(serde::Serialize)]
pub struct AuthRefusedRecord {
    pub error_class: &'static str,
    pub event: &'static str,
    pub outcome: &'static str,
    pub remote: Option<String>,
    pub request_id: Arc<str>,
    pub route: &'static str,
    pub time: String,
}

impl Record for AuthRefusedRecord {
    const EVENT: &'static str = "auth_refused";
}

/// A `tools/call` refused before the handler saw it (a limit, a missing scope).
#[derive(serde::Serialize)]
pub struct RefusedCallRecord<'a> {
    pub arguments: Value,
    pub caller: Value,
    /// the session the request named (ownership is checked only after a scope refusal)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_session: Option<Option<&'a str>>,
    pub error: &'a str,
    pub error_class: &'a str,
    pub event: &'static str,
    pub outcome: Outcome,
    pub remote: Option<String>,
    pub request_id: Arc<str>,
    pub rpc_id: &'a Value,
    pub time: String,
    pub tool: Option<&'a str>,
}

impl Record for RefusedCallRecord<'_> {
    const EVENT: &'static str = "tool_call";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's members are written in the order its type declares them; these were
    /// JSON objects (serde_json's sorted maps) before they had types, so their declared
    /// order must stay sorted, and each says the event its type is counted under.
    fn check<R: Record>(record: &R) -> String {
        let line = serde_json::to_string(record).unwrap();
        let sorted = serde_json::to_value(record).unwrap().to_string();
        assert_eq!(line, sorted, "members out of alphabetical order");
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], R::EVENT);
        line
    }

    #[test]
    fn records_keep_their_format() {
        let id: Arc<str> = Arc::from("req-1");
        check(&AdminRecord {
            action: "put",
            caller: Value::Null,
            component: "c",
            digest: None,
            error: None,
            event: "admin",
            outcome: "ok",
            remote: None,
            request_id: id.clone(),
            status: 200,
            time: "t".into(),
        });
        check(&AdminRefusedRecord {
            caller: Value::Null,
            error_class: "not_admin",
            event: "admin",
            method: "GET",
            outcome: "refused",
            path: "/admin/components",
            remote: None,
            request_id: id.clone(),
            status: 403,
            time: "t".into(),
        });
        check(&AuthRefusedRecord {
            error_class: "invalid",
            event: "auth_refused",
            outcome: "refused",
            remote: Some("127.0.0.1:1".into()),
            request_id: id.clone(),
            route: "/mcp",
            time: "t".into(),
        });
        let rpc_id = json!(7);
        let mut refused = RefusedCallRecord {
            arguments: json!({"sql": "SELECT 1"}),
            caller: Value::Null,
            claimed_session: None,
            error: "e",
            error_class: "rate",
            event: "tool_call",
            outcome: Outcome::Limited,
            remote: None,
            request_id: id,
            rpc_id: &rpc_id,
            time: "t".into(),
            tool: Some("query_sql"),
        };
        assert!(!check(&refused).contains("claimed_session"));
        refused.claimed_session = Some(None);
        assert!(check(&refused).contains(r#""claimed_session":null"#));
        refused.claimed_session = Some(Some("s-1"));
        assert!(check(&refused).contains(r#""claimed_session":"s-1""#));
    }
}
