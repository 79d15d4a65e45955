//! `spin:postgres@3.0.0` (spin-sdk 5.x's `pg3`): the 4.2.0 implementation under the older,
//! smaller types, converted as Spin does (`crates/world/src/conversions.rs`): values 3.0.0 has
//! no variant for (uuid, jsonb, decimal, ranges, arrays, interval) come back `unsupported`, with
//! data type `other`; a query error is its text.
#![allow(clippy::result_large_err)]

use wasmtime::component::Resource;

use crate::bindings::spin::postgres3_0_0::postgres as v3;
use crate::bindings::spin::postgres4_2_0::postgres as v4;
use crate::host::{Ctx, run_execute, run_query};
use crate::pg;

fn param(p: v3::ParameterValue) -> v4::ParameterValue {
    use v3::ParameterValue as P;
    use v4::ParameterValue as Q;
    match p {
        P::Boolean(b) => Q::Boolean(b),
        P::Int8(n) => Q::Int8(n),
        P::Int16(n) => Q::Int16(n),
        P::Int32(n) => Q::Int32(n),
        P::Int64(n) => Q::Int64(n),
        P::Floating32(n) => Q::Floating32(n),
        P::Floating64(n) => Q::Floating64(n),
        P::Str(s) => Q::Str(s),
        P::Binary(b) => Q::Binary(b),
        P::Date(d) => Q::Date(d),
        P::Time(t) => Q::Time(t),
        P::Datetime(d) => Q::Datetime(d),
        P::Timestamp(t) => Q::Timestamp(t),
        P::DbNull => Q::DbNull,
    }
}

fn value(v: v4::DbValue) -> v3::DbValue {
    use v3::DbValue as W;
    use v4::DbValue as V;
    match v {
        V::Boolean(b) => W::Boolean(b),
        V::Int8(n) => W::Int8(n),
        V::Int16(n) => W::Int16(n),
        V::Int32(n) => W::Int32(n),
        V::Int64(n) => W::Int64(n),
        V::Floating32(n) => W::Floating32(n),
        V::Floating64(n) => W::Floating64(n),
        V::Str(s) => W::Str(s),
        V::Binary(b) => W::Binary(b),
        V::Date(d) => W::Date(d),
        V::Time(t) => W::Time(t),
        V::Datetime(d) => W::Datetime(d),
        V::Timestamp(t) => W::Timestamp(t),
        V::DbNull => W::DbNull,
        V::Uuid(_)
        | V::Jsonb(_)
        | V::Decimal(_)
        | V::RangeInt32(_)
        | V::RangeInt64(_)
        | V::RangeDecimal(_)
        | V::ArrayInt32(_)
        | V::ArrayInt64(_)
        | V::ArrayDecimal(_)
        | V::ArrayStr(_)
        | V::Interval(_)
        | V::Unsupported(_) => W::Unsupported,
    }
}

fn data_type(t: v4::DbDataType) -> v3::DbDataType {
    use v3::DbDataType as U;
    use v4::DbDataType as T;
    match t {
        T::Boolean => U::Boolean,
        T::Int8 => U::Int8,
        T::Int16 => U::Int16,
        T::Int32 => U::Int32,
        T::Int64 => U::Int64,
        T::Floating32 => U::Floating32,
        T::Floating64 => U::Floating64,
        T::Str => U::Str,
        T::Binary => U::Binary,
        T::Date => U::Date,
        T::Time => U::Time,
        T::Datetime => U::Datetime,
        T::Timestamp => U::Timestamp,
        _ => U::Other,
    }
}

fn error(e: v4::Error) -> v3::Error {
    match e {
        v4::Error::ConnectionFailed(m) => v3::Error::ConnectionFailed(m),
        v4::Error::BadParameter(m) => v3::Error::BadParameter(m),
        v4::Error::QueryFailed(v4::QueryError::Text(m)) => v3::Error::QueryFailed(m),
        v4::Error::QueryFailed(v4::QueryError::DbError(d)) => v3::Error::QueryFailed(d.as_text),
        v4::Error::ValueConversionFailed(m) => v3::Error::ValueConversionFailed(m),
        v4::Error::Other(m) => v3::Error::Other(m),
    }
}

impl v3::HostConnection for Ctx {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<pg::Connection>, v3::Error>> {
        Ok(self.open_pg(&address, None).await?.map_err(error))
    }

    async fn query(
        &mut self,
        r: Resource<pg::Connection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> wasmtime::Result<Result<v3::RowSet, v3::Error>> {
        let client = self.client(&r)?;
        let params = params.into_iter().map(param).collect();
        let answer = run_query(client, statement, params).await;
        let empty = matches!(&answer, Ok((_, rows)) if rows.is_empty());
        Ctx::empty_query_answered(empty && self.empty_query_hangs()).await;
        Ok(match answer {
            Ok((columns, rows)) => Ok(v3::RowSet {
                columns: columns
                    .into_iter()
                    .map(|c| v3::Column {
                        name: c.name,
                        data_type: data_type(c.data_type),
                    })
                    .collect(),
                rows: rows
                    .into_iter()
                    .map(|row| row.into_iter().map(value).collect())
                    .collect(),
            }),
            Err(e) => Err(error(e)),
        })
    }

    async fn execute(
        &mut self,
        r: Resource<pg::Connection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, v3::Error>> {
        let client = self.client(&r)?;
        let params = params.into_iter().map(param).collect();
        Ok(run_execute(client, statement, params).await.map_err(error))
    }

    async fn drop(&mut self, r: Resource<pg::Connection>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl v3::Host for Ctx {}
