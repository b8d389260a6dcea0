//! Unit tests of declared SQL tools: parsing, checks, schemas and envelopes.

use super::envelope::array_literal;
use super::*;

#[test]
fn array_literals_quote_every_element() {
    assert_eq!(
        array_literal(Scalar::Integer, &json!([1, 2.0])),
        r#"{"1","2"}"#
    );
    assert_eq!(array_literal(Scalar::Integer, &json!([])), "{}");
    assert_eq!(
        array_literal(
            Scalar::String,
            &json!(["a", "b \"c\"", "d\\", "NULL", "x,y}"])
        ),
        r#"{"a","b \"c\"","d\\","NULL","x,y}"}"#
    );
}

#[test]
fn errors_name_the_line() {
    let e = parse("t.sql.toml", "[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT 1\"\nparam = [{ name = \"a\", type = \"integr\" }]\n")
        .err()
        .unwrap();
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.to_string().contains("unknown type `integr`"), "{e}");
    let e = parse("t.sql.toml", "[[tool]]\nname = \"x\"\n")
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .starts_with("t.sql.toml line 1: missing field"),
        "{e}"
    );
    let e = parse("t.sql.toml", "[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT 1\"\n\n[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT 2\"\n")
        .err()
        .unwrap();
    assert_eq!(e.line, Some(6), "{e}");
    assert!(parse("t.sql.toml", "").is_err());
    assert!(
        parse(
            "t.sql.toml",
            "[[tool]]\nname = \"x y\"\ndescription = \"d\"\nstatement = \"SELECT 1\"\n"
        )
        .is_err()
    );
}

#[test]
fn constraints_must_fit_the_type() {
    let tool = |param: &str| {
        format!(
            "[[tool]]\nname = \"x\"\ndescription = \"d\"\nstatement = \"SELECT $1\"\nparam = [{param}]\n"
        )
    };
    assert!(
        parse(
            "f",
            &tool(r#"{ name = "a", type = "integer", minimum = 1 }"#)
        )
        .is_ok()
    );
    for bad in [
        r#"{ name = "a", type = "string", minimum = 1 }"#,
        r#"{ name = "a", type = "integer", pattern = "x" }"#,
        r#"{ name = "a", type = "integer", default = "x" }"#,
        r#"{ name = "a", type = "integer", enum = [1, "two"] }"#,
        r#"{ name = "a", type = "integer", default = 1, required = true }"#,
        r#"{ name = "a", type = "string", pattern = "(" }"#,
        r#"{ name = "A", type = "string" }"#,
        r#"{ name = "a", type = "string", colour = "red" }"#,
        r#"{ name = "a", type = "integer", default = 500, maximum = 100 }"#,
        r#"{ name = "a", type = "number", minimum = 5, maximum = 1 }"#,
        r#"{ name = "a", type = "number", minimum = nan }"#,
        r#"{ name = "a", type = "number", maximum = inf }"#,
        r#"{ name = "a", type = "number", default = nan }"#,
        r#"{ name = "a", type = "string", default = "x", enum = ["y", "z"] }"#,
        r#"{ name = "a", type = "string", default = "toolong", max_length = 3 }"#,
        r#"{ name = "a", type = "string", min_length = 4, max_length = 3 }"#,
        r#"{ name = "a", type = "string", default = "abc", pattern = "^[0-9]+$" }"#,
    ] {
        assert!(parse("f", &tool(bad)).is_err(), "{bad}");
    }
    for good in [
        r#"{ name = "a", type = "integer", default = 50, minimum = 1, maximum = 100 }"#,
        r#"{ name = "a", type = "string", default = "y", enum = ["y", "z"] }"#,
        r#"{ name = "a", type = "string", default = "123", pattern = "^[0-9]+$" }"#,
    ] {
        assert!(parse("f", &tool(good)).is_ok(), "{good}");
    }
}

#[test]
fn types_fit_what_postgres_expects() {
    let t = |text: &str| ParamType::try_from(text.to_owned()).unwrap();
    assert!(fits_type(t("integer"), &Type::INT4));
    assert!(fits_type(t("integer[]"), &Type::INT4_ARRAY));
    assert!(!fits_type(t("integer"), &Type::INT4_ARRAY));
    assert!(!fits_type(t("integer"), &Type::TEXT));
    assert!(fits_type(t("string"), &Type::TEXT));
    assert!(fits_type(t("timestamp"), &Type::TIMESTAMPTZ));
    assert!(!fits_type(t("number"), &Type::INT4));
    assert!(ParamType::try_from("float".to_owned()).is_err());
}
