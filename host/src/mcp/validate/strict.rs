//! JSON parsed as `serde_json` parses it, but an object naming a key twice is an error.
//! Readers disagree on duplicates (`serde_json::Value` keeps the last, a derived struct
//! behind `#[serde(flatten)]` may see the first), so a message with two `method`s could
//! be one method to the checks here and another to the SDK that serves it.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Parses `body`; duplicate keys, at any depth, are an error that names the key.
pub fn parse(body: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Strict.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A `Value` whose objects have unique keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn duplicates_are_refused_at_any_depth_and_the_rest_parses_as_serde_json_does() {
        for dup in [
            r#"{"method":"tools/call","method":"ping"}"#,
            r#"{"params":{"name":"a","name":"b"}}"#,
            r#"{"a":[{"x":1,"x":1}]}"#,
        ] {
            let error = parse(dup.as_bytes()).unwrap_err().to_string();
            assert!(error.contains("appears twice"), "{dup}: {error}");
        }
        for same in [
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[1,2.5,-3,"s",null,true]}}"#,
            r#"[{"a":{"b":{}}}, 18446744073709551615, 1e400]"#,
        ] {
            let expected: Result<serde_json::Value, _> = serde_json::from_str(same);
            assert_eq!(parse(same.as_bytes()).ok(), expected.ok(), "{same}");
        }
        assert!(parse(b"{} trailing").is_err());
    }
}
