//! One invocation: a fresh instance from the component's `InstancePre`, the call under
//! its deadline, the result classified into the failure classes of DESIGN.md, and the
//! phases timed (instantiate, guest, database).

use super::Shared;
use super::bindings::{health_export, tools_export};
use super::registry::{Loaded, Pre};
use crate::invocation::{
    Fault, HealthCheck, HealthReport, HealthState, Invocation, Timings, ToolOutput, TrapKind,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasmtime::Trap;

/// After the deadline, a guest blocked in a host call (not executing wasm, so the epoch
/// cannot stop it) is dropped this much later.
const HOST_CALL_GRACE: Duration = Duration::from_millis(50);
/// How much of a trap's description (with its wasm backtrace) goes to the log.
const MAX_TRAP_LOG: usize = 4096;

impl<T> Invocation<T> {
    /// Names the component a refused call was addressed to.
    pub(super) fn served_by(mut self, loaded: &Loaded) -> Self {
        self.component = Some(loaded.name.clone());
        self.digest = Some(loaded.digest.clone());
        self
    }

    pub(super) fn failed(fault: Fault, started: Instant) -> Self {
        Self {
            component: None,
            digest: None,
            result: Err(fault),
            timings: Timings {
                total: started.elapsed(),
                ..Timings::default()
            },
            db_unavailable: false,
            statement_timed_out: None,
            database: None,
        }
    }
}

impl Shared {
    pub(super) async fn invoke_tool(
        &self,
        loaded: Arc<Loaded>,
        tool: &str,
        arguments: &str,
        started: Instant,
        cancel: &CancellationToken,
        db: crate::db::Db,
    ) -> Invocation<ToolOutput> {
        let deadline = started + loaded.limits.timeout;
        let Pre::Tool(pre) = &loaded.pre else {
            return Invocation::failed(Fault::UnknownTool(tool.to_owned()), started);
        };
        let max_result = loaded.limits.max_result_bytes;
        self.run(
            &self.slots,
            (&loaded, db),
            deadline,
            started,
            cancel,
            async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                let instantiated = Instant::now();
                let result = instance
                    .mcp_sandbox_host_tools()
                    .call_call(&mut *store, tool, arguments)
                    .await?;
                Ok((instantiated, result))
            },
        )
        .await
        .and_then(|result| match result {
            Ok(output) => convert_output(output, max_result),
            Err(tools_export::CallError::UnknownTool(name)) => Err(Fault::UnknownTool(name)),
            Err(tools_export::CallError::InvalidArguments(why)) => {
                Err(Fault::InvalidArguments(why))
            }
            Err(tools_export::CallError::Failed(why)) => Ok(ToolOutput {
                text: why,
                structured: None,
                is_error: true,
            }),
        })
    }

    pub(super) async fn invoke_health(
        &self,
        loaded: Arc<Loaded>,
        started: Instant,
        db: crate::db::Db,
    ) -> Invocation<HealthReport> {
        let deadline = started + self.limits.health_timeout;
        let Pre::Health(pre) = &loaded.pre else {
            return Invocation::failed(
                Fault::Unavailable("not a health component".into()),
                started,
            );
        };
        // A probe is never cancelled: it is short and its answer is shared.
        let never = CancellationToken::new();
        // From the spare slots: a saturated server still answers its probes.
        self.run(
            &self.spare,
            (&loaded, db),
            deadline,
            started,
            &never,
            async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                let instantiated = Instant::now();
                let report = instance
                    .mcp_sandbox_host_health()
                    .call_check(&mut *store)
                    .await?;
                Ok((instantiated, report))
            },
        )
        .await
        .and_then(|report| Ok(convert_report(report)))
    }

    /// Runs `body` in a fresh store (holding one of `slots` for it) under `deadline`,
    /// classifying traps and timing the phases. `body` returns when instantiation finished along with its result. When
    /// `cancel` fires first, `body` is dropped: the instance stops at once and a
    /// statement in flight is cancelled on the server (the database session's `Drop`).
    async fn run<R>(
        &self,
        slots: &tokio::sync::Semaphore,
        (loaded, db): (&Loaded, crate::db::Db),
        deadline: Instant,
        started: Instant,
        cancel: &CancellationToken,
        body: impl AsyncFnOnce(
            &mut wasmtime::Store<super::state::HostState>,
        ) -> wasmtime::Result<(Instant, R)>,
    ) -> InvocationResult<R> {
        let permit = tokio::time::timeout_at(deadline.into(), slots.acquire()).await;
        let _permit = match permit {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                return self.refused(loaded, started, "the server is shutting down");
            }
            Err(_elapsed) => {
                return self.refused(
                    loaded,
                    started,
                    "every sandbox slot stayed busy until the deadline",
                );
            }
        };
        loaded
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut store = self.new_store(loaded.name.clone(), &loaded.limits, deadline, db);
        let before = Instant::now();
        let outcome = tokio::select! {
            outcome = tokio::time::timeout_at(
                (deadline + HOST_CALL_GRACE).into(),
                body(&mut store),
            ) => Some(outcome),
            () = cancel.cancelled() => None,
        };
        let finished = Instant::now();
        let stats = store.data().session.stats();
        let memory_capped = store.data().limiter.memory_capped;
        let stderr = store.data().output.stderr_text();
        let (output, dropped) = store.data().output.take();
        if !output.is_empty() {
            tracing::info!(
                component = &*loaded.name,
                dropped_bytes = dropped,
                "guest output: {}",
                output.trim_end()
            );
        }
        drop(store); // returns the instance slot; the database session cleans up
        let (instantiated, result) = match outcome {
            Some(Ok(Ok((instantiated, value)))) => (Some(instantiated), Ok(value)),
            Some(Ok(Err(error))) => (
                None,
                Err(classify(
                    &error,
                    Signals {
                        memory_capped,
                        stderr: &stderr,
                    },
                    deadline,
                    deadline - started,
                )),
            ),
            Some(Err(_)) => (None, Err(Fault::Timeout(deadline - started))),
            None => (None, Err(Fault::Cancelled)),
        };
        let instantiate = instantiated.map_or(Duration::ZERO, |i| i - before);
        let timings = Timings {
            instantiate,
            guest: (finished - before)
                .saturating_sub(instantiate)
                .saturating_sub(stats.db_time),
            db: stats.db_time,
            queries: stats.queries,
            rows: stats.rows,
            total: started.elapsed(),
        };
        let mut invocation = InvocationResult::new(loaded, result, timings);
        invocation.0.db_unavailable = stats.unavailable;
        invocation.0.statement_timed_out = stats.timed_out;
        invocation
    }
}

impl Shared {
    fn refused<R>(&self, loaded: &Loaded, started: Instant, reason: &str) -> InvocationResult<R> {
        let timings = Timings {
            total: started.elapsed(),
            ..Timings::default()
        };
        InvocationResult::new(loaded, Err(Fault::Unavailable(reason.into())), timings)
    }

    /// Creates (and drops) one instance: can this component run right now?
    pub(super) async fn try_instantiate(&self, loaded: &Loaded) -> Result<(), String> {
        // Every spare slot busy means instances are being created fine; do not queue a
        // probe.
        let Ok(_permit) = self.spare.try_acquire() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.limits.health_timeout;
        let mut store = self.new_store(
            loaded.name.clone(),
            &loaded.limits,
            deadline,
            self.default_db(),
        );
        let result = match &loaded.pre {
            Pre::Tool(pre) => pre.instantiate_async(&mut store).await.map(drop),
            Pre::Health(pre) => pre.instantiate_async(&mut store).await.map(drop),
        };
        result.map_err(|e| format!("{e:#}"))
    }
}

/// An [`Invocation`] whose value still needs converting.
pub(super) struct InvocationResult<R>(Invocation<R>);

impl<R> InvocationResult<R> {
    fn new(loaded: &Loaded, result: Result<R, Fault>, timings: Timings) -> Self {
        Self(Invocation {
            component: Some(loaded.name.clone()),
            digest: Some(loaded.digest.clone()),
            result,
            timings,
            db_unavailable: false,
            statement_timed_out: None,
            database: None,
        })
    }

    fn and_then<T>(self, f: impl FnOnce(R) -> Result<T, Fault>) -> Invocation<T> {
        let Invocation {
            component,
            digest,
            result,
            timings,
            db_unavailable,
            statement_timed_out,
            database,
        } = self.0;
        Invocation {
            component,
            digest,
            result: result.and_then(f),
            timings,
            db_unavailable,
            statement_timed_out,
            database,
        }
    }
}

/// What the host itself saw of a failed invocation, beside the error.
struct Signals<'a> {
    /// the store's limiter refused a memory growth
    memory_capped: bool,
    /// what the guest wrote to stderr, where Rust prints a panic's message
    stderr: &'a str,
}

fn classify(
    error: &wasmtime::Error,
    signals: Signals<'_>,
    deadline: Instant,
    timeout: Duration,
) -> Fault {
    let trap = error.downcast_ref::<Trap>();
    let kind = match trap {
        Some(Trap::Interrupt) => return Fault::Timeout(timeout),
        _ if signals.memory_capped => TrapKind::MemoryLimit,
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::UnreachableCodeReached) if signals.stderr.contains(PANIC_MARK) => {
            TrapKind::Panic
        }
        Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
        Some(Trap::MemoryOutOfBounds | Trap::TableOutOfBounds | Trap::HeapMisaligned) => {
            TrapKind::OutOfBounds
        }
        Some(_) => TrapKind::Other,
        None if Instant::now() >= deadline => return Fault::Timeout(timeout),
        None => TrapKind::Other,
    };
    // Clients get what happened; the wasm backtrace goes to the log, bounded.
    let mut detail = format!("{error:#}");
    if detail.len() > MAX_TRAP_LOG {
        let mut end = MAX_TRAP_LOG;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push('…');
    }
    tracing::warn!(kind = kind.as_str(), "component trapped: {detail}");
    let message = match (kind, trap) {
        (TrapKind::Panic, _) => panic_message(signals.stderr),
        (TrapKind::MemoryLimit, _) => "it reached its memory limit".to_owned(),
        (_, Some(trap)) => trap.to_string(),
        (_, None) => error.root_cause().to_string(),
    };
    Fault::Trap { kind, message }
}

/// How Rust's standard library begins a panic's message on stderr.
const PANIC_MARK: &str = "panicked at";

/// The first line of Rust's panic message, e.g. `panicked at src/lib.rs:3:5: boom`.
fn panic_message(output: &str) -> String {
    let Some(start) = output.find(PANIC_MARK) else {
        return "the component panicked".into();
    };
    let rest = &output[start..];
    let mut lines = rest.lines();
    let head = lines.next().unwrap_or_default();
    match lines.next() {
        Some(detail) if head.ends_with(':') => format!("{head} {}", detail.trim()),
        _ => head.to_owned(),
    }
}

fn convert_output(output: tools_export::Output, max_bytes: usize) -> Result<ToolOutput, Fault> {
    let size = output.text.len() + output.structured.as_ref().map_or(0, String::len);
    if size > max_bytes {
        return Err(Fault::BadOutput(format!(
            "the result is {size} bytes; the limit is {max_bytes}"
        )));
    }
    let structured = match output.structured {
        None => None,
        Some(json) => match serde_json::from_str::<Value>(&json) {
            Ok(value @ Value::Object(_)) => Some(value),
            Ok(_) => {
                return Err(Fault::BadOutput(
                    "structured output is not a JSON object".into(),
                ));
            }
            Err(e) => {
                return Err(Fault::BadOutput(format!(
                    "structured output is not JSON: {e}"
                )));
            }
        },
    };
    Ok(ToolOutput {
        text: output.text,
        structured,
        is_error: output.is_error,
    })
}

fn convert_report(report: health_export::Report) -> HealthReport {
    let state = |s: health_export::State| match s {
        health_export::State::Ok => HealthState::Ok,
        health_export::State::Degraded => HealthState::Degraded,
        health_export::State::Down => HealthState::Down,
    };
    HealthReport {
        state: state(report.state),
        checks: report
            .checks
            .into_iter()
            .map(|c| HealthCheck {
                name: c.name,
                state: state(c.state),
                detail: c.detail,
                micros: c.micros,
            })
            .collect(),
    }
}
