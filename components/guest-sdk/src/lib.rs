//! Guest SDK: the one set of bindings for the `tool-component` world, plus the helpers
//! that make a tool component about twenty lines (definition, argument parsing, SQL,
//! JSON rendering of rows).
//!
//! ```ignore
//! use guest_sdk::{Args, CallError, Output, Tool, ToolDef, json};
//!
//! struct Hello;
//! impl Tool for Hello {
//!     fn definition() -> ToolDef {
//!         ToolDef::new("hello", "Greets someone")
//!             .input(json!({"type": "object", "properties": {"name": {"type": "string"}}}))
//!     }
//!     fn call(args: Args) -> Result<Output, CallError> {
//!         let name = args.str("name")?.unwrap_or("world");
//!         Ok(Output::text(format!("hello, {name}")))
//!     }
//! }
//! guest_sdk::export_tools!(Hello);
//! ```

pub mod bindings {
    //! Generated from `wit/host.wit`; the only `generate!` of the tool world.
    wit_bindgen::generate!({
        world: "tool-component",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "guest_sdk::bindings",
    });
}

mod args;
mod render;

pub use args::Args;
pub use bindings::exports::mcp_sandbox::host::tools::{
    Annotations, CallError, Output, Tool as ToolInfo,
};
pub use bindings::mcp_sandbox::host::log;
pub use bindings::mcp_sandbox::host::sql;
pub use render::{describe_query_error, value_to_json};
pub use serde_json::{self, Map, Value, json};

/// One tool: its definition and its behaviour. Export any number with [`export_tools!`].
pub trait Tool {
    fn definition() -> ToolDef;
    fn call(args: Args) -> Result<Output, CallError>;
}

/// A tool's definition, as listed to MCP clients.
pub struct ToolDef {
    name: String,
    title: Option<String>,
    description: String,
    input_schema: Value,
    output_schema: Option<Value>,
    annotations: Annotations,
}

impl ToolDef {
    /// A read-only, idempotent, closed-world tool taking no arguments; refine with the
    /// builder methods.
    pub fn new(name: &str, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            title: None,
            description: description.to_owned(),
            input_schema: json!({"type": "object", "additionalProperties": false}),
            output_schema: None,
            annotations: Annotations {
                read_only: true,
                destructive: false,
                idempotent: true,
                open_world: false,
            },
        }
    }

    pub fn title(mut self, title: &str) -> Self {
        self.title = Some(title.to_owned());
        self
    }

    /// JSON Schema of the arguments object.
    pub fn input(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }

    /// JSON Schema of the structured output.
    pub fn output(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    pub fn annotations(mut self, annotations: Annotations) -> Self {
        self.annotations = annotations;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl From<ToolDef> for ToolInfo {
    fn from(def: ToolDef) -> Self {
        ToolInfo {
            name: def.name,
            title: def.title,
            description: def.description,
            input_schema: def.input_schema.to_string(),
            output_schema: def.output_schema.map(|s| s.to_string()),
            annotations: def.annotations,
        }
    }
}

impl Output {
    /// A successful result carrying structured content; the text is its JSON, as the
    /// MCP specification recommends for clients that do not read `structuredContent`.
    pub fn json(structured: Value) -> Self {
        // Serialized once: the two are the same text.
        let text = structured.to_string();
        Output {
            structured: Some(text.clone()),
            text,
            is_error: false,
        }
    }

    /// A successful plain-text result.
    pub fn text(text: impl Into<String>) -> Self {
        Output {
            text: text.into(),
            structured: None,
            is_error: false,
        }
    }

    /// A tool error the model should see (`isError: true`), e.g. bad SQL.
    pub fn error(message: impl Into<String>) -> Self {
        Output {
            text: message.into(),
            structured: None,
            is_error: true,
        }
    }
}

/// Runs one SQL statement through the host's read-only guard.
pub fn query(statement: &str, params: &[sql::Value]) -> Result<sql::Rows, sql::QueryError> {
    sql::query(statement, params, sql::QueryOptions { max_rows: None })
}

/// Logs through the host, tagged with this component.
pub fn log_info(message: &str) {
    log::log(log::Level::Info, message);
}

#[doc(hidden)]
pub fn dispatch<T: Tool>(arguments: &str) -> Result<Output, CallError> {
    T::call(Args::parse(arguments)?)
}

/// Exports the given [`Tool`] types as this component's `tools` interface.
#[macro_export]
macro_rules! export_tools {
    ($($tool:ty),+ $(,)?) => {
        struct __GuestSdkExport;

        impl $crate::bindings::exports::mcp_sandbox::host::tools::Guest for __GuestSdkExport {
            fn list() -> ::std::vec::Vec<$crate::ToolInfo> {
                ::std::vec![$(<$tool as $crate::Tool>::definition().into()),+]
            }

            fn call(
                name: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::std::result::Result<$crate::Output, $crate::CallError> {
                $(
                    if <$tool as $crate::Tool>::definition().name() == name {
                        return $crate::dispatch::<$tool>(&arguments);
                    }
                )+
                Err($crate::CallError::UnknownTool(name))
            }
        }

        $crate::bindings::export!(__GuestSdkExport with_types_in $crate::bindings);
    };
}
