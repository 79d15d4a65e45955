//! Demo WASIp2 Spin app (spin-sdk 5.2, `spin-p2.toml`): the notes API of `examples/notes-app`
//! for Spins that cannot load WASIp3 components (3.4 to 4.0.x, SpinKube). Routes, validation,
//! SQL and JSON are `lakebase-notes-core`'s, so both apps answer alike; this file reads
//! `wasi:http@0.2` requests and runs `spin:postgres@4.0.0` queries.

use lakebase_notes_core::{self as notes, Failure, Route};
use lakebase_spin_p2::Connected;
use lakebase_spin_p2::spin::{SpinPg, database_error, lakebase};
use serde_json::Value;
use spin_sdk::http::{IncomingRequest, Response, ResponseOutparam};
use spin_sdk::pg4::{Connection, ParameterValue, RowSet};

/// Answers, then refreshes the credential when it is due (after the client has its answer).
#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    lakebase_spin_p2::spin::serve_then_refresh(out, answer(req)).await
}

async fn answer(req: IncomingRequest) -> Response {
    let (status, body) = match serve(req).await {
        Ok(reply) => reply,
        Err(f) => (f.status, f.json()),
    };
    if status == 204 {
        return Response::new(204, ());
    }
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

async fn serve(req: IncomingRequest) -> Result<(u16, Value), Failure> {
    let path_and_query = req.path_with_query().unwrap_or_default();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query.as_str(), ""));
    let method = req.method().to_string();
    match notes::route(&method, path, query)? {
        Route::Health => health().await,
        Route::Create => {
            let text = notes::new_note_text(&read_body(req).await?)?;
            let db = connect().await?;
            let rows = query_rows(
                &db.connection,
                &notes::insert_note(),
                &[ParameterValue::Str(text)],
            )?;
            let note = rows
                .rows()
                .next()
                .map(|r| note_json(&r))
                .ok_or_else(|| Failure::bad_request("insert returned no row"))?;
            Ok((201, note))
        }
        Route::List { limit } => {
            let db = connect().await?;
            let rows = query_rows(
                &db.connection,
                &notes::at_least_one_row(&notes::list_notes()),
                &[ParameterValue::Int64(limit)],
            )?;
            Ok((
                200,
                notes::notes_json(found(&rows).map(|r| note_json(&r)).collect()),
            ))
        }
        Route::Get(id) => {
            let db = connect().await?;
            let rows = query_rows(
                &db.connection,
                &notes::at_least_one_row(&notes::select_note()),
                &[ParameterValue::Int64(id)],
            )?;
            match found(&rows).next() {
                Some(row) => Ok((200, note_json(&row))),
                None => Err(Failure::not_found(format!("note {id} does not exist"))),
            }
        }
        Route::Delete(id) => {
            let db = connect().await?;
            let deleted = db
                .connection
                .execute(notes::DELETE_NOTE, &[ParameterValue::Int64(id)])
                .map_err(database_error)?;
            if deleted == 0 {
                return Err(Failure::not_found(format!("note {id} does not exist")));
            }
            Ok((204, Value::Null))
        }
    }
}

/// The request body, refused with 413 as soon as it is known to exceed the limit: from its
/// `content-length`, else while it streams in (never read whole first).
async fn read_body(req: IncomingRequest) -> Result<Vec<u8>, Failure> {
    let length = req
        .headers()
        .get("content-length")
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok());
    notes::check_content_length(length.as_deref())?;
    let mut body = Vec::new();
    let mut chunks = std::pin::pin!(req.into_body_stream());
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        let chunk = chunk.map_err(|_| Failure::bad_request("could not read the request body"))?;
        if body.len() + chunk.len() > notes::MAX_BODY {
            return Err(Failure::too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Connects (with a cached or fresh credential) and makes sure the table exists.
async fn connect() -> Result<Connected<Connection>, Failure> {
    let db = lakebase().await?.connect(&SpinPg).await?;
    notes::ensure_table(|| async {
        let created = db.connection.execute(notes::CREATE_TABLE, &[]);
        created.map(drop).map_err(database_error)
    })
    .await?;
    Ok(db)
}

async fn health() -> Result<(u16, Value), Failure> {
    let db = lakebase().await?.connect(&SpinPg).await?;
    let rows = query_rows(&db.connection, notes::HEALTH_QUERY, &[])?;
    let row = rows.rows().next().ok_or_else(notes::no_health_row)?;
    let now = lakebase_spin_p2::SystemClock.now().timestamp();
    Ok((
        200,
        notes::health_json(
            row.get::<String>("user"),
            row.get::<String>("version"),
            &db.credential,
            db.source,
            now,
        ),
    ))
}

fn query_rows(conn: &Connection, sql: &str, params: &[ParameterValue]) -> Result<RowSet, Failure> {
    Ok(conn.query(sql, params).map_err(database_error)?)
}

/// The notes among the rows of an [`notes::at_least_one_row`] query: those whose `id` is set
/// (its one row of NULLs means none). Every query of this app that can match nothing goes
/// through it, because Spin 4.0.0 - 4.0.2 never answer a `query` that matches no rows.
fn found(rows: &RowSet) -> impl Iterator<Item = spin_sdk::pg4::Row<'_>> {
    rows.rows().filter(|r| r.get::<i64>("id").is_some())
}

fn note_json(row: &spin_sdk::pg4::Row<'_>) -> Value {
    notes::note_json(
        row.get::<i64>("id"),
        row.get::<String>("text"),
        row.get::<String>("created_at"),
    )
}
