//! The notes API apart from its host: routes, request validation, SQL and JSON shapes, errors.
//! The Spin build (`examples/notes-app`) and the standard-WASI build (`examples/notes-wasi`)
//! differ only in how they read requests and run queries, so they answer alike.
//!
//! Routes (JSON in and out):
//! - `GET /health` → `{"status":"ok","database":{…},"credential":{"source","expires_in_s","reused_until_s"}}`
//! - `POST /notes` `{"text":"…"}` → 201 note; `GET /notes?limit=N`; `GET /notes/{id}`; `DELETE /notes/{id}`
//!
//! Every error is `{"error":{"kind":…,"message":…}}` with a fitting status; never an empty 500.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use lakebase::{Credential, CredentialSource, Error, ErrorKind};
use serde::Deserialize;
use serde_json::{Value, json};

/// Default and maximum `limit` of `GET /notes`.
pub const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;
/// Longest note accepted, in characters.
const MAX_TEXT: usize = 10_000;
/// The largest request body read: `text` of 10,000 characters of up to 4 bytes, JSON-escaped
/// at most 6 bytes each, plus some room.
pub const MAX_BODY: usize = 64 * 1024;

/// Creates the table (once per instance, on first use).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS notes (
    id bigserial PRIMARY KEY,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())";
/// Columns of a note as JSON-ready values (the timestamp as RFC 3339 text, UTC).
const NOTE_COLUMNS: &str = "id, text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at";

/// The user and server version (`user`, `version`, both text).
pub const HEALTH_QUERY: &str =
    "SELECT current_user::text AS user, current_setting('server_version') AS version";
/// `$1` text → the new note's columns.
pub fn insert_note() -> String {
    format!("INSERT INTO notes (text) VALUES ($1) RETURNING {NOTE_COLUMNS}")
}
/// `$1` id (int8) → the note's columns.
pub fn select_note() -> String {
    format!("SELECT {NOTE_COLUMNS} FROM notes WHERE id = $1")
}
/// `$1` limit (int8) → the newest notes' columns.
pub fn list_notes() -> String {
    format!("SELECT {NOTE_COLUMNS} FROM notes ORDER BY id DESC LIMIT $1")
}
/// `$1` id (int8).
pub const DELETE_NOTE: &str = "DELETE FROM notes WHERE id = $1";

/// `query` made to return at least one row: `query`'s rows, or one row of NULLs when it has
/// none (so a row whose `id` is NULL means "no note"). For the WASIp2 app: on Spin 4.0.0 to
/// 4.0.2 (SpinKube's shim 0.25 runs 4.0.1) the synchronous `spin:postgres` `query` never
/// returns when a statement matches no rows (spinframework/spin#3671, fixed by #3673 after
/// 4.0.2), and a synchronous host call cannot be given up from the guest. Order by `id` again
/// outside (a join does not promise the subquery's order).
pub fn at_least_one_row(query: &str) -> String {
    format!("SELECT q.* FROM (SELECT 1) AS one LEFT JOIN ({query}) AS q ON true ORDER BY q.id DESC")
}

/// Whether the table is known to exist in this instance.
static TABLE_READY: AtomicBool = AtomicBool::new(false);

/// Creates the table with `create` (running [`CREATE_TABLE`]) the first time in this instance.
/// Another instance creating it at the same moment is not an error: Postgres's `IF NOT EXISTS`
/// is not atomic, and the loser fails on the catalog's unique index (23505), on the table's row
/// type (`type "notes" already exists`, 42710: seen on Spin under the fault matrix's 8
/// concurrent first writes) or finds the table (42P07). Either way the table is there.
pub async fn ensure_table<F: Future<Output = Result<(), Error>>>(
    create: impl FnOnce() -> F,
) -> Result<(), Failure> {
    if TABLE_READY.load(Ordering::Relaxed) {
        return Ok(());
    }
    if let Err(e) = create().await
        && !matches!(e.sqlstate(), Some("23505" | "42710" | "42P07"))
    {
        return Err(e.into());
    }
    TABLE_READY.store(true, Ordering::Relaxed);
    Ok(())
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`.
    Health,
    /// `POST /notes`: the body is needed.
    Create,
    /// `GET /notes?limit=N`.
    List {
        /// How many, newest first.
        limit: i64,
    },
    /// `GET /notes/{id}`.
    Get(i64),
    /// `DELETE /notes/{id}`.
    Delete(i64),
}

/// The route of `method` on `path` with `query` (the part after `?`).
pub fn route(method: &str, path: &str, query: &str) -> Result<Route, Failure> {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        ("GET", ["health"]) => Ok(Route::Health),
        ("POST", ["notes"]) => Ok(Route::Create),
        ("GET", ["notes"]) => Ok(Route::List {
            limit: parse_limit(query)?,
        }),
        ("GET", ["notes", id]) => Ok(Route::Get(parse_id(id)?)),
        ("DELETE", ["notes", id]) => Ok(Route::Delete(parse_id(id)?)),
        (_, ["health"] | ["notes"] | ["notes", _]) => Err(Failure {
            status: 405,
            kind: "bad_request",
            message: format!("method {method} is not allowed on {path}"),
        }),
        _ => Err(Failure::not_found(format!(
            "no route for {method} {path}: try GET /health, POST /notes, GET /notes, GET /notes/{{id}} or DELETE /notes/{{id}}"
        ))),
    }
}

/// An error answer: who must act (`kind`), what to do (`message`), and the status.
#[derive(Debug)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// `bad_request`, `not_found`, or a library error kind.
    pub kind: &'static str,
    /// What to do.
    pub message: String,
}

impl Failure {
    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Failure {
            status: 400,
            kind: "bad_request",
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Failure {
            status: 404,
            kind: "not_found",
            message: message.into(),
        }
    }

    /// A 413: the body is larger than [`MAX_BODY`].
    pub fn too_large() -> Self {
        Failure {
            status: 413,
            kind: "bad_request",
            message: format!("the request body must be at most {} KB", MAX_BODY / 1024),
        }
    }

    /// `{"error":{"kind":…,"message":…}}`.
    pub fn json(&self) -> Value {
        json!({ "error": { "kind": self.kind, "message": self.message } })
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        // Errors from the library are about configuration or upstream services, never about the
        // client's request: a missing endpoint is a 502, not a 404.
        let status = match e.kind() {
            ErrorKind::Configuration => 500,
            ErrorKind::Unavailable => 503,
            _ => 502,
        };
        eprintln!("notes: {} error: {e}", e.kind());
        Failure {
            status,
            kind: e.kind().as_str(),
            message: e.to_string(),
        }
    }
}

/// A body whose `content-length` already says it is too large is refused before it is read.
pub fn check_content_length(content_length: Option<&str>) -> Result<(), Failure> {
    match content_length.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) if n > MAX_BODY as u64 => Err(Failure::too_large()),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct NewNote {
    text: Option<Value>,
}

/// The text of a `POST /notes` body.
pub fn new_note_text(body: &[u8]) -> Result<String, Failure> {
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
    Ok(text)
}

/// A note as JSON (a column the row did not have is `null`).
pub fn note_json(id: Option<i64>, text: Option<String>, created_at: Option<String>) -> Value {
    json!({ "id": id, "text": text, "created_at": created_at })
}

/// `{"notes": […]}`.
pub fn notes_json(notes: Vec<Value>) -> Value {
    json!({ "notes": notes })
}

/// The `GET /health` answer for a login as `user` to a server of `version`, at `now` (Unix s).
pub fn health_json(
    user: Option<String>,
    version: Option<String>,
    credential: &Credential,
    source: CredentialSource,
    now: i64,
) -> Value {
    json!({
        "status": "ok",
        "database": {
            "user": user,
            "server_version": version,
            "host": credential.host,
            "database": credential.database,
        },
        "credential": {
            "source": source.as_str(),
            "expires_in_s": (credential.expires_at.timestamp() - now).max(0),
            "reused_until_s": (credential.reuse_until().timestamp() - now).max(0),
        }
    })
}

/// The error of a health query that returned no row.
pub fn no_health_row() -> Failure {
    Failure::from(Error::from_message(
        ErrorKind::Database,
        "the health query returned no row",
    ))
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
    match url_param(query, "limit") {
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
    fn losing_the_table_creation_race_is_not_an_error() {
        // One test touches TABLE_READY: the refused creations come first, then the flag is set.
        let refused = |code: &'static str| {
            move || {
                std::future::ready(Err(Error::from_message(
                    ErrorKind::Database,
                    "the database refused the query: no",
                )
                .with_sqlstate(code)))
            }
        };
        let run = |f| futures::executor::block_on(f);
        assert!(run(ensure_table(refused("42501"))).is_err());
        assert!(!TABLE_READY.load(Ordering::Relaxed));
        for code in ["23505", "42710", "42P07"] {
            TABLE_READY.store(false, Ordering::Relaxed);
            assert!(run(ensure_table(refused(code))).is_ok(), "{code}");
            assert!(TABLE_READY.load(Ordering::Relaxed));
        }
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("").ok(), Some(50));
        assert_eq!(parse_limit("limit=7").ok(), Some(7));
        assert_eq!(parse_limit("x=1&limit=500").ok(), Some(500));
        for bad in ["limit=0", "limit=501", "limit=abc", "limit=", "limit=-1"] {
            let f = parse_limit(bad).unwrap_err();
            assert_eq!(f.status, 400, "{bad}");
            assert!(f.message.contains("`limit`"));
        }
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("12").ok(), Some(12));
        for bad in ["0", "-3", "abc", ""] {
            assert_eq!(parse_id(bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/health/", "").unwrap(), Route::Health);
        assert_eq!(route("POST", "/notes", "").unwrap(), Route::Create);
        assert_eq!(
            route("GET", "/notes", "limit=3").unwrap(),
            Route::List { limit: 3 }
        );
        assert_eq!(route("GET", "/notes/7", "").unwrap(), Route::Get(7));
        assert_eq!(route("DELETE", "/notes/7", "").unwrap(), Route::Delete(7));
        assert_eq!(route("PUT", "/notes", "").unwrap_err().status, 405);
        assert_eq!(route("GET", "/nope", "").unwrap_err().status, 404);
    }

    #[test]
    fn bodies() {
        assert_eq!(new_note_text(br#"{"text":"hi"}"#).unwrap(), "hi");
        for (bad, says) in [
            (&b"nope"[..], "must be JSON"),
            (br#"{"text":""}"#, "must not be empty"),
            (br#"{"text":1}"#, "must be a string"),
            (br#"{}"#, "`text` field"),
            (br#"{"text":"a\u0000b"}"#, "NUL"),
        ] {
            assert!(
                new_note_text(bad).unwrap_err().message.contains(says),
                "{says}"
            );
        }
        assert_eq!(check_content_length(Some("65537")).unwrap_err().status, 413);
        assert!(check_content_length(Some("65536")).is_ok());
        assert!(check_content_length(None).is_ok());
    }

    #[test]
    fn library_errors_map_to_upstream_statuses() {
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
            assert_eq!(f.status, status, "{kind}");
            assert_eq!(f.kind, kind.as_str());
        }
    }
}
