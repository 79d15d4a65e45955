//! A component written the way a wasmCloud user writes one: a WASI 0.2 HTTP handler that
//! imports `wasmcloud:postgres/{query,prepared}@0.1.1-draft` and knows nothing of tokens. The tests `wac plug` the Lakebase WASI plugin into it and serve it
//! with `wasmtime serve`.
//!
//! Routes (JSON out; errors as `{"error": case, "message": text}` with status 502):
//! - `GET /whoami`: `current_user` and `$1::int4 + 1` with `$1 = 41`;
//! - `GET /types`: one row of many column types from parameters, each value as its Debug text;
//! - `GET /batch`: creates and fills the table `wc_items` with `query-batch`;
//! - `GET /prepared`: prepares an insert into `wc_items`, runs it twice, then counts the rows
//!   and the session's server-side statements of that text;
//! - `GET /replanned`: the same query before and after its table gains a column;
//! - `GET /repeat`: ten `query` calls of one statement, one after the other;
//! - `GET /bad-sql`, `GET /bad-param`, `GET /unsupported-param`: the three query errors.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "lakebase:postgres/wasmcloud-consumer",
        generate_all,
    });
}

use std::io::Write as _;

use bindings::wasmcloud::postgres::prepared;
use bindings::wasmcloud::postgres::query::{self, PgValue, QueryError, ResultRow};
use bindings::wasmcloud::postgres::types::{Date, Offset, Time, Timestamp, TimestampTz};
use serde_json::{Value, json};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Consumer);

struct Consumer;

impl wasip2::exports::http::incoming_handler::Guest for Consumer {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match route(&path) {
            Ok(body) => (200, body),
            Err(body) => (502, body),
        };
        let headers =
            Fields::from_list(&[("content-type".to_owned(), b"application/json".to_vec())])
                .unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(mut stream) = outgoing.write() {
            let _ = stream.write_all(body.to_string().as_bytes());
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

fn query_error(e: QueryError) -> Value {
    let (case, message) = match e {
        QueryError::InvalidParams(m) => ("invalid-params", m),
        QueryError::InvalidQuery(m) => ("invalid-query", m),
        QueryError::Unexpected(m) => ("unexpected", m),
    };
    json!({ "error": case, "message": message })
}

fn one_row(sql: &str, params: &[PgValue]) -> Result<ResultRow, Value> {
    let mut rows = query::query(sql, params).map_err(query_error)?;
    if rows.len() != 1 {
        return Err(json!({ "error": "rows", "message": format!("{} rows", rows.len()) }));
    }
    Ok(rows.remove(0))
}

fn route(path: &str) -> Result<Value, Value> {
    match path {
        "/whoami" => {
            let row = one_row(
                "SELECT current_user::text AS u, $1::int4 + 1 AS n",
                &[PgValue::Int4(41)],
            )?;
            Ok(json!({ "user": format!("{:?}", row[0].value), "n": format!("{:?}", row[1].value) }))
        }
        "/types" => {
            let ts = Timestamp {
                date: Date::Ymd((2026, 12, 2)),
                time: Time {
                    hour: 10,
                    min: 36,
                    sec: 22,
                    micro: 123_456,
                },
            };
            let params = [
                PgValue::Int8(-9_007_199_254_740_993),
                PgValue::Text("naïve \"quoted\"".to_owned()),
                PgValue::Boolean(true),
                PgValue::Float8(decode_f64(0.1)),
                PgValue::Bytea(vec![0, 1, 254, 255]),
                PgValue::Date(Date::Ymd((2026, 12, 2))),
                PgValue::TimestampTz(TimestampTz {
                    timestamp: ts,
                    offset: Offset::EasternHemisphereSecs(3600),
                }),
                PgValue::Uuid("6f1c2a5e-0b4d-4c8e-9f3a-2d7e8b9c0a1f".to_owned()),
                PgValue::Jsonb(r#"{"b": [1, 2], "a": null}"#.to_owned()),
                PgValue::Int4Array(vec![1, -2, 3]),
                PgValue::Numeric("-12345.678900".to_owned()),
                PgValue::TextArray(vec!["a,b".to_owned(), "c\\d".to_owned()]),
                PgValue::Null,
            ];
            let row = one_row(
                "SELECT $1::int8 AS i8, $2::text AS t, $3::bool AS b, $4::float8 AS f8, \
                 $5::bytea AS by, $6::date AS d, $7::timestamptz AS tz, $8::uuid AS u, \
                 $9::jsonb AS j, $10::int4[] AS a, $11::numeric AS n, $12::text[] AS ta, \
                 $13::int4 AS nul, 'x'::varchar AS v, 2.5::float4 AS f4, \
                 '10:36:22'::time AS tm, 'infinity'::date AS inf",
                &params,
            )?;
            Ok(Value::Object(
                row.into_iter()
                    .map(|e| (e.column_name, Value::String(format!("{:?}", e.value))))
                    .collect(),
            ))
        }
        "/batch" => {
            query::query_batch(
                "CREATE TABLE IF NOT EXISTS wc_items (id serial PRIMARY KEY, name text NOT NULL); \
                 INSERT INTO wc_items (name) VALUES ('from batch')",
            )
            .map_err(query_error)?;
            Ok(json!({ "ok": true }))
        }
        "/prepared" => {
            let token = prepared::prepare("INSERT INTO wc_items (name) VALUES ($1)")
                .map_err(|e| json!({ "error": "prepare", "message": format!("{e:?}") }))?;
            let again = prepared::prepare("INSERT INTO wc_items (name) VALUES ($1)")
                .map_err(|e| json!({ "error": "prepare", "message": format!("{e:?}") }))?;
            let mut affected = 0;
            for name in ["one", "two"] {
                affected += prepared::exec(&token, &[PgValue::Text(name.to_owned())])
                    .map_err(|e| json!({ "error": "exec", "message": format!("{e:?}") }))?;
            }
            let unknown = prepared::exec("no-such-token", &[]);
            let row = one_row("SELECT count(*) AS c FROM wc_items", &[])?;
            let statements = one_row(
                "SELECT count(*) AS c FROM pg_prepared_statements WHERE statement = $1",
                &[PgValue::Text(
                    "INSERT INTO wc_items (name) VALUES ($1)".to_owned(),
                )],
            )?;
            Ok(json!({
                "affected": affected,
                "same_token": token == again,
                "unknown": format!("{unknown:?}"),
                "count": format!("{:?}", row[0].value),
                "server_statements": format!("{:?}", statements[0].value),
            }))
        }
        "/replanned" => {
            query::query_batch(
                "DROP TABLE IF EXISTS wc_shape; CREATE TABLE wc_shape (a int); \
                 INSERT INTO wc_shape VALUES (1)",
            )
            .map_err(query_error)?;
            let before = one_row("SELECT * FROM wc_shape", &[])?.len();
            query::query_batch("ALTER TABLE wc_shape ADD COLUMN b int").map_err(query_error)?;
            let after = one_row("SELECT * FROM wc_shape", &[])?.len();
            Ok(json!({ "before": before, "after": after }))
        }
        "/repeat" => {
            let mut sum = 0;
            for i in 0..10 {
                let row = one_row("SELECT $1::int4 + 1 AS n", &[PgValue::Int4(i)])?;
                if let PgValue::Int4(n) = row[0].value {
                    sum += n;
                }
            }
            Ok(json!({ "sum": sum }))
        }
        "/bad-sql" => one_row("SELEC 1", &[]).map(|_| json!({})),
        "/bad-param" => {
            one_row("SELECT $1::int4 AS n", &[PgValue::Text("abc".to_owned())]).map(|_| json!({}))
        }
        "/unsupported-param" => one_row(
            "SELECT $1::text AS t",
            &[PgValue::Circle((((1, 0, 1), (1, 0, 1)), (1, 0, 1)))],
        )
        .map(|_| json!({})),
        _ => Err(json!({ "error": "not-found", "message": path })),
    }
}

/// `f64::integer_decode`, the float encoding of `wasmcloud:postgres`.
fn decode_f64(f: f64) -> (u64, i16, i8) {
    let bits = f.to_bits();
    let sign = if bits >> 63 == 0 { 1 } else { -1 };
    let exponent = ((bits >> 52) & 0x7ff) as i16;
    let mantissa = if exponent == 0 {
        (bits & 0xf_ffff_ffff_ffff) << 1
    } else {
        (bits & 0xf_ffff_ffff_ffff) | 0x10_0000_0000_0000
    };
    (mantissa, exponent - 1075, sign)
}
