//! The demo notes API for standard-WASI hosts (wasmCloud v2, `wasmtime serve`): the same routes,
//! JSON and errors as the Spin app (both are `lakebase-notes-core`), served through
//! `wasi:http/incoming-handler@0.2`, configured by `wasi:config`, caching in `wasi:keyvalue`,
//! with Postgres spoken in the component over `wasi:sockets` (`lakebase-wasi`).

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use lakebase_notes_core::{self as notes, Failure, Route};
use lakebase_spin::Connected;
use lakebase_spin::host::Clock as _;
use lakebase_wasi::{WasiClock, database_error};
use serde_json::Value;
use tokio_postgres::{Client, Row};
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Notes);

struct Notes;

impl wasip2::exports::http::incoming_handler::Guest for Notes {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = match lakebase_wasi::block_on(serve(request)) {
            Ok(reply) => reply,
            Err(f) => (f.status, f.json()),
        };
        respond(response_out, status, body);
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
    match notes::route(&method, path, query)? {
        Route::Health => health().await,
        Route::Create => {
            let text = notes::new_note_text(&read_body(&request)?)?;
            let db = connect().await?;
            let rows = query_rows(&db.connection, &notes::insert_note(), &[&text]).await?;
            let note = rows
                .first()
                .map(note_json)
                .ok_or_else(|| Failure::bad_request("insert returned no row"))?;
            Ok((201, note))
        }
        Route::List { limit } => {
            let db = connect().await?;
            let rows = query_rows(&db.connection, &notes::list_notes(), &[&limit]).await?;
            Ok((200, notes::notes_json(rows.iter().map(note_json).collect())))
        }
        Route::Get(id) => {
            let db = connect().await?;
            let rows = query_rows(&db.connection, &notes::select_note(), &[&id]).await?;
            match rows.first() {
                Some(row) => Ok((200, note_json(row))),
                None => Err(Failure::not_found(format!("note {id} does not exist"))),
            }
        }
        Route::Delete(id) => {
            let db = connect().await?;
            let deleted = db
                .connection
                .execute(notes::DELETE_NOTE, &[&id])
                .await
                .map_err(|e| database_error(&e))?;
            if deleted == 0 {
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
    let rows = query_rows(&db.connection, notes::HEALTH_QUERY, &[]).await?;
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

async fn query_rows(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, Failure> {
    Ok(client
        .query(sql, params)
        .await
        .map_err(|e| database_error(&e))?)
}

fn note_json(row: &Row) -> Value {
    notes::note_json(
        row.try_get("id").ok(),
        row.try_get("text").ok(),
        row.try_get("created_at").ok(),
    )
}
