//! The demo notes API for standard-WASI hosts (wasmCloud v2, `wasmtime serve`): the same routes,
//! JSON and errors as the Spin app (both are `lakebase-notes-core`), served through
//! `wasi:http/incoming-handler@0.2`, configured by `wasi:config`, caching in `wasi:keyvalue`,
//! with Postgres spoken in the component over `wasi:sockets` (`lakebase-wasi`).

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use futures::TryStreamExt as _;
use lakebase::Connected;
use lakebase::host::{Clock as _, Vars as _};
use lakebase_notes_core::{self as notes, Failure, Route};
use lakebase_wasi::{WasiClock, WasiVars, database_error};
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, SimpleQueryMessage};
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Notes);

struct Notes;

impl wasip2::exports::http::incoming_handler::Guest for Notes {
    /// Answers, then refreshes the credential when it is due (after the client has its answer).
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        lakebase_wasi::serve_then_refresh(serve(request), |reply| {
            let (status, body) = match reply {
                Ok(reply) => reply,
                Err(f) => (f.status, f.json()),
            };
            respond(response_out, status, body);
        });
    }
}

fn respond(out: ResponseOutparam, status: u16, body: Value) {
    let headers: &[(String, Vec<u8>)] = if status == 204 {
        &[]
    } else {
        &[("content-type".to_owned(), b"application/json".to_vec())]
    };
    let response =
        OutgoingResponse::new(Fields::from_list(headers).unwrap_or_else(|_| Fields::new()));
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if status != 204
        && let Ok(mut stream) = outgoing.write()
    {
        let _ = stream
            .write_all(body.to_string().as_bytes())
            .and_then(|()| std::io::Write::flush(&mut stream));
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

async fn serve(request: IncomingRequest) -> Result<(u16, Value), Failure> {
    let method = match request.method() {
        Method::Get => "GET".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Other(m) => m,
    };
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path.starts_with("/_test/")
        && let Some(reply) = session_probe(&method, path).await
    {
        return reply;
    }
    match notes::route(&method, path, query)? {
        Route::Health => health().await,
        Route::Create => {
            let text = notes::new_note_text(&read_body(&request)?)?;
            let db = connect().await?;
            let rows = last_query(
                &db.connection,
                &notes::insert_note(),
                &[(&text, Type::TEXT)],
            )
            .await?;
            let note = rows
                .first()
                .map(note_json)
                .ok_or_else(|| Failure::bad_request("insert returned no row"))?;
            Ok((201, note))
        }
        Route::List { limit } => {
            let db = connect().await?;
            let rows = last_query(
                &db.connection,
                &notes::list_notes(),
                &[(&limit, Type::INT8)],
            )
            .await?;
            Ok((200, notes::notes_json(rows.iter().map(note_json).collect())))
        }
        Route::Get(id) => {
            let db = connect().await?;
            let rows =
                last_query(&db.connection, &notes::select_note(), &[(&id, Type::INT8)]).await?;
            match rows.first() {
                Some(row) => Ok((200, note_json(row))),
                None => Err(Failure::not_found(format!("note {id} does not exist"))),
            }
        }
        Route::Delete(id) => {
            let db = connect().await?;
            let client = &db.connection;
            let delete = async {
                let rows = client
                    .query_typed_raw(notes::DELETE_NOTE, [(id, Type::INT8)])
                    .await?;
                let mut rows = std::pin::pin!(rows);
                while rows.try_next().await?.is_some() {}
                Ok::<_, tokio_postgres::Error>(rows.rows_affected())
            };
            let deleted = lakebase_wasi::last_use(client, delete)
                .await
                .map_err(|e| database_error(&e))?;
            if deleted == Some(0) {
                return Err(Failure::not_found(format!("note {id} does not exist")));
            }
            Ok((204, Value::Null))
        }
    }
}

/// The request body, refused with 413 as soon as it is known to exceed the limit: from its
/// `content-length`, else while it streams in (never read whole first).
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, Failure> {
    let length = request.headers().get("content-length");
    let length = length.first().and_then(|v| std::str::from_utf8(v).ok());
    notes::check_content_length(length)?;
    let unreadable = || Failure::bad_request("could not read the request body");
    let incoming = request.consume().map_err(|()| unreadable())?;
    let stream = incoming.stream().map_err(|()| unreadable())?;
    let mut body = Vec::new();
    // One byte more than the limit tells a body that is too large.
    let read = stream
        .take(notes::MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    read.map_err(|_| unreadable())?;
    if body.len() > notes::MAX_BODY {
        return Err(Failure::too_large());
    }
    Ok(body)
}

/// Connects (with a cached or fresh credential) and makes sure the table exists.
async fn connect() -> Result<Connected<Arc<Client>>, Failure> {
    let db = lakebase_wasi::connect().await?;
    notes::ensure_table(|| async {
        let created = db.connection.execute(notes::CREATE_TABLE, &[]).await;
        created.map(drop).map_err(|e| database_error(&e))
    })
    .await?;
    Ok(db)
}

async fn health() -> Result<(u16, Value), Failure> {
    let db = lakebase_wasi::connect().await?;
    let rows = last_query(&db.connection, notes::HEALTH_QUERY, &[]).await?;
    let row = rows.first().ok_or_else(notes::no_health_row)?;
    let now = WasiClock.now().timestamp();
    Ok((
        200,
        notes::health_json(
            row.try_get("user").ok(),
            row.try_get("version").ok(),
            &db.credential,
            db.source,
            now,
        ),
    ))
}

/// Runs `sql` as the request's last statement, in one round trip: parsed, bound and run in
/// one flight as an unnamed statement (`query_typed`, so the parameters' types are given here
/// and nothing is left to close), with the session's reset right behind it
/// (`lakebase_wasi::last_use`), so that the instance's next request takes the connection
/// without a round trip of its own. (A text `query` after a reset at the start of a request
/// costs three: reset, prepare, run.)
async fn last_query(
    client: &Arc<Client>,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<Row>, Failure> {
    let rows = lakebase_wasi::last_use(client, client.query_typed(sql, params)).await;
    Ok(rows.map_err(|e| database_error(&e))?)
}

fn note_json(row: &Row) -> Value {
    notes::note_json(
        row.try_get("id").ok(),
        row.try_get("text").ok(),
        row.try_get("created_at").ok(),
    )
}

// ---- test aid ----------------------------------------------------------------------------------

/// The `wasi:config` value that turns the session probe on: `notes_test_routes=true`.
const TEST_ROUTES: &str = "notes_test_routes";

/// A test aid, not part of the notes API, answered only when `wasi:config` has
/// `notes_test_routes=true` (else `None`: the path is routed as usual, to a 404). It looks at and
/// dirties the instance's kept Postgres session, for the tests that prove one request's session
/// state does not reach the next (`tests/e2e/tests/wasi.rs`):
/// - `GET /_test/session`: this session's state ([`SESSION_STATE`]);
/// - `POST /_test/session/dirty`: leaves `SET`s, a temporary table, a held cursor, a session
///   advisory lock and a `LISTEN` behind, and a transaction open with more of them; answers the
///   state it leaves;
/// - `POST /_test/session/failed`: leaves a failed transaction behind.
async fn session_probe(method: &str, path: &str) -> Option<Result<(u16, Value), Failure>> {
    let on = WasiVars.get(TEST_ROUTES).await.ok().flatten();
    if on.as_deref() != Some("true") {
        return None;
    }
    Some(match (method, path) {
        ("GET", "/_test/session") => session_state().await.map(|state| (200, state)),
        ("POST", "/_test/session/dirty") => dirty_session().await,
        ("POST", "/_test/session/failed") => failed_session().await,
        _ => return None,
    })
}

/// The session's state as text, one simple query (so that an open transaction shows: only a
/// transaction begun by an earlier message started before this statement).
const SESSION_STATE: &str = "SELECT pg_catalog.pg_backend_pid() AS pid, \
    pg_catalog.statement_timestamp() <> pg_catalog.transaction_timestamp() AS in_transaction, \
    pg_catalog.current_setting('statement_timeout') AS statement_timeout, \
    pg_catalog.current_setting('search_path') AS search_path, \
    pg_catalog.current_setting('work_mem') AS work_mem, \
    (SELECT count(*) FROM pg_catalog.pg_class \
      WHERE relnamespace = pg_catalog.pg_my_temp_schema()) AS temp_relations, \
    (SELECT count(*) FROM pg_catalog.pg_cursors) AS cursors, \
    (SELECT count(*) FROM pg_catalog.pg_locks \
      WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) AS advisory_locks, \
    (SELECT count(*) FROM pg_catalog.pg_listening_channels()) AS listening";

async fn session_state() -> Result<Value, Failure> {
    let db = lakebase_wasi::connect().await?;
    let messages = db
        .connection
        .simple_query(SESSION_STATE)
        .await
        .map_err(|e| database_error(&e))?;
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| Failure::bad_request("the session query returned no row"))?;
    let state = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name().to_owned(), row.get(i).into()))
        .collect();
    Ok(Value::Object(state))
}

async fn dirty_session() -> Result<(u16, Value), Failure> {
    let db = lakebase_wasi::connect().await?;
    // Two messages: in one, the BEGIN would take the session-level part into its transaction.
    for sql in [
        "SET statement_timeout = '4321'; SET search_path = pg_catalog, public; \
         CREATE TEMP TABLE notes_probe (x int); SELECT pg_advisory_lock(4242); \
         LISTEN notes_probe; DECLARE notes_probe_held CURSOR WITH HOLD FOR SELECT 1",
        "BEGIN; SET LOCAL work_mem = '7MB'; CREATE TEMP TABLE notes_probe_tx (x int); \
         DECLARE notes_probe_cursor CURSOR FOR SELECT 1; SELECT pg_advisory_xact_lock(4243)",
    ] {
        db.connection
            .batch_execute(sql)
            .await
            .map_err(|e| database_error(&e))?;
    }
    Ok((200, session_state().await?))
}

async fn failed_session() -> Result<(u16, Value), Failure> {
    let db = lakebase_wasi::connect().await?;
    db.connection
        .batch_execute("BEGIN; SET LOCAL work_mem = '6MB'")
        .await
        .map_err(|e| database_error(&e))?;
    let failed = db.connection.batch_execute("SELECT 1/0").await.is_err();
    // In a failed transaction every statement but its end is refused with 25P02.
    let refused = match db.connection.simple_query("SELECT 1").await {
        Err(e) => e.code().map(|c| c.code().to_owned()),
        Ok(_) => None,
    };
    Ok((
        200,
        serde_json::json!({ "failed": failed, "then": refused }),
    ))
}
