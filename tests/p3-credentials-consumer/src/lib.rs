//! A `wasi:http@0.3` component (an async handler, as wasmCloud v2 and `wasmtime serve -S p3`
//! serve) that calls the Lakebase credentials interface, whose functions are `async`: a caller
//! must be an async task to wait on them (a WASI 0.2 handler traps with "cannot block a
//! synchronous task" when `get` has to mint). It uses no Spin interface: spin-sdk is here only
//! for its `wasi:http` 0.3 export and its async runtime.
//!
//! Routes (JSON out): `GET /credential` → `{"user","host","port","database","source",
//! "expires_in_s","sslmode"}` (never the password) or `{"error":{"kind","message"}}` with status 502;
//! `GET /invalidate` → `{"dropped":bool}` for the current credential; `GET /connection-string` →
//! `{"connection_string"}`, the secret itself, for the test to hand to libpq (test only).

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        path: "../../wit",
        world: "lakebase:postgres/credentials-consumer",
    });
}

use bindings::lakebase::postgres::credentials;
use spin_sdk::http::{Request, StatusCode};

fn reply(status: StatusCode, body: serde_json::Value) -> anyhow::Result<http::Response<String>> {
    Ok(http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())?)
}

// A fixture, not the library: it may read the clock.
#[allow(clippy::disallowed_methods)]
fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<http::Response<String>> {
    let credential = match credentials::get().await {
        Ok(c) => c,
        Err(e) => {
            return reply(
                StatusCode::BAD_GATEWAY,
                serde_json::json!({ "error": { "kind": format!("{:?}", e.kind), "message": e.message } }),
            );
        }
    };
    match req.uri().path() {
        "/credential" => {
            let source = match credential.source {
                credentials::Source::Memory => "memory",
                credentials::Source::Kv => "kv",
                credentials::Source::Minted => "minted",
            };
            reply(
                StatusCode::OK,
                serde_json::json!({
                    "user": credential.user,
                    "host": credential.host,
                    "port": credential.port,
                    "database": credential.database,
                    "source": source,
                    "expires_in_s": credential.expires_at - now_s(),
                    // Only the TLS mode of the connection string (the rest holds the password).
                    "sslmode": credential
                        .connection_string
                        .split(['?', '&'])
                        .find_map(|p| p.strip_prefix("sslmode=")),
                }),
            )
        }
        // Test only: the whole connection string (a secret) for the test to hand to libpq.
        "/connection-string" => reply(
            StatusCode::OK,
            serde_json::json!({ "connection_string": credential.connection_string }),
        ),
        "/invalidate" => {
            let dropped = credentials::invalidate(credential.password.clone()).await;
            reply(StatusCode::OK, serde_json::json!({ "dropped": dropped }))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "not found" }),
        ),
    }
}
