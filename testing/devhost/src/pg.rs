//! `spin:postgres@4.2.0` on tokio-postgres: address parsing and the allowed-host check as Spin
//! does them, TLS that verifies the certificate (webpki roots, or the guest's CA root), pooling
//! as Spin 4.1 does it (`Pools`), and every WIT value type mapped both ways.
// The error type is the WIT's `error` variant, returned to the guest as it is.
#![allow(clippy::result_large_err)]

use std::error::Error as _;
use std::str::FromStr;
use std::sync::Arc;

use bytes::BytesMut;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use deadpool_postgres::{ManagerConfig, PoolError, RecyclingMethod};
use postgres_types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::config::SslMode;

use crate::bindings::spin::postgres4_2_0::postgres::{
    Column, DbDataType, DbError, DbValue, Error, Interval, ParameterValue, QueryError,
    RangeBoundKind,
};
use crate::manifest::AllowedHost;

/// Connections of one pool at most (Spin 4.1's `CONNECTION_POOL_SIZE`).
pub const POOL_SIZE: usize = 64;
/// Pools kept per component (Spin 4.1's `CONNECTION_POOL_CACHE_CAPACITY`).
pub const POOL_CACHE_CAPACITY: u64 = 16;

/// A pooled connection, shared by the guest's resource and the queries in flight on it: it
/// goes back to its pool when the last of them drops it.
pub type Client = Arc<deadpool_postgres::Object>;

/// An open connection (a guest resource).
pub struct Connection {
    pub(crate) client: Client,
}

/// A connection being configured (a guest resource).
pub struct ConnectionBuilder {
    pub(crate) address: String,
    pub(crate) ca_root: Option<String>,
}

/// A pool key: the full connection string and the CA root.
type PoolKey = (String, Option<String>);

/// The pools of one component, as Spin 4.1 keeps them (`factor-outbound-pg/src/client.rs`): a
/// cache of [`POOL_CACHE_CAPACITY`] pools keyed by (connection string, CA root), bounded by size
/// only (`moka::sync::Cache::new`: no time-to-idle, no time-to-live), each a
/// `deadpool_postgres::Pool` of up to [`POOL_SIZE`] connections recycled
/// [`RecyclingMethod::Clean`] when taken, with no idle timeout and no maximum lifetime. A new
/// password is a new pool; an old one keeps its idle sessions open until the cache evicts it,
/// and an evicted pool's sockets are dropped without a Terminate message.
pub struct Pools {
    pools: moka::sync::Cache<PoolKey, deadpool_postgres::Pool>,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            pools: moka::sync::Cache::new(POOL_CACHE_CAPACITY),
        }
    }
}

impl Pools {
    /// A pooled connection for `address`: from its pool (made on first use), recycled or new.
    pub async fn get(
        &self,
        address: &str,
        ca_root: Option<&str>,
        allowed: &[AllowedHost],
        secrets: &[String],
    ) -> Result<Client, Error> {
        let config = tokio_postgres::Config::from_str(address)
            .map_err(|e| Error::ConnectionFailed(format!("invalid connection string: {e}")))?;
        check_allowed(&config, allowed)?;
        let key = (address.to_owned(), ca_root.map(str::to_owned));
        let pool = self
            .pools
            .try_get_with_by_ref(&key, || new_pool(config, ca_root))
            .map_err(|e| (*e).clone())?;
        let object = pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => connect_failed(e, secrets),
            other => Error::ConnectionFailed(scrub(other.to_string(), secrets)),
        })?;
        Ok(Arc::new(object))
    }
}

fn new_pool(
    config: tokio_postgres::Config,
    ca_root: Option<&str>,
) -> Result<deadpool_postgres::Pool, Error> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Clean,
    };
    let manager = if config.get_ssl_mode() == SslMode::Disable {
        deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, manager_config)
    } else {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_root)?);
        deadpool_postgres::Manager::from_config(config, tls, manager_config)
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .map_err(|e| Error::Other(format!("building the connection pool: {e}")))
}

/// Replaces secrets (e.g. a password echoed in an error) before a message leaves the host.
fn scrub(text: String, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 6)
        .fold(text, |t, s| t.replace(s.as_str(), "****"))
}

/// Every host of `config` must be in `allowed_outbound_hosts`.
fn check_allowed(config: &tokio_postgres::Config, allowed: &[AllowedHost]) -> Result<(), Error> {
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let host = match host {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Error::ConnectionFailed(
                    "unix sockets are not supported".into(),
                ));
            }
        };
        // Spin's port: the one at the host's index, or the only one; none given means 5432.
        let given = ports
            .get(i)
            .or(if ports.len() == 1 {
                ports.first()
            } else {
                None
            })
            .copied();
        let port = given.unwrap_or(5432);
        if !allowed.iter().any(|a| a.allows("postgres", &host, port)) {
            eprintln!(
                "devhost: a component tried to connect to postgres://{host}:{port}, which is not allowed: add \"postgres://{host}:{port}\" to allowed_outbound_hosts in spin.toml"
            );
            // Spin's words (factor-outbound-pg, `allowed_hosts.rs`), the port only when given.
            let port = given.map(|p| format!(":{p}")).unwrap_or_default();
            return Err(Error::ConnectionFailed(format!(
                "address postgres://{host}{port} is not permitted"
            )));
        }
    }
    Ok(())
}

/// A failed login as the guest sees it: the message, with the server's SQLSTATE when it sent one.
fn connect_failed(e: tokio_postgres::Error, secrets: &[String]) -> Error {
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        text = format!("{text} (SQLSTATE {})", db.code().code());
    } else if let Some(src) = e.source() {
        text = format!("{text}: {src}");
    }
    Error::ConnectionFailed(scrub(text, secrets))
}

fn tls_config(ca_root: Option<&str>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_root {
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            let cert =
                cert.map_err(|e| Error::ConnectionFailed(format!("invalid CA root: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::ConnectionFailed(format!("invalid CA root: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Maps a query/execute error as Spin does: structured when the server sent one.
pub fn query_error(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::QueryFailed(QueryError::DbError(DbError {
            as_text: e.to_string(),
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            extras: db
                .hint()
                .map(|h| vec![("hint".to_owned(), h.to_owned())])
                .unwrap_or_default(),
        })),
        None => Error::QueryFailed(QueryError::Text(e.to_string())),
    }
}

// ---- columns and values -------------------------------------------------------------------

/// The WIT data type of a Postgres column type.
pub fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP => DbDataType::Datetime,
        Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        // Only jsonb: Spin maps `json` (and `"char"`) to `other`/`unsupported`.
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(t.name().to_owned()),
    }
}

/// The columns of a statement.
pub fn columns(cols: &[tokio_postgres::Column]) -> Vec<Column> {
    cols.iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            data_type: data_type(c.type_()),
        })
        .collect()
}

/// Any value, as its raw binary bytes (for types the WIT does not cover).
struct Raw(Vec<u8>);
impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

struct PgInterval(Interval);
impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("bad interval".into());
        }
        Ok(PgInterval(Interval {
            micros: i64::from_be_bytes(raw[0..8].try_into()?),
            days: i32::from_be_bytes(raw[8..12].try_into()?),
            months: i32::from_be_bytes(raw[12..16].try_into()?),
        }))
    }
    fn accepts(t: &Type) -> bool {
        *t == Type::INTERVAL
    }
}

type Bound<T> = Option<(T, RangeBoundKind)>;

struct PgRange<T>(Bound<T>, Bound<T>);
impl<'a, T: FromSql<'a>> FromSql<'a> for PgRange<T> {
    fn from_sql(t: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use postgres_protocol::types::{Range, RangeBound, range_from_sql};
        let element = match t.kind() {
            postgres_types::Kind::Range(e) => e.clone(),
            _ => return Err("not a range".into()),
        };
        let bound = |b: RangeBound<Option<&'a [u8]>>| -> Result<Bound<T>, Box<dyn std::error::Error + Sync + Send>> {
            Ok(match b {
                RangeBound::Inclusive(Some(v)) => Some((T::from_sql(&element, v)?, RangeBoundKind::Inclusive)),
                RangeBound::Exclusive(Some(v)) => Some((T::from_sql(&element, v)?, RangeBoundKind::Exclusive)),
                _ => None,
            })
        };
        match range_from_sql(raw)? {
            Range::Empty => Ok(PgRange(None, None)),
            Range::Nonempty(lo, hi) => Ok(PgRange(bound(lo)?, bound(hi)?)),
        }
    }
    fn accepts(t: &Type) -> bool {
        matches!(t.kind(), postgres_types::Kind::Range(_))
    }
}

fn dec_bound(b: Bound<rust_decimal::Decimal>) -> Bound<String> {
    b.map(|(v, k)| (v.to_string(), k))
}

fn get<'a, T: FromSql<'a>>(row: &'a tokio_postgres::Row, i: usize) -> Result<Option<T>, Error> {
    row.try_get::<_, Option<T>>(i)
        .map_err(|e| Error::ValueConversionFailed(format!("column {i}: {e}")))
}

/// One row as WIT values.
pub fn row_values(row: &tokio_postgres::Row) -> Result<Vec<DbValue>, Error> {
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::BOOL => get::<bool>(row, i)?.map(DbValue::Boolean),
            Type::INT2 => get::<i16>(row, i)?.map(DbValue::Int16),
            Type::INT4 => get::<i32>(row, i)?.map(DbValue::Int32),
            Type::INT8 => get::<i64>(row, i)?.map(DbValue::Int64),
            Type::FLOAT4 => get::<f32>(row, i)?.map(DbValue::Floating32),
            Type::FLOAT8 => get::<f64>(row, i)?.map(DbValue::Floating64),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR => get::<String>(row, i)?.map(DbValue::Str),
            Type::BYTEA => get::<Vec<u8>>(row, i)?.map(DbValue::Binary),
            Type::DATE => get::<NaiveDate>(row, i)?
                .map(|d| DbValue::Date((d.year(), d.month() as u8, d.day() as u8))),
            Type::TIME => get::<NaiveTime>(row, i)?.map(|t| {
                DbValue::Time((
                    t.hour() as u8,
                    t.minute() as u8,
                    t.second() as u8,
                    t.nanosecond(),
                ))
            }),
            Type::TIMESTAMP => {
                get::<NaiveDateTime>(row, i)?.map(|dt| DbValue::Datetime(datetime_tuple(dt)))
            }
            Type::TIMESTAMPTZ => get::<chrono::DateTime<chrono::Utc>>(row, i)?
                .map(|dt| DbValue::Datetime(datetime_tuple(dt.naive_utc()))),
            Type::UUID => get::<uuid::Uuid>(row, i)?.map(|u| DbValue::Uuid(u.to_string())),
            Type::JSONB => get::<serde_json::Value>(row, i)?
                .map(|j| DbValue::Jsonb(j.to_string().into_bytes())),
            Type::NUMERIC => {
                get::<rust_decimal::Decimal>(row, i)?.map(|d| DbValue::Decimal(d.to_string()))
            }
            Type::INT4_RANGE => {
                get::<PgRange<i32>>(row, i)?.map(|r| DbValue::RangeInt32((r.0, r.1)))
            }
            Type::INT8_RANGE => {
                get::<PgRange<i64>>(row, i)?.map(|r| DbValue::RangeInt64((r.0, r.1)))
            }
            Type::NUM_RANGE => get::<PgRange<rust_decimal::Decimal>>(row, i)?
                .map(|r| DbValue::RangeDecimal((dec_bound(r.0), dec_bound(r.1)))),
            Type::INT4_ARRAY => get::<Vec<Option<i32>>>(row, i)?.map(DbValue::ArrayInt32),
            Type::INT8_ARRAY => get::<Vec<Option<i64>>>(row, i)?.map(DbValue::ArrayInt64),
            Type::NUMERIC_ARRAY => get::<Vec<Option<rust_decimal::Decimal>>>(row, i)?.map(|v| {
                DbValue::ArrayDecimal(v.into_iter().map(|d| d.map(|d| d.to_string())).collect())
            }),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
                get::<Vec<Option<String>>>(row, i)?.map(DbValue::ArrayStr)
            }
            Type::INTERVAL => get::<PgInterval>(row, i)?.map(|v| DbValue::Interval(v.0)),
            _ => get::<Raw>(row, i)?.map(|r| DbValue::Unsupported(r.0)),
        };
        out.push(v.unwrap_or(DbValue::DbNull));
    }
    Ok(out)
}

fn datetime_tuple(dt: NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    (
        dt.year(),
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
        dt.nanosecond(),
    )
}

// ---- parameters -----------------------------------------------------------------------------

/// A typed NULL that binds to a parameter of any type.
#[derive(Debug)]
struct Null;
impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

impl ToSql for PgIntervalParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.micros.to_be_bytes());
        out.extend_from_slice(&self.0.days.to_be_bytes());
        out.extend_from_slice(&self.0.months.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(t: &Type) -> bool {
        *t == Type::INTERVAL
    }
    to_sql_checked!();
}
#[derive(Debug)]
struct PgIntervalParam(Interval);

#[derive(Debug)]
struct RangeParam<T>(Bound<T>, Bound<T>);
impl<T: ToSql> ToSql for RangeParam<T> {
    fn to_sql(
        &self,
        t: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres_protocol::types::{RangeBound, range_to_sql};
        let element = match t.kind() {
            postgres_types::Kind::Range(e) => e.clone(),
            _ => return Err("not a range".into()),
        };
        let bound = |b: &Bound<T>,
                     buf: &mut BytesMut|
         -> Result<
            RangeBound<postgres_protocol::IsNull>,
            Box<dyn std::error::Error + Sync + Send>,
        > {
            Ok(match b {
                None => RangeBound::Unbounded,
                Some((v, kind)) => {
                    let is_null = match v.to_sql(&element, buf)? {
                        IsNull::Yes => postgres_protocol::IsNull::Yes,
                        IsNull::No => postgres_protocol::IsNull::No,
                    };
                    match kind {
                        RangeBoundKind::Inclusive => RangeBound::Inclusive(is_null),
                        RangeBoundKind::Exclusive => RangeBound::Exclusive(is_null),
                    }
                }
            })
        };
        range_to_sql(|buf| bound(&self.0, buf), |buf| bound(&self.1, buf), out)?;
        Ok(IsNull::No)
    }
    fn accepts(t: &Type) -> bool {
        matches!(t.kind(), postgres_types::Kind::Range(_))
    }
    to_sql_checked!();
}

fn decimal(s: &str) -> Result<rust_decimal::Decimal, Error> {
    rust_decimal::Decimal::from_str_exact(s)
        .map_err(|e| Error::BadParameter(format!("invalid decimal `{s}`: {e}")))
}

fn dec_param_bound(b: Bound<String>) -> Result<Bound<rust_decimal::Decimal>, Error> {
    b.map(|(v, k)| Ok((decimal(&v)?, k))).transpose()
}

/// Guest parameters as tokio-postgres parameters.
pub fn params(values: Vec<ParameterValue>) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, Error> {
    values
        .into_iter()
        .map(|v| -> Result<Box<dyn ToSql + Sync + Send>, Error> {
            Ok(match v {
                ParameterValue::Boolean(b) => Box::new(b),
                ParameterValue::Int8(n) => Box::new(n),
                ParameterValue::Int16(n) => Box::new(n),
                ParameterValue::Int32(n) => Box::new(n),
                ParameterValue::Int64(n) => Box::new(n),
                ParameterValue::Floating32(n) => Box::new(n),
                ParameterValue::Floating64(n) => Box::new(n),
                ParameterValue::Str(s) => Box::new(s),
                ParameterValue::Binary(b) => Box::new(b),
                ParameterValue::Date((y, m, d)) => Box::new(
                    NaiveDate::from_ymd_opt(y, m.into(), d.into())
                        .ok_or_else(|| Error::BadParameter("invalid date".into()))?,
                ),
                ParameterValue::Time((h, m, s, ns)) => Box::new(
                    NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
                        .ok_or_else(|| Error::BadParameter("invalid time".into()))?,
                ),
                ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => {
                    let date = NaiveDate::from_ymd_opt(y, mo.into(), d.into())
                        .ok_or_else(|| Error::BadParameter("invalid datetime".into()))?;
                    let time = NaiveTime::from_hms_nano_opt(h.into(), mi.into(), s.into(), ns)
                        .ok_or_else(|| Error::BadParameter("invalid datetime".into()))?;
                    Box::new(NaiveDateTime::new(date, time))
                }
                ParameterValue::Timestamp(secs) => Box::new(
                    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
                        .ok_or_else(|| Error::BadParameter("invalid timestamp".into()))?,
                ),
                ParameterValue::Uuid(s) => Box::new(
                    uuid::Uuid::parse_str(&s)
                        .map_err(|e| Error::BadParameter(format!("invalid uuid: {e}")))?,
                ),
                ParameterValue::Jsonb(bytes) => Box::new(
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map_err(|e| Error::BadParameter(format!("invalid jsonb: {e}")))?,
                ),
                ParameterValue::Decimal(s) => Box::new(decimal(&s)?),
                ParameterValue::RangeInt32((lo, hi)) => Box::new(RangeParam(lo, hi)),
                ParameterValue::RangeInt64((lo, hi)) => Box::new(RangeParam(lo, hi)),
                ParameterValue::RangeDecimal((lo, hi)) => {
                    Box::new(RangeParam(dec_param_bound(lo)?, dec_param_bound(hi)?))
                }
                ParameterValue::ArrayInt32(v) => Box::new(v),
                ParameterValue::ArrayInt64(v) => Box::new(v),
                ParameterValue::ArrayDecimal(v) => Box::new(
                    v.into_iter()
                        .map(|d| d.map(|d| decimal(&d)).transpose())
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                ParameterValue::ArrayStr(v) => Box::new(v),
                ParameterValue::Interval(i) => Box::new(PgIntervalParam(i)),
                ParameterValue::DbNull => Box::new(Null),
            })
        })
        .collect()
}
