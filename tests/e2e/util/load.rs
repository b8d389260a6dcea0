//! Background load: clients calling a tool in a loop while a test does something nasty,
//! recording every failure and the slowest call.

use super::TestServer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Stats>>,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub calls: u64,
    pub failures: Vec<String>,
    pub slowest: Duration,
}

impl Load {
    /// `clients` sessions calling `list_tables` back to back.
    pub async fn start(server: &TestServer, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..clients {
            let mut mcp = server.mcp().await;
            let stop = stop.clone();
            handles.push(tokio::spawn(async move {
                let mut stats = Stats::default();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = mcp.call("list_tables", json!({})).await;
                    stats.slowest = stats.slowest.max(started.elapsed());
                    stats.calls += 1;
                    if response["result"]["isError"] != Value::Bool(false) {
                        stats.failures.push(response.to_string());
                    }
                }
                stats
            }));
        }
        Self {
            stop,
            clients: handles,
        }
    }

    /// Stops the clients; what they saw, summed.
    pub async fn finish(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Stats::default();
        for client in self.clients {
            let stats = client.await.expect("a load client");
            total.calls += stats.calls;
            total.failures.extend(stats.failures);
            total.slowest = total.slowest.max(stats.slowest);
        }
        total
    }
}
