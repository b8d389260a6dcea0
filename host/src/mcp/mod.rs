//! Protocol glue: MCP requests (through the official Rust SDK, rmcp) mapped onto the
//! runtime. No sockets and no wasmtime here; `server/` owns HTTP, `runtime/` owns wasm.

pub mod direct;
mod handler;
pub mod legacy_sse;
mod results;
pub mod validate;

pub use handler::{Admitted, McpHandler};
