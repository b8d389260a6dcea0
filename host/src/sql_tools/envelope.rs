//! The call's envelope: a declared tool's arguments checked and turned into the
//! statement's parameters for the `sql-tool` component.

use super::*;

impl SqlTool {
    /// What the `sql-tool` component receives for a call whose arguments passed the
    /// input schema: the statement and each `$n` as text in Postgres's input syntax.
    /// `Err` names an argument Postgres could not take as it is.
    pub fn envelope(&self, arguments: &Value) -> Result<String, String> {
        let params = self
            .params
            .iter()
            .map(|p| {
                let value = arguments
                    .get(&p.name)
                    .filter(|v| !v.is_null())
                    .or(p.default.as_ref());
                let text = match value {
                    None => return Ok(Value::Null),
                    Some(v) if p.ty.array => array_literal(p.ty.scalar, v),
                    Some(v) => scalar_text(p.ty.scalar, v),
                };
                // Postgres text ends at a NUL: refuse it rather than let it cut the
                // value (or an array literal) short.
                if text.contains('\0') {
                    return Err(format!("`/{}`: contains a NUL character", p.name));
                }
                Ok(Value::String(text))
            })
            .collect::<Result<Vec<Value>, String>>()?;
        Ok(json!({
            "statement": &*self.statement,
            "params": params,
            "max_rows": self.max_rows,
        })
        .to_string())
    }
}

/// A scalar argument in Postgres's input syntax.
pub(super) fn scalar_text(scalar: Scalar, value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        // JSON Schema counts 2.0 as an integer; Postgres's integer input does not.
        Value::Number(n) if scalar == Scalar::Integer && !(n.is_i64() || n.is_u64()) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
            .map_or_else(|| n.to_string(), |f| format!("{f:.0}")),
        other => other.to_string(), // numbers and booleans print as Postgres reads them
    }
}

/// A JSON array as a Postgres array literal: `{1,2}`, `{"a","b \"c\""}`. Every element is
/// quoted (a quoted element is never NULL, never split, and keeps its spaces), with `"`
/// and `\` escaped; the input schema has already checked each element's type.
pub(super) fn array_literal(scalar: Scalar, value: &Value) -> String {
    let mut out = String::from("{");
    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in scalar_text(scalar, item).chars() {
            if matches!(c, '"' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}
