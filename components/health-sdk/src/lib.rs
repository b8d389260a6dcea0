//! Health SDK: the one set of bindings for the `health-component` world.
//!
//! Kept apart from `guest-sdk` because wit-bindgen force-links each world's type
//! section: a crate generating both worlds would make every tool claim to export
//! `health` too.

pub mod bindings {
    //! Generated from `wit/host.wit`; the only `generate!` of the health world.
    wit_bindgen::generate!({
        world: "health-component",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "health_sdk::bindings",
    });
}

pub use bindings::exports::mcp_sandbox::host::health::{CheckResult, Guest, Report, State};
pub use bindings::mcp_sandbox::host::{log, pool, sql};
