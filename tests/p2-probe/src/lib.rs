//! A WASIp2 Spin component built with spin-sdk 5.2 (Spin's `http-rust-p2` template SDK), for
//! the devhost's tests of WASIp2 serving: key-value, a variable and Postgres, each on a route.
//!
//! - `GET /kv/<key>`: the value of `<key>` in the default store (404 when absent);
//!   `PUT /kv/<key>` with a body sets it; `DELETE /kv/<key>` deletes it; `GET /kv` lists keys.
//! - `GET /var/<name>`: the component variable `<name>`.
//! - `POST /pg` with a connection string as body: `SELECT` of a few typed values through
//!   `spin:postgres@4.0.0` (`spin_sdk::pg4`), answered as text; a failure is a 500 whose body
//!   is the error as the guest sees it (`{:?}`).
//! - `POST /pg3` with a connection string as body: the same through `spin:postgres@3.0.0`
//!   (`spin_sdk::pg3`), the columns' types and the row's values as `{:?}`.
//! - `POST /http` with a URL as body: an outbound `GET` through `wasi:http@0.2`
//!   (`spin_sdk::http::send`), answered with the status and body it got.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::{key_value, pg3, pg4, variables};

#[spin_sdk::http_component]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let path = req.path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let route = parts.next().unwrap_or("");
    let arg = parts.next().unwrap_or("");
    Ok(match (route, req.method()) {
        ("kv", method) => kv(method, arg, req.body()),
        ("var", Method::Get) => match variables::get(arg) {
            Ok(v) => text(200, v),
            Err(e) => text(500, format!("{e:?}")),
        },
        ("pg", Method::Post) => {
            let address = String::from_utf8_lossy(req.body()).into_owned();
            match pg(&address) {
                Ok(v) => text(200, v),
                Err(e) => text(500, format!("{e:?}")),
            }
        }
        ("pg3", Method::Post) => {
            let address = String::from_utf8_lossy(req.body()).into_owned();
            match pg3_row(&address) {
                Ok(v) => text(200, v),
                Err(e) => text(500, format!("{e:?}")),
            }
        }
        ("http", Method::Post) => {
            let url = String::from_utf8_lossy(req.body()).into_owned();
            match spin_sdk::http::send::<_, Response>(Request::get(url)).await {
                Ok(r) => text(
                    200,
                    format!("{} {}", r.status(), String::from_utf8_lossy(r.body())),
                ),
                Err(e) => text(502, format!("{e:?}")),
            }
        }
        _ => text(404, "no such route".to_owned()),
    })
}

fn text(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body)
        .build()
}

fn kv(method: &Method, key: &str, body: &[u8]) -> Response {
    let store = match key_value::Store::open_default() {
        Ok(s) => s,
        Err(e) => return text(500, format!("{e:?}")),
    };
    let result = match (method, key) {
        (Method::Get, "") => store.get_keys().map(|mut k| {
            k.sort();
            text(200, k.join("\n"))
        }),
        (Method::Get, key) => store.get(key).map(|v| match v {
            Some(v) => text(200, String::from_utf8_lossy(&v).into_owned()),
            None => text(404, "absent".to_owned()),
        }),
        (Method::Put, key) => store.set(key, body).map(|()| text(200, "set".to_owned())),
        (Method::Delete, key) => store.delete(key).map(|()| text(200, "deleted".to_owned())),
        _ => return text(405, "method not allowed".to_owned()),
    };
    result.unwrap_or_else(|e| text(500, format!("{e:?}")))
}

// The error is the SDK's, shown to the test as it is.
#[allow(clippy::result_large_err)]
fn pg(address: &str) -> Result<String, pg4::Error> {
    let conn = pg4::Connection::open(address)?;
    let rows = conn.query(
        "SELECT $1::text || ' from postgres' AS greeting, $2::int4 + 1 AS answer, \
         current_user::text AS who, NULL::int8 AS nothing",
        &["hello".to_owned().into(), 41i32.into()],
    )?;
    let mut out = Vec::new();
    for row in rows.rows() {
        let greeting: String = row.get("greeting").unwrap_or_default();
        let answer: i32 = row.get("answer").unwrap_or_default();
        let who: String = row.get("who").unwrap_or_default();
        let nothing: Option<i64> = row.get("nothing").flatten();
        out.push(format!("{greeting};{answer};{who};{nothing:?}"));
    }
    let columns: Vec<String> = rows
        .columns
        .iter()
        .map(|c| format!("{}:{:?}", c.name, c.data_type))
        .collect();
    Ok(format!("{}\n{}", columns.join(","), out.join("\n")))
}

#[allow(clippy::result_large_err)]
fn pg3_row(address: &str) -> Result<String, pg3::Error> {
    let conn = pg3::Connection::open(address)?;
    let rows = conn.query(
        "SELECT $1::text AS t, 42::int4 AS n, \
         '6f1c2a3e-0000-4000-8000-00000000abcd'::uuid AS u, NULL::int8 AS z",
        &[pg3::ParameterValue::Str("hello".to_owned())],
    )?;
    let types: Vec<String> = rows
        .columns
        .iter()
        .map(|c| format!("{:?}", c.data_type))
        .collect();
    Ok(format!("{}\n{:?}", types.join(","), rows.rows))
}
