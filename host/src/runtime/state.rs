//! What each `Store` carries: an empty WASI context, the memory limiter, the
//! invocation's database session and its bookkeeping. One per invocation, never reused.

use super::limits::Limits;
use super::output::GuestOutput;
use crate::db::{Db, Session, SessionOptions};
use crate::metrics::Metrics;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: StoreLimits,
    pub(super) session: Session,
    pub(super) output: GuestOutput,
    pub(super) component: Arc<str>,
    pub(super) sql_calls: u32,
    pub(super) log_lines: u32,
    pub(super) limits: Limits,
    pub(super) metrics: Arc<Metrics>,
}

impl HostState {
    pub(super) fn new(component: Arc<str>, db: Db, limits: &Limits, metrics: Arc<Metrics>) -> Self {
        let output = GuestOutput::new(limits.output_bytes);
        // No preopens, env, args or network: the component's only way out is our imports.
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let limiter = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            session: Session::new(
                db,
                SessionOptions {
                    statement_timeout: limits.statement_timeout,
                    max_rows: limits.max_rows,
                },
            ),
            output,
            component,
            sql_calls: 0,
            log_lines: 0,
            limits: limits.clone(),
            metrics,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
