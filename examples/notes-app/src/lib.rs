//! Demo Spin app: a notes API on Lakebase Postgres, logging in with cached OAuth credentials.
//!
//! Routes (JSON in and out):
//! - `GET /health` → `{"status":"ok","database":{…},"credential":{"source","expires_in_s"}}`
//! - `POST /notes` `{"text":"…"}` → 201 note; `GET /notes?limit=N`; `GET /notes/{id}`; `DELETE /notes/{id}`
//!
//! Every error is `{"error":{"kind":…,"message":…}}` with a fitting status; never an empty 500.

use std::sync::atomic::{AtomicBool, Ordering};

use lakebase_spin::host::Clock as _;
use lakebase_spin::spin::{SpinPg, lakebase};
use lakebase_spin::{Connected, ErrorKind};
use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{Method, Request, StatusCode};
use spin_sdk::pg::{Connection, ParameterValue, Row};

/// Default and maximum `limit` of `GET /notes`.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;
/// Longest note accepted, in characters.
const MAX_TEXT: usize = 10_000;
/// The largest request body read: `text` of 10,000 characters of up to 4 bytes, JSON-escaped
/// at most 6 bytes each, plus some room.
const MAX_BODY: usize = 64 * 1024;

/// The table is created once per instance, on first use.
static TABLE_READY: AtomicBool = AtomicBool::new(false);

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS notes (
    id bigserial PRIMARY KEY,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())";
/// Columns of a note as JSON-ready values (the timestamp as RFC 3339 text, UTC).
const NOTE_COLUMNS: &str = "id, text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at";

type Reply = (StatusCode, Value);

/// An error answer: who must act (`kind`), what to do (`message`), and the status.
struct Failure {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Failure {
    fn bad_request(message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
        }
    }
}

impl From<lakebase_spin::Error> for Failure {
    fn from(e: lakebase_spin::Error) -> Self {
        // Errors from the library are about configuration or upstream services, never about the
        // client's request: a missing endpoint is a 502, not a 404.
        let status = match e.kind() {
            ErrorKind::Configuration => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        eprintln!("notes: {} error: {e}", e.kind());
        Failure {
            status,
            kind: e.kind().as_str(),
            message: e.to_string(),
        }
    }
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<http::Response<String>> {
    let (status, body) = match route(req).await {
        Ok(reply) => reply,
        Err(f) => (
            f.status,
            json!({ "error": { "kind": f.kind, "message": f.message } }),
        ),
    };
    let body = if status == StatusCode::NO_CONTENT {
        String::new()
    } else {
        body.to_string()
    };
    let mut response = http::Response::builder().status(status);
    if status != StatusCode::NO_CONTENT {
        response = response.header("content-type", "application/json");
    }
    Ok(response.body(body)?)
}

async fn route(req: Request) -> Result<Reply, Failure> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => health().await,
        (&Method::POST, ["notes"]) => {
            let body = read_body(req).await?;
            create_note(&body).await
        }
        (&Method::GET, ["notes"]) => list_notes(&query).await,
        (&Method::GET, ["notes", id]) => get_note(parse_id(id)?).await,
        (&Method::DELETE, ["notes", id]) => delete_note(parse_id(id)?).await,
        (_, ["health"] | ["notes"] | ["notes", _]) => Err(Failure {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "bad_request",
            message: format!("method {method} is not allowed on {path}"),
        }),
        _ => Err(Failure::not_found(format!(
            "no route for {method} {path}: try GET /health, POST /notes, GET /notes, GET /notes/{{id}} or DELETE /notes/{{id}}"
        ))),
    }
}

fn too_large() -> Failure {
    Failure {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        kind: "bad_request",
        message: format!("the request body must be at most {} KB", MAX_BODY / 1024),
    }
}

/// The request body, refused with 413 as soon as it is known to exceed [`MAX_BODY`]: from its
/// `content-length`, else while it streams in (never read whole first).
async fn read_body(req: Request) -> Result<Vec<u8>, Failure> {
    if req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut chunks = req.into_body().stream();
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        let chunk = chunk.map_err(|_| Failure::bad_request("could not read the request body"))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Connects (with a cached or fresh credential) and makes sure the table exists.
async fn connect() -> Result<Connected<Connection>, Failure> {
    let db = lakebase().await?.connect(&SpinPg).await?;
    if !TABLE_READY.load(Ordering::Relaxed) {
        match db.connection.execute(CREATE_TABLE, &[]).await {
            Ok(_) => {}
            // Two instances creating the table at once: Postgres's `IF NOT EXISTS` is not atomic
            // and the loser fails on the catalog's unique index (23505) or finds the table
            // (42P07). Either way the table is there.
            Err(e) => {
                let e = lakebase_spin::Error::from(e);
                if !matches!(e.sqlstate(), Some("23505" | "42P07")) {
                    return Err(e.into());
                }
            }
        }
        TABLE_READY.store(true, Ordering::Relaxed);
    }
    Ok(db)
}

async fn health() -> Result<Reply, Failure> {
    let lb = lakebase().await?;
    let db = lb.connect(&SpinPg).await?;
    let rows = query(
        &db.connection,
        "SELECT current_user::text AS user, current_setting('server_version') AS version",
        vec![],
    )
    .await?;
    let row = rows.first().ok_or_else(|| {
        Failure::from(lakebase_spin::Error::from_message(
            ErrorKind::Database,
            "the health query returned no row",
        ))
    })?;
    let now = chrono_now();
    Ok((
        StatusCode::OK,
        json!({
            "status": "ok",
            "database": {
                "user": row.get::<String>("user"),
                "server_version": row.get::<String>("version"),
                "host": db.credential.host,
                "database": db.credential.database,
            },
            "credential": {
                "source": db.source.as_str(),
                "expires_in_s": (db.credential.expires_at.timestamp() - now).max(0),
                "reused_until_s": (db.credential.reuse_until().timestamp() - now).max(0),
            }
        }),
    ))
}

/// Unix seconds now, from the host's wall clock.
fn chrono_now() -> i64 {
    lakebase_spin::SystemClock.now().timestamp()
}

#[derive(Deserialize)]
struct NewNote {
    text: Option<Value>,
}

async fn create_note(body: &[u8]) -> Result<Reply, Failure> {
    let input: NewNote = serde_json::from_slice(body)
        .map_err(|_| Failure::bad_request("the body must be JSON like {\"text\": \"…\"}"))?;
    let text = match input.text {
        Some(Value::String(s)) if s.contains('\0') => {
            return Err(Failure::bad_request(
                "`text` must not contain the NUL character (\\u0000): Postgres text cannot hold it",
            ));
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => return Err(Failure::bad_request("`text` must not be empty")),
        Some(_) => return Err(Failure::bad_request("`text` must be a string")),
        None => return Err(Failure::bad_request("the body must have a `text` field")),
    };
    if text.chars().count() > MAX_TEXT {
        return Err(Failure::bad_request(format!(
            "`text` must be at most {MAX_TEXT} characters"
        )));
    }
    let db = connect().await?;
    let rows = query(
        &db.connection,
        &format!("INSERT INTO notes (text) VALUES ($1) RETURNING {NOTE_COLUMNS}"),
        vec![ParameterValue::Str(text)],
    )
    .await?;
    let note = rows
        .first()
        .map(note_json)
        .ok_or_else(|| Failure::bad_request("insert returned no row"))?;
    Ok((StatusCode::CREATED, note))
}

async fn get_note(id: i64) -> Result<Reply, Failure> {
    let db = connect().await?;
    let rows = query(
        &db.connection,
        &format!("SELECT {NOTE_COLUMNS} FROM notes WHERE id = $1"),
        vec![ParameterValue::Int64(id)],
    )
    .await?;
    match rows.first() {
        Some(row) => Ok((StatusCode::OK, note_json(row))),
        None => Err(Failure::not_found(format!("note {id} does not exist"))),
    }
}

async fn list_notes(query_string: &str) -> Result<Reply, Failure> {
    let limit = parse_limit(query_string)?;
    let db = connect().await?;
    let rows = query(
        &db.connection,
        &format!("SELECT {NOTE_COLUMNS} FROM notes ORDER BY id DESC LIMIT $1"),
        vec![ParameterValue::Int64(limit)],
    )
    .await?;
    Ok((
        StatusCode::OK,
        json!({ "notes": rows.iter().map(note_json).collect::<Vec<_>>() }),
    ))
}

async fn delete_note(id: i64) -> Result<Reply, Failure> {
    let db = connect().await?;
    let deleted = db
        .connection
        .execute(
            "DELETE FROM notes WHERE id = $1",
            &[ParameterValue::Int64(id)],
        )
        .await
        .map_err(lakebase_spin::Error::from)?;
    if deleted == 0 {
        return Err(Failure::not_found(format!("note {id} does not exist")));
    }
    Ok((StatusCode::NO_CONTENT, Value::Null))
}

async fn query(
    conn: &Connection,
    sql: &str,
    params: Vec<ParameterValue>,
) -> Result<Vec<Row>, Failure> {
    let result = conn
        .query(sql, params)
        .await
        .map_err(lakebase_spin::Error::from)?;
    Ok(result.collect().await.map_err(lakebase_spin::Error::from)?)
}

fn note_json(row: &Row) -> Value {
    json!({
        "id": row.get::<i64>("id"),
        "text": row.get::<String>("text"),
        "created_at": row.get::<String>("created_at"),
    })
}

fn parse_id(text: &str) -> Result<i64, Failure> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(Failure::bad_request(format!(
            "note id must be a positive integer, not `{text}`"
        ))),
    }
}

/// `limit=N` from the query string: default 50, from 1 to 500.
fn parse_limit(query: &str) -> Result<i64, Failure> {
    let raw = url_param(query, "limit");
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Failure::bad_request(format!(
                "`limit` must be an integer from 1 to {MAX_LIMIT}, not `{v}`"
            ))),
        },
    }
}

fn url_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit("").ok(), Some(50));
        assert_eq!(parse_limit("limit=7").ok(), Some(7));
        assert_eq!(parse_limit("x=1&limit=500").ok(), Some(500));
        for bad in ["limit=0", "limit=501", "limit=abc", "limit=", "limit=-1"] {
            let f = parse_limit(bad).unwrap_err();
            assert_eq!(f.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(f.message.contains("`limit`"));
        }
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("12").ok(), Some(12));
        for bad in ["0", "-3", "abc", ""] {
            assert_eq!(parse_id(bad).unwrap_err().status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn library_errors_map_to_upstream_statuses() {
        use lakebase_spin::Error;
        let cases = [
            (ErrorKind::Configuration, 500),
            (ErrorKind::WorkspaceAuth, 502),
            (ErrorKind::Permission, 502),
            (ErrorKind::NotFound, 502),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Database, 502),
            (ErrorKind::BadRequest, 502),
        ];
        for (kind, status) in cases {
            let f = Failure::from(Error::from_message(kind, "x"));
            assert_eq!(f.status.as_u16(), status, "{kind}");
            assert_eq!(f.kind, kind.as_str());
        }
    }
}
