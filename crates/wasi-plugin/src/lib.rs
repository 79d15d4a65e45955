//! The Lakebase plugin for standard-WASI hosts (wasmCloud v2, `wasmtime serve`):
//! `lakebase_wasi_plugin.wasm`, world `lakebase:postgres/wasi-plugin`.
//!
//! It exports
//! - `lakebase:postgres/credentials`: the cached credential (minted when needed) and its
//!   invalidation, as the Spin plugin does (lifted synchronously: a caller waits);
//! - `wasmcloud:postgres/{types,query,prepared}@0.1.1-draft`, virtualizing wasmCloud's Postgres
//!   interface: every query runs on this instance's Lakebase connection, opened by the plugin
//!   itself over `wasi:sockets` (TLS in the guest) with the cached token as password, a rejected
//!   token re-minted once (`lakebase_wasi::connect`). Each call is a request of its own to
//!   `lakebase_wasi`: it starts on a reset session (no transaction, `SET`, temporary table or
//!   lock of an earlier call), so a transaction goes in one `query-batch` (`BEGIN; …; COMMIT`).
//!   The reset is sent in the same flight as each call's statement, right behind it
//!   (`lakebase_wasi::last_use`): a call costs one round trip, not two.
//!
//! A component written against `wasmcloud:postgres` gets Lakebase by `wac plug`ging this in; the
//! composition imports only standard WASI. Configuration comes from `wasi:config` with the same
//! names as the Spin variables.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use lakebase::Secret;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

#[allow(warnings, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "lakebase:postgres/wasi-plugin",
        // A WASI 0.2 component lifts its exports synchronously; the library's work runs on
        // the instance's tokio runtime inside each call (`lakebase_wasi::block_on`).
        async: [
            "-export:lakebase:postgres/credentials@0.1.0#get",
            "-export:lakebase:postgres/credentials@0.1.0#invalidate",
        ],
    });
}

mod values;

use bindings::exports::lakebase::postgres::credentials as wit;
use bindings::exports::wasmcloud::postgres::prepared::{
    self, PreparedStatementExecError, StatementPrepareError,
};
use bindings::exports::wasmcloud::postgres::query::{self, PgValue, QueryError, ResultRow};
use bindings::exports::wasmcloud::postgres::types::ResultRowEntry;

struct Plugin;

// ---- credentials -------------------------------------------------------------------------------

lakebase::credentials_glue!(bindings::exports::lakebase::postgres::credentials);

impl wit::Guest for Plugin {
    fn get() -> Result<wit::Credential, wit::Error> {
        lakebase_wasi::block_on(async {
            let lb = lakebase_wasi::lakebase().await.map_err(wit_error)?;
            let got = lb.credential().await.map_err(wit_error)?;
            let conn = lb.client_connection_string(&got.credential);
            Ok(wit_credential(got, &conn))
        })
    }

    fn invalidate(password: String) -> bool {
        lakebase_wasi::block_on(async {
            match lakebase_wasi::lakebase().await {
                Ok(lb) => lb.invalidate(&Secret::new(password)).await,
                Err(_) => false,
            }
        })
    }
}

// ---- wasmcloud:postgres ------------------------------------------------------------------------

/// A failure before the query reached the database (configuration, credential, login), as
/// `unexpected` with the library's kind: `lakebase workspace_auth: …`. Never holds a secret.
fn not_connected(e: &lakebase::Error) -> String {
    format!("lakebase {}: {e}", e.kind().as_str())
}

/// A database error as wasmCloud's host words it: `SQLSTATE: message`.
fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn params(values: &[PgValue]) -> Result<Vec<values::TextParam>, String> {
    values.iter().map(values::param).collect()
}

fn refs(params: &[values::TextParam]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn result_row(row: &tokio_postgres::Row) -> Result<ResultRow, String> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            row.try_get::<_, values::Cell>(i)
                .map(|cell| ResultRowEntry {
                    column_name: column.name().to_owned(),
                    value: cell.0,
                })
                .map_err(|e| {
                    let why = std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_else(|| e.to_string());
                    format!("column `{}`: {why}", column.name())
                })
        })
        .collect()
}

impl query::Guest for Plugin {
    fn query(sql: String, values: Vec<PgValue>) -> Result<Vec<ResultRow>, QueryError> {
        let params = params(&values).map_err(QueryError::InvalidParams)?;
        lakebase_wasi::block_on(async {
            let db = lakebase_wasi::connect()
                .await
                .map_err(|e| QueryError::Unexpected(not_connected(&e)))?;
            let (client, params) = (&db.connection, &params);
            let rows = with_statement(client, &sql, |statement| async move {
                lakebase_wasi::last_use(client, client.query(&statement, &refs(params))).await
            })
            .await
            .map_err(|e| {
                QueryError::InvalidQuery(format!("query failed: {}", pg_error_text(&e)))
            })?;
            rows.iter()
                .map(result_row)
                .collect::<Result<_, _>>()
                .map_err(QueryError::Unexpected)
        })
    }

    fn query_batch(sql: String) -> Result<(), QueryError> {
        lakebase_wasi::block_on(async {
            let db = lakebase_wasi::connect()
                .await
                .map_err(|e| QueryError::Unexpected(not_connected(&e)))?;
            let client = &db.connection;
            lakebase_wasi::last_use(client, client.batch_execute(&sql))
                .await
                .map_err(|e| {
                    QueryError::InvalidQuery(format!("batch failed: {}", pg_error_text(&e)))
                })
        })
    }
}

/// The server-side statements of the instance's connection, by text: each statement text is
/// prepared once per connection (its `Parse` round trip saved on every later call with the same
/// text). Dropped with the connection: a new login starts an empty map. At most
/// [`MAX_STATEMENTS`] are kept; past that a text is prepared for its call only.
struct Prepared {
    /// The connection they were prepared on (held weakly, so its address is not reused while
    /// this is compared with the current one).
    connection: Weak<Client>,
    statements: HashMap<String, Statement>,
}

static PREPARED: Mutex<Option<Prepared>> = Mutex::new(None);

fn prepared() -> std::sync::MutexGuard<'static, Option<Prepared>> {
    PREPARED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The map of `client`, emptied first if it belonged to another connection.
fn prepared_on<'a>(
    guard: &'a mut Option<Prepared>,
    client: &Arc<Client>,
) -> &'a mut HashMap<String, Statement> {
    if !guard
        .as_ref()
        .is_some_and(|p| std::ptr::eq(p.connection.as_ptr(), Arc::as_ptr(client)))
    {
        *guard = Some(Prepared {
            connection: Arc::downgrade(client),
            statements: HashMap::new(),
        });
    }
    &mut guard.as_mut().expect("just set").statements
}

/// `sql` prepared on `client`: from the map, else prepared now (and kept).
async fn statement_on(client: &Arc<Client>, sql: &str) -> Result<Statement, tokio_postgres::Error> {
    if let Some(statement) = prepared_on(&mut prepared(), client).get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql).await?;
    let mut guard = prepared();
    let statements = prepared_on(&mut guard, client);
    if statements.len() < MAX_STATEMENTS {
        statements.insert(sql.to_owned(), statement.clone());
    }
    Ok(statement)
}

/// Runs `run` with `sql` prepared on `client`. A kept statement whose plan the server no longer
/// accepts (a table it reads was altered: "cached plan must not change result type", refused
/// before anything ran) is prepared again and run once more.
async fn with_statement<T, F, Fut>(
    client: &Arc<Client>,
    sql: &str,
    run: F,
) -> Result<T, tokio_postgres::Error>
where
    F: Fn(Statement) -> Fut,
    Fut: Future<Output = Result<T, tokio_postgres::Error>>,
{
    let statement = statement_on(client, sql).await?;
    match run(statement).await {
        Err(e) if stale_plan(&e) => {
            prepared_on(&mut prepared(), client).remove(sql);
            run(statement_on(client, sql).await?).await
        }
        answer => answer,
    }
}

fn stale_plan(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code() == &SqlState::FEATURE_NOT_SUPPORTED
            && db
                .message()
                .starts_with("cached plan must not change result type")
    })
}

/// This instance's prepared statements, by token. The same text gets the same token, so a
/// component that prepares on every request does not grow this past its distinct statements.
/// A token names the text, not a server-side statement: `exec` takes the statement of the
/// connection of its own call ([`statement_on`]: prepared there once), so a token stays valid
/// when the instance's connection is replaced (a new login after a cut session or a stale
/// credential), and a statement prepared on one connection is never executed on another.
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// At most this many distinct statements per instance.
const MAX_STATEMENTS: usize = 1024;

const TOKEN_PREFIX: &str = "lakebase-statement-";

fn statement(token: &str) -> Option<String> {
    let index: usize = token.strip_prefix(TOKEN_PREFIX)?.parse().ok()?;
    STATEMENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(index)
        .cloned()
}

impl prepared::Guest for Plugin {
    fn prepare(sql: String) -> Result<String, StatementPrepareError> {
        // The server checks the statement now, so a mistake surfaces at `prepare`.
        lakebase_wasi::block_on(async {
            let db = lakebase_wasi::connect()
                .await
                .map_err(|e| StatementPrepareError::Unexpected(not_connected(&e)))?;
            let client = &db.connection;
            lakebase_wasi::last_use(client, statement_on(client, &sql))
                .await
                .map_err(|e| {
                    StatementPrepareError::Unexpected(format!(
                        "prepare failed: {}",
                        pg_error_text(&e)
                    ))
                })
        })?;
        let mut statements = STATEMENTS.lock().unwrap_or_else(|p| p.into_inner());
        let index = match statements.iter().position(|s| *s == sql) {
            Some(index) => index,
            None if statements.len() >= MAX_STATEMENTS => {
                return Err(StatementPrepareError::Unexpected(format!(
                    "this instance holds {MAX_STATEMENTS} prepared statements already: prepare each statement once and reuse its token"
                )));
            }
            None => {
                statements.push(sql);
                statements.len() - 1
            }
        };
        Ok(format!("{TOKEN_PREFIX}{index}"))
    }

    fn exec(token: String, values: Vec<PgValue>) -> Result<u64, PreparedStatementExecError> {
        let sql = statement(&token).ok_or(PreparedStatementExecError::UnknownPreparedQuery)?;
        let params = params(&values)
            .map_err(|e| PreparedStatementExecError::QueryError(QueryError::InvalidParams(e)))?;
        lakebase_wasi::block_on(async {
            let db = lakebase_wasi::connect()
                .await
                .map_err(|e| PreparedStatementExecError::Unexpected(not_connected(&e)))?;
            let (client, params) = (&db.connection, &params);
            with_statement(client, &sql, |statement| async move {
                lakebase_wasi::last_use(client, client.execute(&statement, &refs(params))).await
            })
            .await
            .map_err(|e| {
                PreparedStatementExecError::QueryError(QueryError::InvalidQuery(format!(
                    "execute failed: {}",
                    pg_error_text(&e)
                )))
            })
        })
    }
}

bindings::export!(Plugin with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tokens_are_unknown() {
        assert_eq!(statement("nope"), None);
        assert_eq!(statement("lakebase-statement-99999"), None);
        assert_eq!(statement("lakebase-statement--1"), None);
    }
}
