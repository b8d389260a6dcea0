//! A `.sql.toml` file read: TOML syntax with the line of every error, then each
//! declaration checked on its own (names, types, bounds, defaults) before the database
//! sees its statement.

use super::*;

/// The file's tools, syntax and declarations checked, in file order.
pub(super) fn parse(file: &str, text: &str) -> Result<Vec<Parsed>, DeclarationError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let fail = |line: Option<usize>, reason: String| DeclarationError {
        file: file.to_owned(),
        line,
        reason,
        retry: false,
    };
    let parsed: File = toml::from_str(text)
        .map_err(|e| fail(e.span().map(|s| line_of(s.start)), e.message().to_owned()))?;
    if parsed.tool.is_empty() {
        return Err(fail(
            None,
            "declares no tool: add a [[tool]] table with name, description and statement".into(),
        ));
    }
    if parsed.tool.len() > MAX_TOOLS {
        return Err(fail(
            None,
            format!(
                "declares {} tools; one file may declare at most {MAX_TOOLS}",
                parsed.tool.len()
            ),
        ));
    }
    let mut tools: Vec<Parsed> = Vec::with_capacity(parsed.tool.len());
    for spanned in parsed.tool {
        let line = line_of(spanned.span().start);
        let decl = spanned.into_inner();
        let statement_line = line_of(decl.statement.span().start);
        check_declaration(&decl).map_err(|reason| fail(Some(line), reason))?;
        if tools.iter().any(|t| t.decl.name == decl.name) {
            return Err(fail(
                Some(line),
                format!("tool `{}` is declared twice", decl.name),
            ));
        }
        let source = decl.source.clone().or_else(|| parsed.source.clone());
        tools.push(Parsed {
            decl,
            line,
            statement_line,
            source,
        });
    }
    Ok(tools)
}

/// What can be checked without the database.
pub(super) fn check_declaration(decl: &Decl) -> Result<(), String> {
    let name = &decl.name;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !name_ok {
        return Err(format!(
            "tool name {name:?} is not 1-64 characters of A-Z a-z 0-9 _ -"
        ));
    }
    if decl.description.trim().is_empty() {
        return Err(format!(
            "tool `{name}`: the description is empty; models choose tools by it"
        ));
    }
    if decl.max_rows == Some(0) {
        return Err(format!("tool `{name}`: max_rows must be at least 1"));
    }
    for (i, spanned) in decl.param.iter().enumerate() {
        let p = spanned.get_ref();
        let at =
            |reason: String| format!("tool `{name}`, parameter ${} `{}`: {reason}", i + 1, p.name);
        let param_ok = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !param_ok {
            return Err(at(
                "a parameter name is 1-64 of a-z 0-9 _, not starting with a digit".into(),
            ));
        }
        if decl.param[..i].iter().any(|q| q.get_ref().name == p.name) {
            return Err(at("declared twice".into()));
        }
        if p.required == Some(true) && p.default.is_some() {
            return Err(at(
                "a parameter with a default is not required; drop one".into()
            ));
        }
        if p.default.is_some() && p.ty.array {
            return Err(at("an array parameter takes no default".into()));
        }
        let numeric = matches!(p.ty.scalar, Scalar::Integer | Scalar::Number);
        if (p.minimum.is_some() || p.maximum.is_some()) && !numeric {
            return Err(at(format!(
                "minimum and maximum apply to integer and number, not {}",
                p.ty
            )));
        }
        let textual = matches!(p.ty.scalar, Scalar::String);
        if (p.pattern.is_some() || p.max_length.is_some() || p.min_length.is_some()) && !textual {
            return Err(at(format!(
                "pattern, min_length and max_length apply to string, not {}",
                p.ty
            )));
        }
        if p.max_items.is_some() && !p.ty.array {
            return Err(at("max_items applies to arrays".into()));
        }
        // The schema compiles later; its messages are worse than these.
        for (what, value) in [("minimum", &p.minimum), ("maximum", &p.maximum)] {
            if let Some(v) = value
                && !matches!(v, toml::Value::Integer(_) | toml::Value::Float(_))
            {
                return Err(at(format!("{what} must be a number")));
            }
        }
        if let Some(pattern) = &p.pattern
            && let Err(e) = regex_check(pattern)
        {
            return Err(at(format!("pattern: {e}")));
        }
        check_bounds(p).map_err(at)?;
        let scalar = ParamType {
            array: false,
            ..p.ty
        };
        for value in p.default.iter().chain(p.allowed.iter().flatten()) {
            let json = toml_to_json(value);
            if !fits_json(scalar, &json) {
                return Err(at(format!("{json} is not a {scalar}")));
            }
        }
    }
    Ok(())
}

/// The constraints agree with each other, and a default meets them: otherwise the
/// schema would advertise a default that the check refuses, or no value at all.
pub(super) fn check_bounds(p: &ParamDecl) -> Result<(), String> {
    let number = |v: &toml::Value| match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    };
    let (low, high) = (
        p.minimum.as_ref().and_then(number),
        p.maximum.as_ref().and_then(number),
    );
    if low.is_some_and(|v| !v.is_finite()) || high.is_some_and(|v| !v.is_finite()) {
        return Err("minimum and maximum must be finite numbers".into());
    }
    if let (Some(low), Some(high)) = (low, high)
        && low > high
    {
        return Err(format!("minimum {low} is above maximum {high}"));
    }
    if let (Some(low), Some(high)) = (p.min_length, p.max_length)
        && low > high
    {
        return Err(format!("min_length {low} is above max_length {high}"));
    }
    let Some(default) = &p.default else {
        return Ok(());
    };
    if let Some(n) = number(default)
        && (!n.is_finite() || low.is_some_and(|low| n < low) || high.is_some_and(|high| n > high))
    {
        return Err(format!("the default {n} is outside minimum and maximum"));
    }
    if let Some(allowed) = &p.allowed
        && !allowed.contains(default)
    {
        return Err(format!("the default {default} is not one of enum"));
    }
    if let toml::Value::String(text) = default {
        let length = text.chars().count() as u32;
        if p.min_length.is_some_and(|min| length < min)
            || p.max_length.is_some_and(|max| length > max)
        {
            return Err("the default's length is outside min_length and max_length".into());
        }
        if let Some(pattern) = &p.pattern {
            let schema = json!({"type": "string", "pattern": pattern});
            if jsonschema::validator_for(&schema).is_ok_and(|v| !v.is_valid(&json!(text))) {
                return Err(format!("the default {text:?} does not match pattern"));
            }
        }
    }
    Ok(())
}

/// jsonschema compiles `pattern` as an ECMA regex; refuse one it would not take.
pub(super) fn regex_check(pattern: &str) -> Result<(), String> {
    let schema = json!({"type": "string", "pattern": pattern});
    jsonschema::validator_for(&schema)
        .map(drop)
        .map_err(|e| e.to_string())
}

pub(super) fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => items.iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}
