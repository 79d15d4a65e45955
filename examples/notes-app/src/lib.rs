//! Demo Spin app: a notes API on Lakebase Postgres, logging in with cached OAuth credentials.
//! Routes, validation, SQL and JSON are `lakebase-notes-core`'s (shared with the standard-WASI
//! build, `examples/notes-wasi`); this file reads Spin requests and runs `spin:postgres` queries.

use lakebase_notes_core::{self as notes, Failure, Route};
use lakebase_spin::Connected;
use lakebase_spin::spin::{SpinPg, lakebase};
use serde_json::Value;
use spin_sdk::http::Request;
use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::pg::{Connection, ParameterValue, Row};

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<http::Response<String>> {
    let (status, body) = match serve(req).await {
        Ok(reply) => reply,
        Err(f) => (f.status, f.json()),
    };
    let mut response = http::Response::builder().status(status);
    if status == 204 {
        return Ok(response.body(String::new())?);
    }
    response = response.header("content-type", "application/json");
    Ok(response.body(body.to_string())?)
}

async fn serve(req: Request) -> Result<(u16, Value), Failure> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match notes::route(req.method().as_str(), &path, &query)? {
        Route::Health => health().await,
        Route::Create => {
            let text = notes::new_note_text(&read_body(req).await?)?;
            let db = connect().await?;
            let rows = query_rows(
                &db.connection,
                &notes::insert_note(),
                vec![ParameterValue::Str(text)],
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
            let rows = query_rows(
                &db.connection,
                &notes::list_notes(),
                vec![ParameterValue::Int64(limit)],
            )
            .await?;
            Ok((200, notes::notes_json(rows.iter().map(note_json).collect())))
        }
        Route::Get(id) => {
            let db = connect().await?;
            let rows = query_rows(
                &db.connection,
                &notes::select_note(),
                vec![ParameterValue::Int64(id)],
            )
            .await?;
            match rows.first() {
                Some(row) => Ok((200, note_json(row))),
                None => Err(Failure::not_found(format!("note {id} does not exist"))),
            }
        }
        Route::Delete(id) => {
            let db = connect().await?;
            let deleted = db
                .connection
                .execute(notes::DELETE_NOTE, &[ParameterValue::Int64(id)])
                .await
                .map_err(lakebase_spin::Error::from)?;
            if deleted == 0 {
                return Err(Failure::not_found(format!("note {id} does not exist")));
            }
            Ok((204, Value::Null))
        }
    }
}

/// The request body, refused with 413 as soon as it is known to exceed the limit: from its
/// `content-length`, else while it streams in (never read whole first).
async fn read_body(req: Request) -> Result<Vec<u8>, Failure> {
    let length = req.headers().get(http::header::CONTENT_LENGTH);
    notes::check_content_length(length.and_then(|v| v.to_str().ok()))?;
    let mut body = Vec::new();
    let mut chunks = req.into_body().stream();
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
        let created = db.connection.execute(notes::CREATE_TABLE, &[]).await;
        created.map(drop).map_err(lakebase_spin::Error::from)
    })
    .await?;
    Ok(db)
}

async fn health() -> Result<(u16, Value), Failure> {
    let db = lakebase().await?.connect(&SpinPg).await?;
    let rows = query_rows(&db.connection, notes::HEALTH_QUERY, vec![]).await?;
    let row = rows.first().ok_or_else(notes::no_health_row)?;
    let now = lakebase_spin::SystemClock.now().timestamp();
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

async fn query_rows(
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
    notes::note_json(
        row.get::<i64>("id"),
        row.get::<String>("text"),
        row.get::<String>("created_at"),
    )
}
