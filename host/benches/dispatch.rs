//! Dispatch micro-benchmark (BENCHMARKS.md): the cost of one sandboxed tool call without
//! a database — admission (schema check), a fresh instance from the `InstancePre`, the
//! guest's `call`, output checks, drop — against the same tool compiled natively, in the
//! same run. Run with `cargo bench -p mcp-sandbox --bench dispatch`.

use clap::Parser;
use mcp_sandbox::config::{Cli, Command};
use mcp_sandbox::db::Db;
use mcp_sandbox::metrics::Metrics;
use mcp_sandbox::runtime::{BUILD_DIR, Runtime};
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Calls per measured run, per thread.
const CALLS: usize = 20_000;
const WARMUP: usize = 2_000;

/// The natively compiled twin of the `which_version` fixture's `call`: read the
/// arguments, build the result, render it as text (what the guest does, minus the sandbox).
fn native_which_version(arguments: &str) -> (String, Value) {
    let args: Value = serde_json::from_str(arguments).expect("JSON arguments");
    black_box(args.get("sleep_ms"));
    let structured = json!({"version": "v1"});
    (structured.to_string(), structured)
}

struct Stats {
    median: Duration,
    p99: Duration,
    per_second: f64,
    /// the runtime's own phase timings (sandboxed runs only): instantiate, guest
    phases: Option<(Duration, Duration)>,
}

fn median_of(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn stats(mut samples: Vec<Duration>, wall: Duration, calls: usize) -> Stats {
    samples.sort_unstable();
    Stats {
        median: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        per_second: calls as f64 / wall.as_secs_f64(),
        phases: None,
    }
}

async fn sandboxed(runtime: &Runtime, threads: usize) -> Stats {
    let started = Instant::now();
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let never = CancellationToken::new();
                let arguments = json!({});
                let mut samples = Vec::with_capacity(CALLS);
                let mut phases = Vec::with_capacity(CALLS);
                for _ in 0..CALLS {
                    let t = Instant::now();
                    let invocation = runtime
                        .call_tool("which_version", &arguments, &never, Default::default())
                        .await;
                    samples.push(t.elapsed());
                    assert!(invocation.result.is_ok(), "{:?}", invocation.result);
                    phases.push((invocation.timings.instantiate, invocation.timings.guest));
                }
                (samples, phases)
            })
        })
        .collect();
    let (mut samples, mut phases) = (Vec::new(), Vec::new());
    for task in tasks {
        let (s, p) = task.await.expect("a bench task");
        samples.extend(s);
        phases.extend(p);
    }
    let mut stats = stats(samples, started.elapsed(), CALLS * threads);
    stats.phases = Some((
        median_of(phases.iter().map(|p| p.0).collect()),
        median_of(phases.iter().map(|p| p.1).collect()),
    ));
    stats
}

async fn native(threads: usize) -> Stats {
    let started = Instant::now();
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(CALLS);
                for _ in 0..CALLS {
                    let t = Instant::now();
                    black_box(native_which_version(black_box("{}")));
                    samples.push(t.elapsed());
                    tokio::task::yield_now().await;
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("a bench task"));
    }
    stats(samples, started.elapsed(), CALLS * threads)
}

fn row(case: &str, s: &Stats) {
    let phases = s.phases.map_or("".into(), |(instantiate, guest)| {
        format!(
            "{:.1} µs / {:.1} µs",
            instantiate.as_secs_f64() * 1e6,
            guest.as_secs_f64() * 1e6
        )
    });
    println!(
        "| {case} | {:.1} µs | {:.1} µs | {:.0} | {phases} |",
        s.median.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.per_second
    );
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // No database: the pool connects lazily and this tool never asks for it.
        let cli = Cli::try_parse_from([
            "mcp-sandbox",
            "serve",
            "--database-url",
            "postgres://bench@127.0.0.1:9/none",
            "--insecure-no-auth",
            "--no-cache",
        ])?;
        let Command::Serve(serve) = cli.command else {
            anyhow::bail!("parsed a serve command");
        };
        let common = &serve.common;
        let (pool, db_limits) = common.database.settings(common.sandbox.call_timeout);
        let url = serve
            .database_url
            .as_ref()
            .map(|url| url.expose())
            .unwrap_or_default();
        let db = Db::new(url, pool.clone(), db_limits.clone())?;
        let sources = mcp_sandbox::db::Sources::single(db);
        let sandbox =
            Runtime::new(sources, common.sandbox.settings(), Arc::new(Metrics::new())).await?;
        let wasm = std::fs::read(std::path::Path::new(BUILD_DIR).join("swap_v1.wasm"))?;
        sandbox
            .put_component("swapper", wasm)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let never = CancellationToken::new();
        for _ in 0..WARMUP {
            sandbox
                .call_tool("which_version", &json!({}), &never, Default::default())
                .await;
        }
        let sandbox_1 = sandboxed(&sandbox, 1).await;
        let sandbox_2 = sandboxed(&sandbox, 2).await;
        let native_1 = native(1).await;
        let native_2 = native(2).await;

        println!("| case | median | p99 | calls/s | instantiate / guest (medians) |");
        println!("|---|---|---|---|---|");
        row("sandboxed, 1 thread", &sandbox_1);
        row("sandboxed, 2 threads", &sandbox_2);
        row("native baseline, 1 thread", &native_1);
        row("native baseline, 2 threads", &native_2);
        println!();
        println!(
            "sandbox overhead (median, 1 thread): {:.1} µs; sandboxed / native median: {:.0}x; \
             2 threads / 1 thread throughput: sandboxed {:.2}x, native {:.2}x",
            (sandbox_1.median.saturating_sub(native_1.median)).as_secs_f64() * 1e6,
            sandbox_1.median.as_secs_f64() / native_1.median.as_secs_f64().max(1e-9),
            sandbox_2.per_second / sandbox_1.per_second,
            native_2.per_second / native_1.per_second,
        );
        Ok(())
    })
}
