//! Decodes Postgres binary result values into [`Value`]s that keep their meaning:
//! exact numerics, ISO 8601 times, arrays and records as JSON.
//!
//! The host, not the guest, owns this mapping (DESIGN.md): every component sees the
//! same faithful values. Malformed input never panics; it degrades to raw bytes.

use super::value::Value;
use serde_json::{Map, Value as Json};
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use tokio_postgres::types::{Kind, Type};

/// Micro-seconds per day.
const USECS_PER_DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 to Postgres's epoch 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
/// The largest integer every JSON reader (JavaScript included) holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
/// Arrays and records nest; a hostile type could nest deeper than is useful.
const MAX_DEPTH: usize = 32;

/// Decodes one non-NULL column value of type `ty`.
pub fn decode(ty: &Type, raw: &[u8]) -> Value {
    decode_at(ty, raw, 0).unwrap_or_else(|| Value::Bytes(raw.to_vec()))
}

/// Maps a decoded value to JSON by the rules of `guest-sdk`'s `value_to_json`: integers
/// beyond ±(2^53 − 1), numerics and non-finite floats become strings; bytes become
/// `\x…` hex text.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => Json::from(*i),
        Value::Int(i) => Json::String(i.to_string()),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(float_text(*f))),
        Value::Numeric(s) | Value::Text(s) => Json::String(s.clone()),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone())),
        Value::Bytes(b) => Json::String(hex(b)),
    }
}

fn decode_at(ty: &Type, raw: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    match ty.kind() {
        Kind::Enum(_) => return text(raw),
        Kind::Domain(base) => return decode_at(base, raw, depth + 1),
        Kind::Array(element) => {
            return array(element, raw, depth).map(|j| Value::Json(j.to_string()));
        }
        Kind::Composite(fields) => {
            return composite(fields, raw, depth).map(|j| Value::Json(j.to_string()));
        }
        Kind::Range(subtype) => return range(subtype, raw, depth).map(Value::Text),
        _ => {}
    }
    let mut r = Reader(raw);
    let value = match *ty {
        Type::BOOL => Value::Bool(r.u8()? != 0),
        Type::INT2 => Value::Int(i64::from(r.i16()?)),
        Type::INT4 => Value::Int(i64::from(r.i32()?)),
        Type::INT8 => Value::Int(r.i64()?),
        Type::OID | Type::XID | Type::CID | Type::REGCLASS | Type::REGTYPE | Type::REGPROC => {
            Value::Int(i64::from(r.u32()?))
        }
        Type::FLOAT4 => Value::Float(f64::from(f32::from_bits(r.u32()?))),
        Type::FLOAT8 => Value::Float(f64::from_bits(r.u64()?)),
        Type::NUMERIC => Value::Numeric(numeric(&mut r)?),
        Type::MONEY => Value::Numeric(money(r.i64()?)),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            return text(raw);
        }
        Type::CHAR => Value::Text(char::from(r.u8()?).to_string()),
        Type::JSON => return String::from_utf8(raw.to_vec()).ok().map(Value::Json),
        Type::JSONB => {
            let (&version, rest) = raw.split_first()?;
            if version != 1 {
                return None;
            }
            return String::from_utf8(rest.to_vec()).ok().map(Value::Json);
        }
        Type::BYTEA => return Some(Value::Bytes(raw.to_vec())),
        Type::UUID => return uuid(raw).map(Value::Text),
        Type::DATE => Value::Text(date(r.i32()?)),
        Type::TIME => Value::Text(time_of_day(r.i64()?)?),
        Type::TIMETZ => {
            let t = time_of_day(r.i64()?)?;
            Value::Text(format!("{t}{}", offset(-r.i32()?)))
        }
        Type::TIMESTAMP => Value::Text(timestamp(r.i64()?, "")),
        Type::TIMESTAMPTZ => Value::Text(timestamp(r.i64()?, "Z")),
        Type::INTERVAL => {
            let micros = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            Value::Text(interval(months, days, micros))
        }
        Type::INET | Type::CIDR => return inet(raw).map(Value::Text),
        Type::MACADDR | Type::MACADDR8 => return Some(Value::Text(mac(raw))),
        Type::BIT | Type::VARBIT => Value::Text(bits(&mut r)?),
        Type::POINT => Value::Text(format!(
            "({},{})",
            f64::from_bits(r.u64()?),
            f64::from_bits(r.u64()?)
        )),
        // Types without a known binary layout: extension types such as citext send
        // their text; anything else stays bytes.
        _ => return Some(printable_text(raw).unwrap_or_else(|| Value::Bytes(raw.to_vec()))),
    };
    // Every byte must be accounted for; anything else is not the layout we assumed.
    r.done().then_some(value)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.array()?))
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
    /// A length-prefixed element (`-1` is NULL).
    fn element(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.i32()?;
        if len < 0 {
            return Some(None);
        }
        self.take(usize::try_from(len).ok()?).map(Some)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn text(raw: &[u8]) -> Option<Value> {
    String::from_utf8(raw.to_vec()).ok().map(Value::Text)
}

fn printable_text(raw: &[u8]) -> Option<Value> {
    let s = std::str::from_utf8(raw).ok()?;
    s.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .then(|| Value::Text(s.to_owned()))
}

fn element_json(ty: &Type, raw: Option<&[u8]>, depth: usize) -> Option<Json> {
    match raw {
        None => Some(Json::Null),
        Some(raw) => decode_at(ty, raw, depth + 1).map(|v| to_json(&v)),
    }
}

/// `ndim, has_null, element oid, (len, lower bound) × ndim, elements`.
fn array(element: &Type, raw: &[u8], depth: usize) -> Option<Json> {
    let mut r = Reader(raw);
    let ndim = usize::try_from(r.i32()?).ok()?;
    let _has_null = r.i32()?;
    let _oid = r.u32()?;
    if ndim > 6 {
        return None;
    }
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        dims.push(usize::try_from(r.i32()?).ok()?);
        let _lower_bound = r.i32()?;
    }
    if ndim == 0 {
        return Some(Json::Array(Vec::new()));
    }
    let value = nest(element, &dims, &mut r, depth)?;
    // Every byte must be accounted for; anything else is not the layout we assumed.
    r.done().then_some(value)
}

fn nest(element: &Type, dims: &[usize], r: &mut Reader<'_>, depth: usize) -> Option<Json> {
    let (&len, rest) = dims.split_first()?;
    let mut items = Vec::with_capacity(len.min(4096));
    for _ in 0..len {
        items.push(if rest.is_empty() {
            element_json(element, r.element()?, depth)?
        } else {
            nest(element, rest, r, depth)?
        });
    }
    Some(Json::Array(items))
}

/// `count, (oid, element) × count`; field names come from the type.
fn composite(fields: &[tokio_postgres::types::Field], raw: &[u8], depth: usize) -> Option<Json> {
    let mut r = Reader(raw);
    let count = usize::try_from(r.i32()?).ok()?;
    if count != fields.len() {
        return None;
    }
    let mut object = Map::new();
    for field in fields {
        let _oid = r.u32()?;
        let value = element_json(field.type_(), r.element()?, depth)?;
        object.insert(field.name().to_owned(), value);
    }
    r.done().then_some(Json::Object(object))
}

/// Renders a range as Postgres does: `[1,5)`, `empty`, `(,10]`.
fn range(subtype: &Type, raw: &[u8], depth: usize) -> Option<String> {
    const EMPTY: u8 = 0x01;
    const LB_INC: u8 = 0x02;
    const UB_INC: u8 = 0x04;
    const LB_INF: u8 = 0x08;
    const UB_INF: u8 = 0x10;
    let mut r = Reader(raw);
    let flags = r.u8()?;
    if flags & EMPTY != 0 {
        return Some("empty".into());
    }
    let mut bound = |infinite: bool| -> Option<String> {
        if infinite {
            return Some(String::new());
        }
        let raw = r.element()??;
        Some(match decode_at(subtype, raw, depth + 1)? {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Numeric(s) | Value::Text(s) => s,
            _ => return None,
        })
    };
    let lower = bound(flags & LB_INF != 0)?;
    let upper = bound(flags & UB_INF != 0)?;
    let open = if flags & LB_INC != 0 { '[' } else { '(' };
    let close = if flags & UB_INC != 0 { ']' } else { ')' };
    Some(format!("{open}{lower},{upper}{close}"))
}

/// `ndigits, weight, sign, dscale, digits` with base-10000 digits.
fn numeric(r: &mut Reader<'_>) -> Option<String> {
    let ndigits = usize::try_from(r.i16()?).ok()?;
    let weight = i32::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = usize::from(r.u16()?);
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        digits.push(r.i16()?);
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    }
    let digit = |index: i32| -> i16 {
        usize::try_from(index)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for index in 0..=weight {
            let d = digit(index);
            if index == 0 {
                let _ = write!(out, "{d}");
            } else {
                let _ = write!(out, "{d:04}");
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut index = weight + 1;
        while fraction.len() < dscale {
            let _ = write!(fraction, "{:04}", digit(index));
            index += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Some(out)
}

/// `money` is an int64 count of the currency's minor unit; two fraction digits is the
/// common `lc_monetary` and the one assumed here.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn uuid(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 {
        return None;
    }
    let h = hex_digits(raw);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Proleptic Gregorian civil date from days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD`, with Postgres's ` BC` suffix before year 1.
fn ymd(days_since_pg_epoch: i64) -> (String, &'static str) {
    let (year, month, day) = civil_from_days(days_since_pg_epoch + PG_EPOCH_DAYS);
    if year <= 0 {
        (format!("{:04}-{month:02}-{day:02}", 1 - year), " BC")
    } else {
        (format!("{year:04}-{month:02}-{day:02}"), "")
    }
}

fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => {
            let (date, era) = ymd(i64::from(d));
            format!("{date}{era}")
        }
    }
}

fn time_of_day(micros: i64) -> Option<String> {
    if !(0..=USECS_PER_DAY).contains(&micros) {
        return None;
    }
    Some(clock(micros))
}

/// `HH:MM:SS` plus fractional seconds without trailing zeros.
fn clock(micros: i64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}

fn timestamp(micros: i64, zone: &str) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        m => {
            let (date, era) = ymd(m.div_euclid(USECS_PER_DAY));
            format!("{date}T{}{zone}{era}", clock(m.rem_euclid(USECS_PER_DAY)))
        }
    }
}

/// An offset east of UTC in seconds as `+HH:MM` (or `+HH:MM:SS`).
fn offset(east_secs: i32) -> String {
    let sign = if east_secs < 0 { '-' } else { '+' };
    let abs = east_secs.unsigned_abs();
    let mut out = format!("{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60);
    if !abs.is_multiple_of(60) {
        let _ = write!(out, ":{:02}", abs % 60);
    }
    out
}

/// ISO 8601 duration, each field signed as Postgres's `iso_8601` interval style does.
fn interval(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (n, unit) in [(years, 'Y'), (months, 'M'), (days, 'D')] {
        if n != 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if micros != 0 {
        out.push('T');
        let hours = micros / 3_600_000_000;
        let minutes = micros / 60_000_000 % 60;
        let seconds = micros % 60_000_000;
        if hours != 0 {
            let _ = write!(out, "{hours}H");
        }
        if minutes != 0 {
            let _ = write!(out, "{minutes}M");
        }
        if seconds != 0 {
            let sign = if seconds < 0 { "-" } else { "" };
            let abs = seconds.unsigned_abs();
            let _ = write!(out, "{sign}{}", abs / 1_000_000);
            if !abs.is_multiple_of(1_000_000) {
                let frac = format!("{:06}", abs % 1_000_000);
                let _ = write!(out, ".{}", frac.trim_end_matches('0'));
            }
            out.push('S');
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    out
}

/// `family, bits, is_cidr, length, address`.
fn inet(raw: &[u8]) -> Option<String> {
    let mut r = Reader(raw);
    let family = r.u8()?;
    let bits = r.u8()?;
    let is_cidr = r.u8()? != 0;
    let len = usize::from(r.u8()?);
    let addr = r.take(len)?;
    let (text, max) = match (family, addr.len()) {
        (2, 4) => (
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
            32,
        ),
        (3, 16) => (
            Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?).to_string(),
            128,
        ),
        _ => return None,
    };
    Some(if is_cidr || bits != max {
        format!("{text}/{bits}")
    } else {
        text
    })
}

fn mac(raw: &[u8]) -> String {
    raw.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn bits(r: &mut Reader<'_>) -> Option<String> {
    let len = usize::try_from(r.i32()?).ok()?;
    let bytes = r.take(len.div_ceil(8))?;
    Some(
        (0..len)
            .map(|i| {
                if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                    '1'
                } else {
                    '0'
                }
            })
            .collect(),
    )
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f > 0.0 {
        "Infinity".into()
    } else {
        "-Infinity".into()
    }
}

fn hex_digits(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn hex(bytes: &[u8]) -> String {
    format!("\\x{}", hex_digits(bytes))
}

#[cfg(test)]
mod tests;
