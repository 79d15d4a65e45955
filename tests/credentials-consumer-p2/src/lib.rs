//! A WASIp2 Spin component (spin-sdk 5.2) that uses the WASIp2 plugin's
//! `lakebase:postgres-p2/credentials-sync` interface directly, the way a client that opens its
//! own connections would: `get` a credential, log in with its connection string through plain
//! `spin_sdk::pg4`, `invalidate` it when the server rejects it. The synchronous sibling of
//! `tests/credentials-consumer`.
//!
//! Routes (JSON out): `GET /credential` → `{"user","host","port","database","source",
//! "expires_in_s","reuse_in_s","current_user"}` (never the password or connection string);
//! `GET /invalidate` → `{"dropped":bool}` for the current credential.
//!
//! Errors: `{"error":kind,"message":…}`, `kind` the library's lower-case name
//! (`workspace_auth`, …), status 500 (configuration), 503 (unavailable), 404 (no such route),
//! else 502.

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        path: "../../wit/p2",
        world: "lakebase:postgres-p2/credentials-sync-consumer",
    });
}

use bindings::lakebase::postgres_p2::credentials_sync as credentials;
use credentials::ErrorKind;
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::pg4::{Connection, DbValue};

type Reply = (u16, serde_json::Value);

fn fail(status: u16, kind: &str, message: impl std::fmt::Display) -> Reply {
    (
        status,
        serde_json::json!({ "error": kind, "message": message.to_string() }),
    )
}

/// The library's stable name of a kind (`ErrorKind::as_str`) and the answer's status.
fn kind(kind: ErrorKind) -> (&'static str, u16) {
    match kind {
        ErrorKind::Configuration => ("configuration", 500),
        ErrorKind::WorkspaceAuth => ("workspace_auth", 502),
        ErrorKind::Permission => ("permission", 502),
        ErrorKind::NotFound => ("not_found", 502),
        ErrorKind::Unavailable => ("unavailable", 503),
        ErrorKind::Database => ("database", 502),
        ErrorKind::BadRequest => ("bad_request", 502),
    }
}

// An app, not the library: it may read the clock (the rule is for the core's expiry logic).
#[allow(clippy::disallowed_methods)]
fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
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

fn route(req: &IncomingRequest) -> Result<Reply, Reply> {
    let path_and_query = req.path_with_query().unwrap_or_default();
    let path = path_and_query.split('?').next().unwrap_or_default();
    if !matches!(path, "/credential" | "/invalidate") {
        return Err(fail(404, "not_found", "no such route"));
    }
    let credential = credentials::get().map_err(|e| {
        let (kind, status) = kind(e.kind);
        fail(status, kind, e.message)
    })?;
    if path == "/invalidate" {
        let dropped = credentials::invalidate(&credential.password);
        return Ok((200, serde_json::json!({ "dropped": dropped })));
    }
    // The host's message is not the plugin's: scrub the secrets from it all the same.
    let scrub = |e: &dyn std::fmt::Debug| {
        format!("{e:?}")
            .replace(&credential.connection_string, "[connection string]")
            .replace(&credential.password, "[password]")
    };
    let conn = match Connection::open(&credential.connection_string) {
        Ok(c) => c,
        Err(e) => {
            // A rejected token: tell the plugin, so that the next `get` mints anew.
            let dropped = credentials::invalidate(&credential.password);
            let (status, mut body) = fail(502, "database", scrub(&e));
            body["invalidated"] = dropped.into();
            return Err((status, body));
        }
    };
    let set = conn
        .query("SELECT current_user::text AS u", &[])
        .map_err(|e| fail(502, "database", scrub(&e)))?;
    let current_user = match set.rows.first().and_then(|r| r.first()) {
        Some(DbValue::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let source = match credential.source {
        credentials::Source::Memory => "memory",
        credentials::Source::Kv => "kv",
        credentials::Source::Minted => "minted",
    };
    let now = now_s();
    Ok((
        200,
        serde_json::json!({
            "user": credential.user,
            "host": credential.host,
            "port": credential.port,
            "database": credential.database,
            "source": source,
            "expires_in_s": credential.expires_at - now,
            "reuse_in_s": credential.reuse_until - now,
            "current_user": current_user,
        }),
    ))
}
