//! What each `Store` carries: an empty WASI context, the memory limiter, the
//! invocation's database session and its bookkeeping. One per invocation, never reused.

use super::limits::Limits;
use super::output::GuestOutput;
use crate::db::{Db, Session, SessionOptions};
use crate::metrics::Metrics;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
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
            .stderr(output.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let limiter = Limiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            memory_capped: false,
        };
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

/// The store's limits, remembering whether a memory growth was refused: that, not the
/// wording of an error, is how a trap is classified as the memory cap.
pub struct Limiter {
    limits: StoreLimits,
    pub(super) memory_capped: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_capped = true;
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_capped = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
