//! A Spin component that knows nothing of Lakebase: it uses plain `spin_sdk::pg` with an address
//! from a variable. Composed with the Lakebase plugin, the address `lakebase:` logs in with a
//! cached OAuth credential; any other address goes to the host as usual.
//!
//! Routes (JSON out; `via=lakebase` uses the variable `lakebase_address`, default `lakebase:`;
//! `via=direct` uses `direct_address`):
//! - `GET /health?via=…` → `{"user","database"}`
//! - `GET /select1?via=…` → `{"one":1}`
//! - `GET /roundtrip?via=…&api=async|sync[&warm=no]` → every `spin:postgres` value type sent as a
//!   parameter and read back: `{"checked":N,"executed":1,"mismatches":[…]}`; `api=sync` opens
//!   asynchronously once first unless `warm=no`
//! - `GET /rows?via=…&n=N&width=W` → streams `N` rows of `W` bytes, counting them without keeping
//!   them: `{"rows","bytes"}`
//!
//! Errors: `{"error":"…"}` with status 500 (or 400 for a bad request).

use spin_sdk::http::{Request, StatusCode};
use spin_sdk::pg::wit::postgres as raw;
use spin_sdk::pg::{Connection, DbValue, ParameterValue, RangeBoundKind};

type Reply = (StatusCode, serde_json::Value);

fn fail(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    (status, serde_json::json!({ "error": message.to_string() }))
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<http::Response<String>> {
    let (status, body) = route(&req).await.unwrap_or_else(|e| e);
    Ok(http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())?)
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn address(query: &[(String, String)]) -> Result<String, Reply> {
    let (variable, default) = match param(query, "via").unwrap_or("lakebase") {
        "lakebase" => ("lakebase_address", "lakebase:"),
        "direct" => ("direct_address", ""),
        other => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("via must be `lakebase` or `direct`, not `{other}`"),
            ));
        }
    };
    let value = spin_sdk::variables::get(variable).await.unwrap_or_default();
    let value = if value.is_empty() {
        default.to_owned()
    } else {
        value
    };
    if value.is_empty() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("set the variable `{variable}`"),
        ));
    }
    Ok(value)
}

fn number(query: &[(String, String)], name: &str, default: u32, max: u32) -> Result<u32, Reply> {
    match param(query, name) {
        None => Ok(default),
        Some(v) => v.parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(|| {
            fail(
                StatusCode::BAD_REQUEST,
                format!("`{name}` must be a number from 0 to {max}"),
            )
        }),
    }
}

fn pg_fail(e: impl std::fmt::Display) -> Reply {
    fail(StatusCode::INTERNAL_SERVER_ERROR, e)
}

async fn route(req: &Request) -> Result<Reply, Reply> {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let address = address(&query).await?;
    match req.uri().path() {
        "/health" => {
            let conn = Connection::open(address).await.map_err(pg_fail)?;
            let rows = conn
                .query(
                    "SELECT current_user::text AS user, current_database()::text AS database",
                    [],
                )
                .await
                .map_err(pg_fail)?
                .collect()
                .await
                .map_err(pg_fail)?;
            let row = rows.first().ok_or_else(|| pg_fail("no row"))?;
            Ok((
                StatusCode::OK,
                serde_json::json!({
                    "user": row.get::<String>("user"),
                    "database": row.get::<String>("database"),
                }),
            ))
        }
        "/select1" => {
            let conn = Connection::open(address).await.map_err(pg_fail)?;
            let rows = conn
                .query("SELECT 1::int4 AS one", [])
                .await
                .map_err(pg_fail)?
                .collect()
                .await
                .map_err(pg_fail)?;
            let one = rows.first().and_then(|r| r.get::<i32>("one"));
            Ok((StatusCode::OK, serde_json::json!({ "one": one })))
        }
        "/roundtrip" => {
            let warm = param(&query, "warm") != Some("no");
            roundtrip(&address, param(&query, "api").unwrap_or("async"), warm).await
        }
        "/rows" => {
            let n = number(&query, "n", 1000, 1_000_000)?;
            let width = number(&query, "width", 100, 100_000)?;
            let conn = Connection::open(address).await.map_err(pg_fail)?;
            let mut result = conn
                .query(
                    "SELECT g, repeat('x', $2) AS pad FROM generate_series(1, $1) AS g",
                    [
                        ParameterValue::Int32(n as i32),
                        ParameterValue::Int32(width as i32),
                    ],
                )
                .await
                .map_err(pg_fail)?;
            let (mut rows, mut bytes) = (0u64, 0u64);
            // One row at a time off the stream: nothing is kept.
            while let Some(row) = result.rows().next().await {
                rows += 1;
                if let Some(DbValue::Str(s)) = row.get(1) {
                    bytes += s.len() as u64;
                }
            }
            result.result().await.map_err(pg_fail)?;
            Ok((
                StatusCode::OK,
                serde_json::json!({ "rows": rows, "bytes": bytes }),
            ))
        }
        _ => Err(fail(StatusCode::NOT_FOUND, "no such route")),
    }
}

/// Every parameter type with the cast that reads it back, and the value expected back.
fn cases() -> Vec<(ParameterValue, &'static str, DbValue)> {
    use RangeBoundKind::{Exclusive, Inclusive};
    vec![
        (
            ParameterValue::Boolean(true),
            "bool",
            DbValue::Boolean(true),
        ),
        // `int8` is sent as a `"char"`, but read back as its raw byte: Spin's factor-outbound-pg
        // maps no `"char"` column to `int8` (the same in v3.4.0, v4.0.2 and main).
        (
            ParameterValue::Int8(-5),
            "\"char\"",
            DbValue::Unsupported(vec![0xFB]),
        ),
        (ParameterValue::Int16(-300), "int2", DbValue::Int16(-300)),
        (
            ParameterValue::Int32(-70_000),
            "int4",
            DbValue::Int32(-70_000),
        ),
        (
            ParameterValue::Int64(1 << 40),
            "int8",
            DbValue::Int64(1 << 40),
        ),
        (
            ParameterValue::Floating32(1.5),
            "float4",
            DbValue::Floating32(1.5),
        ),
        (
            ParameterValue::Floating64(-2.25),
            "float8",
            DbValue::Floating64(-2.25),
        ),
        (
            ParameterValue::Str("héllo 'q' \\ \"x\"".into()),
            "text",
            DbValue::Str("héllo 'q' \\ \"x\"".into()),
        ),
        (
            ParameterValue::Binary(vec![0, 1, 254, 255]),
            "bytea",
            DbValue::Binary(vec![0, 1, 254, 255]),
        ),
        (
            ParameterValue::Date((2026, 12, 1)),
            "date",
            DbValue::Date((2026, 12, 1)),
        ),
        (
            ParameterValue::Time((13, 14, 15, 123_456_000)),
            "time",
            DbValue::Time((13, 14, 15, 123_456_000)),
        ),
        (
            ParameterValue::Datetime((2026, 12, 1, 13, 14, 15, 500_000_000)),
            "timestamp",
            DbValue::Datetime((2026, 12, 1, 13, 14, 15, 500_000_000)),
        ),
        (
            ParameterValue::Timestamp(1_767_225_600),
            "timestamptz",
            DbValue::Datetime((2026, 1, 1, 0, 0, 0, 0)),
        ),
        (
            ParameterValue::Uuid("6f1c2a3e-0000-4000-8000-00000000abcd".into()),
            "uuid",
            DbValue::Uuid("6f1c2a3e-0000-4000-8000-00000000abcd".into()),
        ),
        (
            ParameterValue::Jsonb(br#"{"a":[1,"b"]}"#.to_vec()),
            "jsonb",
            DbValue::Jsonb(br#"{"a":[1,"b"]}"#.to_vec()),
        ),
        (
            ParameterValue::Decimal("12.345".into()),
            "numeric",
            DbValue::Decimal("12.345".into()),
        ),
        (
            ParameterValue::RangeInt32((Some((1, Inclusive)), Some((10, Exclusive)))),
            "int4range",
            DbValue::RangeInt32((Some((1, Inclusive)), Some((10, Exclusive)))),
        ),
        (
            ParameterValue::RangeInt64((Some((5, Inclusive)), None)),
            "int8range",
            DbValue::RangeInt64((Some((5, Inclusive)), None)),
        ),
        (
            ParameterValue::RangeDecimal((
                Some(("1.5".into(), Inclusive)),
                Some(("2.5".into(), Exclusive)),
            )),
            "numrange",
            DbValue::RangeDecimal((
                Some(("1.5".into(), Inclusive)),
                Some(("2.5".into(), Exclusive)),
            )),
        ),
        (
            ParameterValue::ArrayInt32(vec![Some(1), None, Some(3)]),
            "int4[]",
            DbValue::ArrayInt32(vec![Some(1), None, Some(3)]),
        ),
        (
            ParameterValue::ArrayInt64(vec![Some(1 << 40), None]),
            "int8[]",
            DbValue::ArrayInt64(vec![Some(1 << 40), None]),
        ),
        (
            ParameterValue::ArrayDecimal(vec![Some("1.10".into()), None]),
            "numeric[]",
            DbValue::ArrayDecimal(vec![Some("1.10".into()), None]),
        ),
        (
            ParameterValue::ArrayStr(vec![Some("a b".into()), None]),
            "text[]",
            DbValue::ArrayStr(vec![Some("a b".into()), None]),
        ),
        (
            ParameterValue::Interval(spin_sdk::pg::Interval {
                micros: 1_500_000,
                days: 2,
                months: 3,
            }),
            "interval",
            DbValue::Interval(spin_sdk::pg::Interval {
                micros: 1_500_000,
                days: 2,
                months: 3,
            }),
        ),
        (ParameterValue::DbNull, "text", DbValue::DbNull),
    ]
}

/// Sends every value type and compares what comes back; `api` picks the async functions (as
/// spin-sdk uses them) or the sync ones (`open`, `query`, `execute`, as older SDKs do).
async fn roundtrip(address: &str, api: &str, warm: bool) -> Result<Reply, Reply> {
    let cases = cases();
    let mut columns: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, cast, _))| format!("${}::{cast} AS c{i}", i + 1))
        .collect();
    // A type without a mapping comes back as `unsupported` with its raw bytes.
    columns.push("'abc'::name AS unsupported".into());
    let statement = format!("SELECT {}", columns.join(", "));
    let params: Vec<ParameterValue> = cases.iter().map(|(p, _, _)| p.clone()).collect();
    let mut expected: Vec<DbValue> = cases.into_iter().map(|(_, _, v)| v).collect();
    expected.push(DbValue::Unsupported(b"abc".to_vec()));

    let (got, executed) = match api {
        "async" => {
            let conn = Connection::open(address).await.map_err(pg_fail)?;
            let mut result = conn
                .query(statement.as_str(), params.clone())
                .await
                .map_err(pg_fail)?;
            let row = result
                .rows()
                .next()
                .await
                .ok_or_else(|| pg_fail("no row"))?;
            while result.rows().next().await.is_some() {}
            result.result().await.map_err(pg_fail)?;
            let executed = conn
                .execute("SELECT $1::int4", [ParameterValue::Int32(7)])
                .await
                .map_err(pg_fail)?;
            (row, executed)
        }
        "sync" => {
            // The plugin serves a synchronous `open` of a `lakebase:` address only from a
            // credential already in the instance's memory: one async open puts it there.
            if warm {
                Connection::open(address).await.map_err(pg_fail)?;
            }
            let conn = raw::Connection::open(address).map_err(pg_fail)?;
            let set = conn.query(&statement, &params).map_err(pg_fail)?;
            let executed = conn
                .execute("SELECT $1::int4", &[ParameterValue::Int32(7)])
                .map_err(pg_fail)?;
            let row = set
                .rows
                .into_iter()
                .next()
                .ok_or_else(|| pg_fail("no row"))?;
            (row, executed)
        }
        other => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("api must be `async` or `sync`, not `{other}`"),
            ));
        }
    };
    let mismatches: Vec<String> = expected
        .iter()
        .zip(got.iter().map(Some).chain(std::iter::repeat(None)))
        .enumerate()
        .filter_map(|(i, (want, got))| {
            let want = format!("{want:?}");
            let got = got
                .map(|g| format!("{g:?}"))
                .unwrap_or_else(|| "missing".into());
            (want != got).then(|| format!("column {i}: sent {want}, got {got}"))
        })
        .collect();
    Ok((
        StatusCode::OK,
        serde_json::json!({
            "checked": expected.len(),
            "executed": executed,
            "mismatches": mismatches,
        }),
    ))
}
