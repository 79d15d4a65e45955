//! A WASIp2 Spin component (spin-sdk 5.2) that knows nothing of Lakebase: it uses plain
//! `spin_sdk::pg4` with an address from a variable. Composed with `lakebase_plugin_p2.wasm`,
//! the address `lakebase:` logs in with a cached OAuth credential; any other address goes to
//! the host as usual.
//!
//! Routes (JSON out; `via=lakebase` uses the variable `lakebase_address`, default `lakebase:`;
//! `via=direct` uses `direct_address`):
//! - `GET /health?via=…` → `{"user","database"}`
//! - `GET /select1?via=…` → `{"one":1}`
//!
//! Errors: `{"error":"…"}` with status 500 (or 400 for a bad request).

use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::pg4::{Connection, DbValue};

type Reply = (u16, serde_json::Value);

fn fail(status: u16, message: impl std::fmt::Display) -> Reply {
    (status, serde_json::json!({ "error": message.to_string() }))
}

#[spin_sdk::http_component]
fn handle(req: IncomingRequest) -> Response {
    let (status, body) = route(&req).unwrap_or_else(|e| e);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

fn address(query: &str) -> Result<String, Reply> {
    let via = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("via="))
        .unwrap_or("lakebase");
    let (variable, default) = match via {
        "lakebase" => ("lakebase_address", "lakebase:"),
        "direct" => ("direct_address", ""),
        other => {
            return Err(fail(
                400,
                format!("via must be `lakebase` or `direct`, not `{other}`"),
            ));
        }
    };
    let value = spin_sdk::variables::get(variable).unwrap_or_default();
    let value = if value.is_empty() {
        default.to_owned()
    } else {
        value
    };
    if value.is_empty() {
        return Err(fail(400, format!("set the variable `{variable}`")));
    }
    Ok(value)
}

fn pg_fail(e: impl std::fmt::Debug) -> Reply {
    fail(500, format!("{e:?}"))
}

fn text(v: Option<&DbValue>) -> Option<&str> {
    match v {
        Some(DbValue::Str(s)) => Some(s),
        _ => None,
    }
}

fn route(req: &IncomingRequest) -> Result<Reply, Reply> {
    let path_and_query = req.path_with_query().unwrap_or_default();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query.as_str(), ""));
    let address = address(query)?;
    match path {
        "/health" => {
            let conn = Connection::open(&address).map_err(pg_fail)?;
            let set = conn
                .query(
                    "SELECT current_user::text AS user, current_database()::text AS database",
                    &[],
                )
                .map_err(pg_fail)?;
            let row = set.rows.first().ok_or_else(|| pg_fail("no row"))?;
            Ok((
                200,
                serde_json::json!({
                    "user": text(row.first()),
                    "database": text(row.get(1)),
                }),
            ))
        }
        "/select1" => {
            let conn = Connection::open(&address).map_err(pg_fail)?;
            let set = conn.query("SELECT 1::int4 AS one", &[]).map_err(pg_fail)?;
            let one = match set.rows.first().and_then(|r| r.first()) {
                Some(DbValue::Int32(n)) => Some(*n),
                _ => None,
            };
            let executed = conn.execute("SELECT 1", &[]).map_err(pg_fail)?;
            Ok((200, serde_json::json!({ "one": one, "executed": executed })))
        }
        _ => Err(fail(404, "no such route")),
    }
}
