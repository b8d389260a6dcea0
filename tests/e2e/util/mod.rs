//! Test helpers: the shared throwaway database, an in-process server, an MCP client.

pub mod client;
pub mod db;
pub mod server;

pub use client::{Http, Mcp};
pub use server::TestServer;

use libtest_mimic::Trial;
use std::future::Future;

/// A trial running `test` on its own multi-threaded tokio runtime, so servers and tasks
/// a test starts end with it.
pub fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
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
