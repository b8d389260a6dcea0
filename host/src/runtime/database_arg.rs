//! The `database` argument the host adds to every tool of a component when it serves a
//! sources file: listed in the tool's input schema (the sources by name, the default
//! first), taken out of the arguments before the component's own schema checks them,
//! and used to choose the pool the invocation's queries go to. Declared SQL tools name
//! their source in their file instead.

use crate::db::{Source, Sources};
use crate::invocation::Fault;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The argument's name.
pub const NAME: &str = "database";
/// Longest description of one source shown to the model.
const MAX_DESCRIPTION: usize = 200;

/// `schema` with the `database` property added (a copy; the component's is unchanged).
pub fn add_to_schema(schema: &Map<String, Value>, sources: &Sources) -> Map<String, Value> {
    let list = sources.list();
    let names: Vec<&str> = list.iter().map(|s| &*s.name).collect();
    let mut description = format!(
        "The database to use: one of {}. Default: {}.",
        names.join(", "),
        names[0]
    );
    for source in list.iter() {
        if let Some(text) = &source.description {
            let text: String = text.chars().take(MAX_DESCRIPTION).collect();
            description.push_str(&format!(
                " {}: {}.",
                source.name,
                text.trim_end_matches('.')
            ));
        }
    }
    let mut schema = schema.clone();
    let properties = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(properties) = properties {
        properties.insert(
            NAME.into(),
            json!({"type": "string", "enum": names, "description": description}),
        );
    }
    schema
}

/// Whether a component's own schema declares the argument the host reserves.
pub fn declared_by(schema: &Map<String, Value>) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key(NAME))
}

/// The source `arguments` ask for, and the arguments without `database`.
pub fn take(sources: &Sources, arguments: &Value) -> Result<(Arc<Source>, Value), Fault> {
    let Some(object) = arguments.as_object() else {
        return Ok((sources.first(), arguments.clone()));
    };
    let Some(asked) = object.get(NAME) else {
        return Ok((sources.first(), arguments.clone()));
    };
    let Some(asked) = asked.as_str() else {
        return Err(Fault::InvalidArguments(format!(
            "`{NAME}` must be a string, one of: {}",
            sources
                .names()
                .iter()
                .map(|n| n.as_ref())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let source = sources
        .pick(Some(asked))
        .map_err(|e| Fault::InvalidArguments(e.to_string()))?;
    let mut rest = object.clone();
    rest.remove(NAME);
    Ok((source, Value::Object(rest)))
}
