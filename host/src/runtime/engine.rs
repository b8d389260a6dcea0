//! The wasmtime engine: the pooling allocator sized for the configured concurrency
//! (copy-on-write memories kept resident, so a fresh instance costs microseconds), and
//! epoch interruption driven by one ticker thread.

use super::limits::Limits;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel,
    PoolingAllocationConfig,
};

/// How often the epoch advances: the granularity of deadlines and of a spinning guest
/// yielding to other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instance slots beyond `--max-concurrency`, for health checks, readiness and the
/// validation of swap candidates (see `Shared::spare`).
pub const SPARE_SLOTS: u32 = 4;

/// Resident bytes kept per memory slot across instances (measured sweet spot: a fresh
/// instance in 6-7 µs, and two threads scale instead of contending on munmap).
const KEEP_RESIDENT: usize = 2 << 20;

/// The engine; with `cache_dir`, compiled components are cached there (keyed by the
/// bytes and these settings), so a restart or a swap back to a known version skips
/// compilation.
pub fn build(limits: &Limits, cache_dir: Option<&Path>) -> wasmtime::Result<Engine> {
    let slots = limits.max_concurrency.max(1).saturating_add(SPARE_SLOTS);
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(16))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(8))
        .total_stacks(slots)
        .max_memory_size(limits.memory_bytes)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    if let Some(dir) = cache_dir {
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(Cache::new(cache)?));
    }
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
