//! Test helpers: the shared throwaway database, an in-process server, an MCP client.

pub mod client;
pub mod db;
pub mod load;
pub mod metrics;
pub mod oauth;
pub mod pki;
pub mod server;
pub mod store;
pub mod tls_db;
pub mod tools;

pub use client::{Http, Mcp};
pub use server::{TOKEN_AUTH, TestServer};

/// The built-in components' tools, as `tools/list` orders them (by name).
pub const BUILTIN_TOOLS: [&str; 5] = [
    "describe_table",
    "explain_query",
    "list_schemas",
    "list_tables",
    "query_sql",
];

use libtest_mimic::Trial;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A built fixture component (`components/fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    // Libraries' artifacts use underscores; binaries (a WASI command) keep the name.
    let dir = Path::new(mcp_sandbox::runtime::BUILD_DIR);
    let library = dir.join(format!("{}.wasm", name.replace('-', "_")));
    let path = if library.is_file() {
        library
    } else {
        dir.join(format!("{name}.wasm"))
    };
    assert!(
        path.is_file(),
        "fixture {name} was not built: {}",
        path.display()
    );
    path
}

/// A port nothing listens on right now (racy in theory; fine on this machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mcp-sandbox-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Copies a fixture in as `as_name.wasm`.
    pub fn with_fixture(self, fixture_name: &str, as_name: &str) -> Self {
        std::fs::copy(
            fixture(fixture_name),
            self.0.join(format!("{as_name}.wasm")),
        )
        .expect("copying a fixture");
        self
    }

    pub fn path_str(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Tests that keep both cores busy for seconds (a Postgres backend in uninterruptible
/// work; stripping and compressing the release binary, which starved
/// `sandbox::spinning_guest_stops_at_its_deadline`'s client): they run alone, so tests
/// that time how well the server shares the cores do not see them.
const RUN_ALONE: &[&str] = &[
    "red_team::a_statement_past_its_timeout_holds_its_slot_until_postgres_lets_go",
    "release::the_archives_install_and_serve",
];

/// Held shared by every test, exclusively by those in [`RUN_ALONE`].
static CORES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A trial running `test` on its own multi-threaded tokio runtime, so servers and tasks
/// a test starts end with it.
pub fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let alone = RUN_ALONE.contains(&name);
    Trial::test(name, move || {
        use std::sync::PoisonError;
        let _cores = match alone {
            true => (
                None,
                Some(CORES.write().unwrap_or_else(PoisonError::into_inner)),
            ),
            false => (
                Some(CORES.read().unwrap_or_else(PoisonError::into_inner)),
                None,
            ),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(test());
        Ok(())
    })
}

/// Declares a module's tests: `trials!(module: test_a, test_b)`.
#[macro_export]
macro_rules! trials {
    ($module:ident: $($test:ident),+ $(,)?) => {
        pub fn trials() -> Vec<libtest_mimic::Trial> {
            vec![$($crate::util::trial(
                concat!(stringify!($module), "::", stringify!($test)),
                $test,
            )),+]
        }
    };
}
