//! `wasmcloud:postgres` values and Postgres.
//!
//! Parameters travel in Postgres's text format: each `pg-value` is written as the literal the
//! server would accept for it, and the server parses it as the type it infers for `$n` (so an
//! `int4` value may fill a `bigint` parameter, as it may in SQL). Results come back in the binary
//! format and are decoded by column type, choosing the `pg-value` case that wasmCloud's own host
//! plugin chooses (`int4` → `int4`, `varchar` → `varchar`, `timestamptz` → `timestamp-tz` in UTC,
//! …), so a component sees the same values either way. Types outside [`decode`]'s list are
//! refused with the column's name and a hint to cast it to `text`.

use std::error::Error;
use std::fmt::Write as _;

use bytes::BytesMut;
use chrono::{Datelike as _, NaiveDate, NaiveDateTime, TimeDelta, Timelike as _};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::bindings::exports::wasmcloud::postgres::types::{
    Date, HashableF64, MacAddressEui48, MacAddressEui64, Offset, PgValue, Time, Timestamp,
    TimestampTz,
};

type BoxError = Box<dyn Error + Sync + Send>;

// ---- parameters: pg-value → text -------------------------------------------------------------

/// A parameter in text format (`None`: SQL `NULL`); the server decides its type.
#[derive(Debug)]
pub struct TextParam(Option<String>);

impl ToSql for TextParam {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    to_sql_checked!();
}

/// The text-format parameter for `value`, or why it cannot be sent (the `invalid-params` text).
pub fn param(value: &PgValue) -> Result<TextParam, String> {
    Ok(TextParam(text(value)?))
}

fn text(value: &PgValue) -> Result<Option<String>, String> {
    use PgValue as V;
    let text = match value {
        V::Null => return Ok(None),
        V::BigInt(n) | V::Int8(n) | V::BigSerial(n) | V::Serial8(n) | V::TxidSnapshot(n) => {
            n.to_string()
        }
        V::Integer(n) | V::Int(n) | V::Int4(n) => n.to_string(),
        V::Serial(n) | V::Serial4(n) => n.to_string(),
        V::SmallInt(n) | V::Int2(n) | V::SmallSerial(n) | V::Serial2(n) => n.to_string(),
        V::Bool(b) | V::Boolean(b) => bool_text(*b).to_owned(),
        V::Double(f) | V::Float8(f) | V::Real(f) | V::Float4(f) => float_text(*f),
        V::Numeric(s)
        | V::Decimal(s)
        | V::Money(s)
        | V::Text(s)
        | V::Name(s)
        | V::Xml(s)
        | V::Json(s)
        | V::Jsonb(s)
        | V::Uuid(s)
        | V::Inet(s)
        | V::Cidr(s)
        | V::TsQuery(s) => s.clone(),
        V::Char((_, bytes)) | V::Varchar((_, bytes)) => utf8(bytes)?,
        V::Bytea(bytes) => bytea_text(bytes),
        V::Date(d) => date_text(d),
        V::Time(t) => time_text(t),
        V::Timestamp(ts) => timestamp_text(ts),
        V::TimestampTz(ts) => timestamp_tz_text(ts),
        V::Macaddr(m) => mac_text(&<[u8; 6]>::from(m.bytes)),
        V::Macaddr8(m) => mac_text(&<[u8; 8]>::from(m.bytes)),
        V::Point(p) => point_text(p),
        V::PgLsn(lsn) => format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff),
        V::Int2Vector(ns) => ns.iter().map(i16::to_string).collect::<Vec<_>>().join(" "),
        V::Int8Array(ns) => array(ns.iter().map(|n| Some(n.to_string()))),
        V::Int4Array(ns) => array(ns.iter().map(|n| Some(n.to_string()))),
        V::Int2Array(ns) => array(ns.iter().map(|n| Some(n.to_string()))),
        V::BoolArray(bs) => array(bs.iter().map(|b| Some(bool_text(*b).to_owned()))),
        V::Float8Array(fs) | V::Float4Array(fs) => array(fs.iter().map(|f| Some(float_text(*f)))),
        V::NumericArray(ss)
        | V::MoneyArray(ss)
        | V::TextArray(ss)
        | V::NameArray(ss)
        | V::XmlArray(ss)
        | V::JsonArray(ss)
        | V::JsonbArray(ss)
        | V::UuidArray(ss)
        | V::InetArray(ss)
        | V::CidrArray(ss) => array(ss.iter().map(|s| Some(s.clone()))),
        V::VarcharArray(vs) => array(
            vs.iter()
                .map(|(_, bytes)| utf8(bytes).map(Some))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        V::ByteaArray(bs) => array(bs.iter().map(|b| Some(bytea_text(b)))),
        V::DateArray(ds) => array(ds.iter().map(|d| Some(date_text(d)))),
        V::TimeArray(ts) => array(ts.iter().map(|t| Some(time_text(t)))),
        V::TimestampArray(ts) => array(ts.iter().map(|t| Some(timestamp_text(t)))),
        V::TimestampTzArray(ts) => array(ts.iter().map(|t| Some(timestamp_tz_text(t)))),
        other => {
            return Err(format!(
                "the Lakebase plugin does not send `{}` parameters: pass the value as text and cast it in SQL (`$1::type`)",
                case_name(other)
            ));
        }
    };
    Ok(Some(text))
}

fn bool_text(b: bool) -> &'static str {
    if b { "t" } else { "f" }
}

/// `(mantissa, exponent, sign)` as produced by `integer_decode`, back to a float.
fn float(f: HashableF64) -> f64 {
    let (mantissa, exponent, sign) = f;
    // Scaled in two halves so that 2^exponent never underflows on its own (subnormals reach
    // 2^-1075); the mantissa (at most 54 bits) is exact, so only the last step rounds.
    let exponent = i32::from(exponent);
    let half = exponent / 2;
    let magnitude = mantissa as f64 * 2f64.powi(half) * 2f64.powi(exponent - half);
    if sign < 0 { -magnitude } else { magnitude }
}

fn float_text(f: HashableF64) -> String {
    let f = float(f);
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        // Rust's shortest representation that reads back as the same f64.
        format!("{f:?}")
    }
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| "a char or varchar parameter is not UTF-8".to_owned())
}

fn bytea_text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + 2 * bytes.len());
    text.push_str("\\x");
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

fn date_text(d: &Date) -> String {
    match d {
        Date::PositiveInfinity => "infinity".to_owned(),
        Date::NegativeInfinity => "-infinity".to_owned(),
        // Year 0 is 1 BC, as in chrono and ISO 8601.
        Date::Ymd((y, m, d)) if *y <= 0 => format!("{:04}-{m:02}-{d:02} BC", 1 - i64::from(*y)),
        Date::Ymd((y, m, d)) => format!("{y:04}-{m:02}-{d:02}"),
    }
}

fn time_text(t: &Time) -> String {
    format!("{:02}:{:02}:{:02}.{:06}", t.hour, t.min, t.sec, t.micro)
}

fn timestamp_text(ts: &Timestamp) -> String {
    match &ts.date {
        Date::Ymd(_) => {
            let date = date_text(&ts.date);
            // The era marker goes last: `0044-03-15 12:00:00 BC`.
            match date.strip_suffix(" BC") {
                Some(day) => format!("{day} {} BC", time_text(&ts.time)),
                None => format!("{date} {}", time_text(&ts.time)),
            }
        }
        infinite => date_text(infinite),
    }
}

fn timestamp_tz_text(ts: &TimestampTz) -> String {
    if !matches!(ts.timestamp.date, Date::Ymd(_)) {
        return date_text(&ts.timestamp.date);
    }
    // Seconds east of UTC; wasmCloud's host reads `western-hemisphere-secs` as seconds west.
    let east = match ts.offset {
        Offset::EasternHemisphereSecs(s) => i64::from(s),
        Offset::WesternHemisphereSecs(s) => -i64::from(s),
    };
    let sign = if east < 0 { '-' } else { '+' };
    let east = east.unsigned_abs();
    let zone = format!(
        "{sign}{:02}:{:02}:{:02}",
        east / 3600,
        east / 60 % 60,
        east % 60
    );
    let text = timestamp_text(&ts.timestamp);
    match text.strip_suffix(" BC") {
        Some(stamp) => format!("{stamp}{zone} BC"),
        None => format!("{text}{zone}"),
    }
}

fn mac_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn point_text(p: &(HashableF64, HashableF64)) -> String {
    format!("({},{})", float_text(p.0), float_text(p.1))
}

/// An array literal: every element quoted, `"` and `\` escaped, `NULL` for `None`.
fn array(elements: impl IntoIterator<Item = Option<String>>) -> String {
    let mut text = String::from("{");
    for (i, element) in elements.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        match element {
            None => text.push_str("NULL"),
            Some(e) => {
                text.push('"');
                for c in e.chars() {
                    if c == '"' || c == '\\' {
                        text.push('\\');
                    }
                    text.push(c);
                }
                text.push('"');
            }
        }
    }
    text.push('}');
    text
}

/// The WIT name of a value's case, for error messages (never the value: it may be a secret).
fn case_name(value: &PgValue) -> String {
    let debug = format!("{value:?}");
    let name = debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .rsplit("::")
        .next()
        .unwrap_or_default();
    // `TimeTzArray` → `time-tz-array`.
    let mut kebab = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                kebab.push('-');
            }
            kebab.push(c.to_ascii_lowercase());
        } else {
            kebab.push(c);
        }
    }
    kebab
}

// ---- results: binary → pg-value --------------------------------------------------------------

/// One result cell, decoded by its column's type.
pub struct Cell(pub PgValue);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode(ty, raw).map(Cell)
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(PgValue::Null))
    }

    fn accepts(_: &Type) -> bool {
        // Every type is let in; `decode` names the ones it cannot read.
        true
    }
}

/// The `pg-value` of one non-NULL cell of type `ty`.
pub fn decode(ty: &Type, raw: &[u8]) -> Result<PgValue, BoxError> {
    use PgValue as V;
    Ok(match *ty {
        Type::BOOL => V::Bool(bool::from_sql(ty, raw)?),
        Type::BOOL_ARRAY => V::BoolArray(Vec::from_sql(ty, raw)?),
        Type::INT2 => V::Int2(i16::from_sql(ty, raw)?),
        Type::INT2_ARRAY => V::Int2Array(Vec::from_sql(ty, raw)?),
        Type::INT4 => V::Int4(i32::from_sql(ty, raw)?),
        Type::INT4_ARRAY => V::Int4Array(Vec::from_sql(ty, raw)?),
        Type::INT8 => V::Int8(i64::from_sql(ty, raw)?),
        Type::INT8_ARRAY => V::Int8Array(Vec::from_sql(ty, raw)?),
        Type::FLOAT4 => V::Float4(decode_f32(f32::from_sql(ty, raw)?)),
        Type::FLOAT4_ARRAY => V::Float4Array(
            Vec::<f32>::from_sql(ty, raw)?
                .into_iter()
                .map(decode_f32)
                .collect(),
        ),
        Type::FLOAT8 => V::Float8(decode_f64(f64::from_sql(ty, raw)?)),
        Type::FLOAT8_ARRAY => V::Float8Array(
            Vec::<f64>::from_sql(ty, raw)?
                .into_iter()
                .map(decode_f64)
                .collect(),
        ),
        Type::NUMERIC => V::Numeric(Numeric::from_sql(ty, raw)?.0),
        Type::NUMERIC_ARRAY => V::NumericArray(strings(Vec::<Numeric>::from_sql(ty, raw)?)),
        // `character(n)` reads as text; wasmCloud's host does not read it at all.
        Type::TEXT | Type::BPCHAR => V::Text(String::from_sql(ty, raw)?),
        Type::TEXT_ARRAY | Type::BPCHAR_ARRAY => V::TextArray(Vec::from_sql(ty, raw)?),
        Type::VARCHAR => V::Varchar((None, raw.to_vec())),
        Type::VARCHAR_ARRAY => V::VarcharArray(
            Vec::<String>::from_sql(ty, raw)?
                .into_iter()
                .map(|s| (None, s.into_bytes()))
                .collect(),
        ),
        Type::NAME => V::Name(String::from_sql(ty, raw)?),
        Type::NAME_ARRAY => V::NameArray(Vec::from_sql(ty, raw)?),
        Type::XML => V::Xml(String::from_sql(ty, raw)?),
        // The server's own text of the document (JSON as stored, JSONB normalised).
        Type::JSON => V::Json(JsonText::from_sql(ty, raw)?.0),
        Type::JSONB => V::Jsonb(Jsonb::from_sql(ty, raw)?.0),
        Type::JSON_ARRAY => V::JsonArray(strings(Vec::<JsonText>::from_sql(ty, raw)?)),
        Type::JSONB_ARRAY => V::JsonbArray(strings(Vec::<Jsonb>::from_sql(ty, raw)?)),
        Type::BYTEA => V::Bytea(raw.to_vec()),
        Type::BYTEA_ARRAY => V::ByteaArray(Vec::from_sql(ty, raw)?),
        Type::UUID => V::Uuid(UuidText::from_sql(ty, raw)?.0),
        Type::UUID_ARRAY => V::UuidArray(strings(Vec::<UuidText>::from_sql(ty, raw)?)),
        Type::DATE => V::Date(PgDate::from_sql(ty, raw)?.0),
        Type::DATE_ARRAY => V::DateArray(
            Vec::<PgDate>::from_sql(ty, raw)?
                .into_iter()
                .map(|d| d.0)
                .collect(),
        ),
        Type::TIME => V::Time(PgTime::from_sql(ty, raw)?.0),
        Type::TIME_ARRAY => V::TimeArray(
            Vec::<PgTime>::from_sql(ty, raw)?
                .into_iter()
                .map(|t| t.0)
                .collect(),
        ),
        Type::TIMESTAMP => V::Timestamp(PgTimestamp::from_sql(ty, raw)?.0),
        Type::TIMESTAMP_ARRAY => V::TimestampArray(
            Vec::<PgTimestamp>::from_sql(ty, raw)?
                .into_iter()
                .map(|t| t.0)
                .collect(),
        ),
        Type::TIMESTAMPTZ => V::TimestampTz(utc(PgTimestamp::from_sql(ty, raw)?.0)),
        Type::TIMESTAMPTZ_ARRAY => V::TimestampTzArray(
            Vec::<PgTimestamp>::from_sql(ty, raw)?
                .into_iter()
                .map(|t| utc(t.0))
                .collect(),
        ),
        Type::MACADDR => V::Macaddr(MacAddressEui48 {
            bytes: <[u8; 6]>::try_from(raw)?.into(),
        }),
        Type::MACADDR8 => V::Macaddr8(MacAddressEui64 {
            bytes: <[u8; 8]>::try_from(raw)?.into(),
        }),
        ref other => {
            return Err(format!(
                "the Lakebase plugin does not read values of type `{other}`: cast the column to text (`::text`)"
            )
            .into());
        }
    })
}

/// `f64::integer_decode`: the mantissa, the exponent of two and the sign.
pub fn decode_f64(f: f64) -> HashableF64 {
    let bits = f.to_bits();
    let sign = if bits >> 63 == 0 { 1 } else { -1 };
    let exponent = ((bits >> 52) & 0x7ff) as i16;
    let mantissa = if exponent == 0 {
        (bits & 0xf_ffff_ffff_ffff) << 1
    } else {
        (bits & 0xf_ffff_ffff_ffff) | 0x10_0000_0000_0000
    };
    (mantissa, exponent - (1023 + 52), sign)
}

/// `f32::integer_decode`, as wasmCloud's host reports `real` values.
pub fn decode_f32(f: f32) -> HashableF64 {
    let bits = f.to_bits();
    let sign = if bits >> 31 == 0 { 1 } else { -1 };
    let exponent = ((bits >> 23) & 0xff) as i16;
    let mantissa = if exponent == 0 {
        (bits & 0x7f_ffff) << 1
    } else {
        (bits & 0x7f_ffff) | 0x80_0000
    };
    (u64::from(mantissa), exponent - (127 + 23), sign)
}

/// The text inside each newtype of an array.
fn strings<T: AsText>(items: Vec<T>) -> Vec<String> {
    items.into_iter().map(AsText::text).collect()
}

trait AsText {
    fn text(self) -> String;
}

impl AsText for Numeric {
    fn text(self) -> String {
        self.0
    }
}
impl AsText for JsonText {
    fn text(self) -> String {
        self.0
    }
}
impl AsText for Jsonb {
    fn text(self) -> String {
        self.0
    }
}
impl AsText for UuidText {
    fn text(self) -> String {
        self.0
    }
}

/// Generates a `FromSql` newtype for one Postgres type (usable inside arrays too).
macro_rules! decoder {
    ($name:ident($inner:ty), $($ty:path)|+, $decode:expr) => {
        struct $name($inner);

        impl<'a> FromSql<'a> for $name {
            fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                let decode: fn(&[u8]) -> Result<$inner, BoxError> = $decode;
                decode(raw).map($name)
            }

            fn accepts(ty: &Type) -> bool {
                $(*ty == $ty)||+
            }
        }
    };
}

decoder!(Numeric(String), Type::NUMERIC, numeric_text);
decoder!(JsonText(String), Type::JSON, |raw| Ok(String::from_utf8(
    raw.to_vec()
)?));
decoder!(Jsonb(String), Type::JSONB, |raw| match raw.split_first() {
    Some((1, text)) => Ok(String::from_utf8(text.to_vec())?),
    _ => Err("jsonb in an unknown binary version".into()),
});
decoder!(UuidText(String), Type::UUID, |raw| {
    let b = <[u8; 16]>::try_from(raw)?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
});
decoder!(PgDate(Date), Type::DATE, |raw| {
    let days = i32::from_be_bytes(<[u8; 4]>::try_from(raw)?);
    Ok(match days {
        i32::MAX => Date::PositiveInfinity,
        i32::MIN => Date::NegativeInfinity,
        days => ymd(epoch()
            .date()
            .checked_add_signed(TimeDelta::days(i64::from(days)))
            .ok_or("date out of range")?),
    })
});
decoder!(PgTime(Time), Type::TIME, |raw| {
    let micros = i64::from_be_bytes(<[u8; 8]>::try_from(raw)?);
    let t = epoch()
        .checked_add_signed(TimeDelta::microseconds(micros))
        .ok_or("time out of range")?;
    // 24:00:00 is a valid `time`: it is the end of the day.
    Ok(if micros == 86_400_000_000 {
        Time {
            hour: 24,
            min: 0,
            sec: 0,
            micro: 0,
        }
    } else {
        time_of(t)
    })
});
// `timestamptz` has the binary layout of `timestamp`, in UTC.
decoder!(
    PgTimestamp(Timestamp),
    Type::TIMESTAMP | Type::TIMESTAMPTZ,
    |raw| {
        let micros = i64::from_be_bytes(<[u8; 8]>::try_from(raw)?);
        let midnight = Time {
            hour: 0,
            min: 0,
            sec: 0,
            micro: 0,
        };
        Ok(match micros {
            i64::MAX => Timestamp {
                date: Date::PositiveInfinity,
                time: midnight,
            },
            i64::MIN => Timestamp {
                date: Date::NegativeInfinity,
                time: midnight,
            },
            micros => {
                let t = epoch()
                    .checked_add_signed(TimeDelta::microseconds(micros))
                    .ok_or("timestamp out of range")?;
                Timestamp {
                    date: ymd(t.date()),
                    time: time_of(t),
                }
            }
        })
    }
);

/// A UTC timestamp as wasmCloud's host reports it: offset `western-hemisphere-secs(0)`.
fn utc(timestamp: Timestamp) -> TimestampTz {
    TimestampTz {
        timestamp,
        offset: Offset::WesternHemisphereSecs(0),
    }
}

/// Postgres's epoch: 2000-01-01 00:00:00.
fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

fn ymd(d: NaiveDate) -> Date {
    Date::Ymd((d.year(), d.month(), d.day()))
}

fn time_of(t: NaiveDateTime) -> Time {
    Time {
        hour: t.hour(),
        min: t.minute(),
        sec: t.second(),
        micro: t.nanosecond() / 1_000,
    }
}

/// A binary `numeric` as its decimal text: `-12.340`, `NaN`, `Infinity`.
fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value too short".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        _ => return Err("numeric value with an unknown sign".into()),
    }
    if raw.len() != 8 + 2 * ndigits {
        return Err("numeric value of the wrong length".into());
    }
    // Digit k (base 10,000) is worth 10000^(weight - k).
    let digit = |k: i64| -> u16 {
        usize::try_from(k)
            .ok()
            .filter(|&k| k < ndigits)
            .and_then(|k| word(8 + 2 * k).ok())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for k in 0..=weight {
            if k == 0 {
                let _ = write!(text, "{}", digit(k));
            } else {
                let _ = write!(text, "{:04}", digit(k));
            }
        }
    }
    if dscale > 0 {
        text.push('.');
        let mut fraction = String::with_capacity(dscale + 4);
        let mut k = weight + 1;
        while fraction.len() < dscale {
            let _ = write!(fraction, "{:04}", digit(k));
            k += 1;
        }
        fraction.truncate(dscale);
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_through_integer_decode() {
        for f in [0.0, -0.0, 1.5, -2.25, 0.1, 1e300, 5e-324, f64::MAX] {
            assert_eq!(float(decode_f64(f)).to_bits(), f.to_bits(), "{f}");
            assert_eq!(float_text(decode_f64(f)).parse::<f64>().unwrap(), f);
        }
        assert_eq!(float(decode_f32(0.1f32)), f64::from(0.1f32));
    }

    #[test]
    fn numeric_binary_reads_as_text() {
        // 12.340: ndigits 2, weight 0, positive, dscale 3, digits [12, 3400].
        let raw = [0, 2, 0, 0, 0, 0, 0, 3, 0, 12, 0x0d, 0x48];
        assert_eq!(numeric_text(&raw).unwrap(), "12.340");
        // -0.00001: ndigits 1, weight -2, negative, dscale 5, digits [1000].
        let raw = [0, 1, 0xff, 0xfe, 0x40, 0, 0, 5, 0x03, 0xe8];
        assert_eq!(numeric_text(&raw).unwrap(), "-0.00001");
        // 10000: ndigits 1, weight 1, dscale 0, digits [1].
        let raw = [0, 1, 0, 1, 0, 0, 0, 0, 0, 1];
        assert_eq!(numeric_text(&raw).unwrap(), "10000");
        assert_eq!(numeric_text(&[0, 0, 0, 0, 0xc0, 0, 0, 0]).unwrap(), "NaN");
        assert!(numeric_text(&[0, 5, 0, 0]).is_err());
        assert!(numeric_text(&[0, 5, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn parameters_are_postgres_literals() {
        let t = |v: PgValue| text(&v).unwrap().unwrap();
        assert_eq!(t(PgValue::Int4(-7)), "-7");
        assert_eq!(t(PgValue::Bool(true)), "t");
        assert_eq!(t(PgValue::Float8(decode_f64(0.1))), "0.1");
        assert_eq!(t(PgValue::Bytea(vec![0, 255])), "\\x00ff");
        assert_eq!(
            t(PgValue::TextArray(vec!["a\"b".into(), "c\\d".into()])),
            r#"{"a\"b","c\\d"}"#
        );
        assert_eq!(t(PgValue::Date(Date::Ymd((2026, 12, 2)))), "2026-12-02");
        assert_eq!(t(PgValue::Date(Date::Ymd((-43, 3, 15)))), "0044-03-15 BC");
        let ts = Timestamp {
            date: Date::Ymd((2026, 1, 2)),
            time: Time {
                hour: 3,
                min: 4,
                sec: 5,
                micro: 6,
            },
        };
        assert_eq!(
            t(PgValue::TimestampTz(TimestampTz {
                timestamp: ts,
                offset: Offset::EasternHemisphereSecs(5400),
            })),
            "2026-01-02 03:04:05.000006+01:30:00"
        );
        assert_eq!(text(&PgValue::Null).unwrap(), None);
        let refused = text(&PgValue::TimeTzArray(vec![])).unwrap_err();
        assert!(refused.contains("`time-tz-array`"), "{refused}");
    }
}
