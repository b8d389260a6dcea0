//! Unit tests of the decoding of Postgres binary values.

use super::*;

fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

fn check(ty: Type, raw: &[u8], expect: Value) {
    assert_eq!(decode(&ty, raw), expect, "{ty} {raw:?}");
}

#[test]
fn numerics_keep_every_digit() {
    let n = |s: &str| Value::Numeric(s.into());
    check(
        Type::NUMERIC,
        &numeric_bytes(0, 0, 2, &[12, 5000]),
        n("12.50"),
    );
    check(Type::NUMERIC, &numeric_bytes(-1, 0, 4, &[1]), n("0.0001"));
    check(
        Type::NUMERIC,
        &numeric_bytes(2, 0x4000, 2, &[1, 2345, 6789, 1200]),
        n("-123456789.12"),
    );
    check(Type::NUMERIC, &numeric_bytes(1, 0, 0, &[1]), n("10000"));
    check(Type::NUMERIC, &numeric_bytes(0, 0, 0, &[]), n("0"));
    check(Type::NUMERIC, &numeric_bytes(0, 0xC000, 0, &[]), n("NaN"));
    check(
        Type::NUMERIC,
        &numeric_bytes(-2, 0, 6, &[1200]),
        n("0.000012"),
    );
}

#[test]
fn times_are_iso_8601() {
    let t = |s: &str| Value::Text(s.into());
    check(Type::DATE, &0i32.to_be_bytes(), t("2000-01-01"));
    check(Type::DATE, &(-730_119i32).to_be_bytes(), t("0001-01-01"));
    check(Type::DATE, &i32::MAX.to_be_bytes(), t("infinity"));
    let noon_and_a_half: i64 = 12 * 3_600_000_000 + 500_000;
    check(
        Type::TIMESTAMP,
        &noon_and_a_half.to_be_bytes(),
        t("2000-01-01T12:00:00.5"),
    );
    check(
        Type::TIMESTAMPTZ,
        &(-1i64).to_be_bytes(),
        t("1999-12-31T23:59:59.999999Z"),
    );
    let mut timetz = 3_600_000_000i64.to_be_bytes().to_vec();
    timetz.extend_from_slice(&(-19_800i32).to_be_bytes()); // UTC+05:30
    check(Type::TIMETZ, &timetz, t("01:00:00+05:30"));
    let mut iv = 3_723_000_000i64.to_be_bytes().to_vec();
    iv.extend_from_slice(&3i32.to_be_bytes());
    iv.extend_from_slice(&14i32.to_be_bytes());
    check(Type::INTERVAL, &iv, t("P1Y2M3DT1H2M3S"));
    let zero = [0u8; 16];
    check(Type::INTERVAL, &zero, t("PT0S"));
}

#[test]
fn scalars_decode_and_malformed_input_degrades_to_bytes() {
    check(Type::INT8, &i64::MAX.to_be_bytes(), Value::Int(i64::MAX));
    check(Type::BOOL, &[1], Value::Bool(true));
    check(Type::INT4, &[0, 1], Value::Bytes(vec![0, 1]));
    check(
        Type::INT4,
        &[0, 0, 0, 1, 9],
        Value::Bytes(vec![0, 0, 0, 1, 9]),
    );
    let uuid: Vec<u8> = (0u8..16).collect();
    check(
        Type::UUID,
        &uuid,
        Value::Text("00010203-0405-0607-0809-0a0b0c0d0e0f".into()),
    );
    check(
        Type::INET,
        &[2, 32, 0, 4, 10, 0, 0, 1],
        Value::Text("10.0.0.1".into()),
    );
    check(
        Type::CIDR,
        &[2, 8, 1, 4, 10, 0, 0, 0],
        Value::Text("10.0.0.0/8".into()),
    );
    check(
        Type::JSONB,
        b"\x01{\"a\":1}",
        Value::Json("{\"a\":1}".into()),
    );
    check(
        Type::MONEY,
        &(-1234i64).to_be_bytes(),
        Value::Numeric("-12.34".into()),
    );
}

#[test]
fn arrays_nest_and_keep_big_integers_exact() {
    let mut raw = Vec::new();
    for v in [1i32, 0, 20] {
        raw.extend_from_slice(&v.to_be_bytes()); // ndim, has_null, oid
    }
    raw.extend_from_slice(&3i32.to_be_bytes()); // len
    raw.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    for v in [Some(9_007_199_254_740_993i64), None, Some(-1)] {
        match v {
            Some(v) => {
                raw.extend_from_slice(&8i32.to_be_bytes());
                raw.extend_from_slice(&v.to_be_bytes());
            }
            None => raw.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    check(
        Type::INT8_ARRAY,
        &raw,
        Value::Json(r#"["9007199254740993",null,-1]"#.into()),
    );
}

#[test]
fn json_mapping_matches_the_guest_sdk() {
    assert_eq!(
        to_json(&Value::Int(1 << 53)),
        Json::String("9007199254740992".into())
    );
    assert_eq!(
        to_json(&Value::Int((1 << 53) - 1)),
        Json::from((1i64 << 53) - 1)
    );
    assert_eq!(to_json(&Value::Float(f64::NAN)), Json::String("NaN".into()));
    assert_eq!(
        to_json(&Value::Bytes(vec![0xde, 0xad])),
        Json::String("\\xdead".into())
    );
}
