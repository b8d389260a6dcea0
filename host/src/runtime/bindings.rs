//! The one place that calls `bindgen!`: host bindings of `wit/host.wit` for both worlds.
//! The health world reuses the tool world's `sql` and `log` so one host implementation
//! serves both.

pub mod tool {
    wasmtime::component::bindgen!({
        world: "tool-component",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub mod health {
    wasmtime::component::bindgen!({
        world: "health-component",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "mcp-sandbox:host/sql": super::tool::mcp_sandbox::host::sql,
            "mcp-sandbox:host/log": super::tool::mcp_sandbox::host::log,
        },
    });
}

pub use health::HealthComponentPre;
pub use health::exports::mcp_sandbox::host::health as health_export;
pub use health::mcp_sandbox::host::pool;
pub use tool::ToolComponentPre;
pub use tool::exports::mcp_sandbox::host::tools as tools_export;
pub use tool::mcp_sandbox::host::{log, sql};
