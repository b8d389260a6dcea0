//! End-to-end tests: a throwaway PostgreSQL with the sample schema, the real
//! components, the server in-process on 127.0.0.1:0 (and the real binary in `binary`),
//! driven over HTTP. Run with `cargo test --release`.

// Every function here is a test (the custom harness hides that from clippy): an unwrap
// that fails is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod util;

mod audit;
mod audit_fleet;
mod auth;
mod bad_input;
mod binary;
mod caller_roles;
mod cancellation;
mod connections;
mod db_tls;
mod deploy;
mod describe_table;
mod health;
mod https;
mod interop;
mod legacy_sse;
mod limits;
mod list_tables;
mod long_session;
mod metrics;
mod oauth;
mod protocol;
mod query_sql;
mod red_team;
mod release;
mod replicas;
mod resumable;
mod role_recipe;
mod routing;
mod sandbox;
mod scaleout;
mod shutdown;
mod sources;
mod sql_guard;
mod sql_tools;
mod start;
mod stateless;
mod stdio;
mod swap;
mod tidy;

fn main() {
    // The in-process servers and their clients share this process's descriptors (the
    // connection tests open thousands): raise the soft limit to the hard one.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let args = libtest_mimic::Arguments::from_args();
    let trials: Vec<_> = [
        audit::trials(),
        audit_fleet::trials(),
        auth::trials(),
        bad_input::trials(),
        binary::trials(),
        caller_roles::trials(),
        cancellation::trials(),
        connections::trials(),
        db_tls::trials(),
        deploy::trials(),
        describe_table::trials(),
        health::trials(),
        https::trials(),
        interop::trials(),
        legacy_sse::trials(),
        limits::trials(),
        list_tables::trials(),
        long_session::trials(),
        metrics::trials(),
        oauth::trials(),
        protocol::trials(),
        query_sql::trials(),
        red_team::trials(),
        release::trials(),
        replicas::trials(),
        resumable::trials(),
        role_recipe::trials(),
        routing::trials(),
        sandbox::trials(),
        scaleout::trials(),
        shutdown::trials(),
        sql_guard::trials(),
        sources::trials(),
        sql_tools::trials(),
        start::trials(),
        stdio::trials(),
        stateless::trials(),
        swap::trials(),
        tidy::trials(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    util::db::shutdown();
    util::tls_db::shutdown();
    conclusion.exit();
}
