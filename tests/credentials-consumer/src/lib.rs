//! A component that uses the plugin's `lakebase:postgres/credentials` interface directly, the way
//! a client that opens its own connections would: `get` a credential, log in with its connection
//! string through plain `spin_sdk::pg`, `invalidate` it when the server rejects it.
//!
//! Routes (JSON out): `GET /credential` → `{"user","host","port","database","source",
//! "expires_in_s","reuse_in_s","current_user"}` (never the password); `GET /invalidate` →
//! `{"dropped":bool}` for the current credential.

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

// An app, not the library: it may read the clock (the rule is for the core's expiry logic).
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
            let conn =
                match spin_sdk::pg::Connection::open(credential.connection_string.clone()).await {
                    Ok(c) => c,
                    Err(e) => {
                        // A rejected token: tell the plugin, so that the next `get` mints anew.
                        let dropped = credentials::invalidate(credential.password.clone()).await;
                        return reply(
                            StatusCode::BAD_GATEWAY,
                            serde_json::json!({ "error": e.to_string(), "invalidated": dropped }),
                        );
                    }
                };
            let rows = conn
                .query("SELECT current_user::text AS u", [])
                .await?
                .collect()
                .await?;
            let user = rows.first().and_then(|r| r.get::<String>("u"));
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
                    "reuse_in_s": credential.reuse_until - now_s(),
                    "current_user": user,
                }),
            )
        }
        "/invalidate" => {
            let dropped = credentials::invalidate(credential.password).await;
            reply(StatusCode::OK, serde_json::json!({ "dropped": dropped }))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no such route" }),
        ),
    }
}
