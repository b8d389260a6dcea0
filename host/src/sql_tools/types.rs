//! Postgres types and JSON Schema: what a declared parameter type accepts, the schema of
//! a parameter and of a result column, and the cast to suggest when they disagree.

use super::*;

pub(super) fn param_schema(
    p: &ParamDecl,
    default: Option<&Value>,
    required: bool,
    pg: &Type,
) -> Value {
    let mut item = Map::new();
    let (ty, format, pattern) = match p.ty.scalar {
        Scalar::String => ("string", None, None),
        Scalar::Integer => ("integer", None, None),
        Scalar::Number => ("number", None, None),
        Scalar::Boolean => ("boolean", None, None),
        // ISO 8601 only: Postgres's input also takes `now`, `today`, `infinity` and
        // locale-dependent orders, which a model should not have to guess.
        Scalar::Date => ("string", Some("date"), Some(r"^\d{4}-\d{2}-\d{2}$")),
        Scalar::Time => (
            "string",
            Some("time"),
            Some(r"^\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([+-]\d{2}(:\d{2})?|Z)?$"),
        ),
        Scalar::Timestamp => (
            "string",
            Some("date-time"),
            Some(
                r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([+-]\d{2}(:\d{2})?|Z)?)?$",
            ),
        ),
    };
    item.insert("type".into(), ty.into());
    if let Some(format) = format {
        item.insert("format".into(), format.into());
    }
    if let Some(pattern) = p.pattern.as_deref().or(pattern) {
        item.insert("pattern".into(), pattern.into());
    }
    for (key, value) in [("minimum", &p.minimum), ("maximum", &p.maximum)] {
        if let Some(v) = value {
            item.insert(key.into(), toml_to_json(v));
        }
    }
    if let Some(n) = p.max_length {
        item.insert("maxLength".into(), n.into());
    }
    if let Some(n) = p.min_length {
        item.insert("minLength".into(), n.into());
    }
    if let Some(values) = &p.allowed {
        item.insert("enum".into(), values.iter().map(toml_to_json).collect());
    }
    let mut schema = if p.ty.array {
        let mut array = Map::new();
        array.insert("type".into(), "array".into());
        array.insert("items".into(), Value::Object(item));
        array.insert(
            "maxItems".into(),
            p.max_items.map_or(MAX_ITEMS, u64::from).into(),
        );
        array
    } else {
        item
    };
    if !required && default.is_none() {
        // Absent or null: SQL NULL.
        let ty = schema.remove("type").unwrap_or(Value::Null);
        schema.insert("type".into(), json!([ty, "null"]));
        if let Some(Value::Array(values)) = schema.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    if let Some(default) = default {
        schema.insert("default".into(), default.clone());
    }
    let text = match &p.description {
        Some(text) if !text.is_empty() => format!("{text} (Postgres {})", type_name(pg)),
        _ => format!("Postgres {}", type_name(pg)),
    };
    schema.insert("description".into(), text.into());
    Value::Object(schema)
}

/// A type as SQL writes it: `text[]`, not the catalog's `_text`.
pub(super) fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_owned(),
    }
}

/// The JSON a column's values take (see the guest SDK's `value_to_json`); always
/// nullable, since a prepared statement does not say which columns can be NULL.
pub(super) fn column_schema(ty: &Type) -> Value {
    let types: &[&str] = match ty.kind() {
        Kind::Enum(_) => &["string", "null"],
        Kind::Domain(base) => return column_schema(base),
        Kind::Simple => match *ty {
            Type::BOOL => &["boolean", "null"],
            Type::INT2 | Type::INT4 => &["integer", "null"],
            // beyond 2^53, exact digits in a string
            Type::INT8 | Type::OID => &["integer", "string", "null"],
            // NaN and the infinities are strings
            Type::FLOAT4 | Type::FLOAT8 => &["number", "string", "null"],
            Type::NUMERIC
            | Type::MONEY
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::CHAR
            | Type::UUID
            | Type::DATE
            | Type::TIME
            | Type::TIMETZ
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::INTERVAL
            | Type::INET
            | Type::CIDR
            | Type::BYTEA => &["string", "null"],
            _ => return json!({"description": format!("Postgres {}", type_name(ty))}),
        },
        _ => return json!({"description": format!("Postgres {}", type_name(ty))}),
    };
    json!({"type": types, "description": format!("Postgres {}", type_name(ty))})
}

/// Whether a parameter declared `declared` may be given to Postgres where the statement
/// expects `pg`: the argument is sent as text, which Postgres parses as `pg`.
pub(super) fn fits_type(declared: ParamType, pg: &Type) -> bool {
    match pg.kind() {
        Kind::Domain(base) => return fits_type(declared, base),
        Kind::Array(element) => {
            return declared.array
                && fits_type(
                    ParamType {
                        array: false,
                        ..declared
                    },
                    element,
                );
        }
        Kind::Enum(_) => return !declared.array && declared.scalar == Scalar::String,
        _ => {}
    }
    if declared.array {
        return false;
    }
    match declared.scalar {
        Scalar::String => {
            matches!(
                *pg,
                Type::TEXT
                    | Type::VARCHAR
                    | Type::BPCHAR
                    | Type::NAME
                    | Type::CHAR
                    | Type::UUID
                    | Type::JSON
                    | Type::JSONB
                    | Type::INET
                    | Type::CIDR
                    | Type::MACADDR
                    | Type::MACADDR8
                    | Type::XML
            ) || pg.name() == "citext"
        }
        Scalar::Integer => matches!(
            *pg,
            Type::INT2 | Type::INT4 | Type::INT8 | Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8
        ),
        Scalar::Number => matches!(*pg, Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8),
        Scalar::Boolean => *pg == Type::BOOL,
        Scalar::Date => *pg == Type::DATE,
        Scalar::Time => matches!(*pg, Type::TIME | Type::TIMETZ),
        Scalar::Timestamp => matches!(*pg, Type::TIMESTAMP | Type::TIMESTAMPTZ),
    }
}

pub(super) fn suggested_cast(ty: ParamType) -> String {
    let base = match ty.scalar {
        Scalar::String => "text",
        Scalar::Integer => "int8",
        Scalar::Number => "numeric",
        Scalar::Boolean => "boolean",
        Scalar::Date => "date",
        Scalar::Time => "time",
        Scalar::Timestamp => "timestamptz",
    };
    format!("{base}{}", if ty.array { "[]" } else { "" })
}

/// Whether a JSON value (a default or an enum member) is of a scalar type.
pub(super) fn fits_json(ty: ParamType, value: &Value) -> bool {
    match ty.scalar {
        Scalar::Integer => value.is_i64() || value.is_u64(),
        Scalar::Number => value.is_number(),
        Scalar::Boolean => value.is_boolean(),
        Scalar::String | Scalar::Date | Scalar::Time | Scalar::Timestamp => value.is_string(),
    }
}
