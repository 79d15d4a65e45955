//! Values between the exported `spin:postgres@4.0.0` (this crate's bindings) and the imported
//! one (spin-sdk 5.2's bindings): the same WIT types, generated twice, so converted field by
//! field. `query` returns a whole row set in WASIp2 (no stream), so a row is copied once here.

use crate::bindings::exports::spin::postgres::postgres as vpg;
use crate::hpg;

fn bound_in(b: vpg::RangeBoundKind) -> hpg::RangeBoundKind {
    match b {
        vpg::RangeBoundKind::Inclusive => hpg::RangeBoundKind::Inclusive,
        vpg::RangeBoundKind::Exclusive => hpg::RangeBoundKind::Exclusive,
    }
}

fn bound_out(b: hpg::RangeBoundKind) -> vpg::RangeBoundKind {
    match b {
        hpg::RangeBoundKind::Inclusive => vpg::RangeBoundKind::Inclusive,
        hpg::RangeBoundKind::Exclusive => vpg::RangeBoundKind::Exclusive,
    }
}

/// A range `(lower, upper)` with each bound's kind mapped by `f`.
type Range<T, K> = (Option<(T, K)>, Option<(T, K)>);

fn range<T, A, B>(r: Range<T, A>, f: fn(A) -> B) -> Range<T, B> {
    (r.0.map(|(v, k)| (v, f(k))), r.1.map(|(v, k)| (v, f(k))))
}

/// A parameter from the caller, for the host.
pub(crate) fn parameter_in(p: vpg::ParameterValue) -> hpg::ParameterValue {
    use hpg::ParameterValue as H;
    use vpg::ParameterValue as V;
    match p {
        V::Boolean(v) => H::Boolean(v),
        V::Int8(v) => H::Int8(v),
        V::Int16(v) => H::Int16(v),
        V::Int32(v) => H::Int32(v),
        V::Int64(v) => H::Int64(v),
        V::Floating32(v) => H::Floating32(v),
        V::Floating64(v) => H::Floating64(v),
        V::Str(v) => H::Str(v),
        V::Binary(v) => H::Binary(v),
        V::Date(v) => H::Date(v),
        V::Time(v) => H::Time(v),
        V::Datetime(v) => H::Datetime(v),
        V::Timestamp(v) => H::Timestamp(v),
        V::Uuid(v) => H::Uuid(v),
        V::Jsonb(v) => H::Jsonb(v),
        V::Decimal(v) => H::Decimal(v),
        V::RangeInt32(r) => H::RangeInt32(range(r, bound_in)),
        V::RangeInt64(r) => H::RangeInt64(range(r, bound_in)),
        V::RangeDecimal(r) => H::RangeDecimal(range(r, bound_in)),
        V::ArrayInt32(v) => H::ArrayInt32(v),
        V::ArrayInt64(v) => H::ArrayInt64(v),
        V::ArrayDecimal(v) => H::ArrayDecimal(v),
        V::ArrayStr(v) => H::ArrayStr(v),
        V::Interval(i) => H::Interval(hpg::Interval {
            micros: i.micros,
            days: i.days,
            months: i.months,
        }),
        V::DbNull => H::DbNull,
    }
}

/// A value from the host, for the caller.
fn value_out(v: hpg::DbValue) -> vpg::DbValue {
    use hpg::DbValue as H;
    use vpg::DbValue as V;
    match v {
        H::Boolean(v) => V::Boolean(v),
        H::Int8(v) => V::Int8(v),
        H::Int16(v) => V::Int16(v),
        H::Int32(v) => V::Int32(v),
        H::Int64(v) => V::Int64(v),
        H::Floating32(v) => V::Floating32(v),
        H::Floating64(v) => V::Floating64(v),
        H::Str(v) => V::Str(v),
        H::Binary(v) => V::Binary(v),
        H::Date(v) => V::Date(v),
        H::Time(v) => V::Time(v),
        H::Datetime(v) => V::Datetime(v),
        H::Timestamp(v) => V::Timestamp(v),
        H::Uuid(v) => V::Uuid(v),
        H::Jsonb(v) => V::Jsonb(v),
        H::Decimal(v) => V::Decimal(v),
        H::RangeInt32(r) => V::RangeInt32(range(r, bound_out)),
        H::RangeInt64(r) => V::RangeInt64(range(r, bound_out)),
        H::RangeDecimal(r) => V::RangeDecimal(range(r, bound_out)),
        H::ArrayInt32(v) => V::ArrayInt32(v),
        H::ArrayInt64(v) => V::ArrayInt64(v),
        H::ArrayDecimal(v) => V::ArrayDecimal(v),
        H::ArrayStr(v) => V::ArrayStr(v),
        H::Interval(i) => V::Interval(vpg::Interval {
            micros: i.micros,
            days: i.days,
            months: i.months,
        }),
        H::DbNull => V::DbNull,
        H::Unsupported(v) => V::Unsupported(v),
    }
}

fn data_type_out(t: hpg::DbDataType) -> vpg::DbDataType {
    use hpg::DbDataType as H;
    use vpg::DbDataType as V;
    match t {
        H::Boolean => V::Boolean,
        H::Int8 => V::Int8,
        H::Int16 => V::Int16,
        H::Int32 => V::Int32,
        H::Int64 => V::Int64,
        H::Floating32 => V::Floating32,
        H::Floating64 => V::Floating64,
        H::Str => V::Str,
        H::Binary => V::Binary,
        H::Date => V::Date,
        H::Time => V::Time,
        H::Datetime => V::Datetime,
        H::Timestamp => V::Timestamp,
        H::Uuid => V::Uuid,
        H::Jsonb => V::Jsonb,
        H::Decimal => V::Decimal,
        H::RangeInt32 => V::RangeInt32,
        H::RangeInt64 => V::RangeInt64,
        H::RangeDecimal => V::RangeDecimal,
        H::ArrayInt32 => V::ArrayInt32,
        H::ArrayInt64 => V::ArrayInt64,
        H::ArrayDecimal => V::ArrayDecimal,
        H::ArrayStr => V::ArrayStr,
        H::Interval => V::Interval,
        H::Other(s) => V::Other(s),
    }
}

/// A host row set, for the caller.
pub(crate) fn row_set_out(set: hpg::RowSet) -> vpg::RowSet {
    vpg::RowSet {
        columns: set
            .columns
            .into_iter()
            .map(|c| vpg::Column {
                name: c.name,
                data_type: data_type_out(c.data_type),
            })
            .collect(),
        rows: set
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(value_out).collect())
            .collect(),
    }
}

/// A host error, for the caller: the host's own, unchanged.
pub(crate) fn error_out(e: hpg::Error) -> vpg::Error {
    use hpg::Error as H;
    use vpg::Error as V;
    match e {
        H::ConnectionFailed(s) => V::ConnectionFailed(s),
        H::BadParameter(s) => V::BadParameter(s),
        H::QueryFailed(hpg::QueryError::Text(s)) => V::QueryFailed(vpg::QueryError::Text(s)),
        H::QueryFailed(hpg::QueryError::DbError(db)) => {
            V::QueryFailed(vpg::QueryError::DbError(vpg::DbError {
                as_text: db.as_text,
                severity: db.severity,
                code: db.code,
                message: db.message,
                detail: db.detail,
                extras: db.extras,
            }))
        }
        H::ValueConversionFailed(s) => V::ValueConversionFailed(s),
        H::Other(s) => V::Other(s),
    }
}
