//! Databricks Lakebase Postgres from standard-WASI components: the `lakebase` core over
//! `wasi:config` (configuration), `wasi:keyvalue` (the shared cache), `wasi:http` (the
//! Databricks API) and `wasi:clocks`, with Postgres spoken by the component itself over
//! `wasi:sockets` (tokio-postgres, TLS by rustls inside the guest). For hosts without Spin's
//! interfaces: wasmCloud v2, `wasmtime serve`.
//!
//! Interface versions (the ones both wasmtime 47 and wasmCloud v2 implement):
//! `wasi:config/store@0.2.0-rc.1`, `wasi:keyvalue/store@0.2.0-draft`, `wasi:http@0.2`,
//! `wasi:sockets@0.2`. A WASI 0.2 instance serves one request at a time; everything here runs on
//! one tokio current-thread runtime per instance ([`block_on`]).
//!
//! **Build requirement.** tokio's networking on `wasm32-wasip2` is behind `--cfg tokio_unstable`;
//! without it tokio itself fails with "Only features sync,macros,io-util,rt,time are supported
//! on wasm". A crate that depends on this one adds to its `.cargo/config.toml`:
//!
//! ```toml
//! [target.wasm32-wasip2]
//! rustflags = ["--cfg", "tokio_unstable"]
//! ```
//!
//! It also needs `clang` (ring compiles C for wasm32).
//!
//! ```no_run
//! # fn handler() -> Result<(), lakebase::Error> {
//! lakebase_wasi::block_on(async {
//!     let db = lakebase_wasi::connect().await?;
//!     let rows = db
//!         .connection
//!         .query("SELECT current_user::text", &[])
//!         .await
//!         .map_err(|e| lakebase_wasi::database_error(&e))?;
//!     println!("{} row(s), credential from {}", rows.len(), db.source.as_str());
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lakebase::host::Clock as _;
use lakebase::{Config, Connected, Credential, CredentialSource, Error, Lakebase};
use tokio_postgres::error::SqlState;

mod clock;
mod http;
mod kv;
mod pg;
mod runtime;
mod tls;
mod vars;
mod wait;

#[allow(missing_docs, missing_debug_implementations, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "lakebase:postgres/wasi-adapter",
        generate_all,
    });
}

// The README's example compiles as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

pub use clock::WasiClock;
pub use http::WasiHttp;
pub use kv::WasiKv;
pub use pg::{WasiPg, database_error};
pub use runtime::block_on;
pub use vars::WasiVars;

/// The client type on standard-WASI hosts.
pub type WasiLakebase = Lakebase<WasiHttp, WasiKv, WasiClock>;

static INSTANCE: OnceLock<WasiLakebase> = OnceLock::new();

/// This instance's client, configured from `wasi:config` on first use (the same names as the
/// Spin variables: `databricks_host`, `databricks_client_id`, …). A configuration error is
/// returned (and re-checked on the next call) rather than cached.
pub async fn lakebase() -> Result<&'static WasiLakebase, Error> {
    if let Some(lb) = INSTANCE.get() {
        return Ok(lb);
    }
    let config = Config::load(&WasiVars).await?;
    let mut lb = Lakebase::new(config, WasiHttp, WasiKv::default(), WasiClock);
    if REFRESH_AFTER_RESPONSE.load(std::sync::atomic::Ordering::Relaxed) {
        lb = lb.with_refresh_after_every_response();
    }
    Ok(INSTANCE.get_or_init(|| lb))
}

/// Set by [`serve_then_refresh`] before the handler runs: the client is configured to leave
/// refreshes to the end of the request.
static REFRESH_AFTER_RESPONSE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// One request of a `wasi:http@0.2` handler: runs `serve` ([`block_on`]), hands its output to
/// `respond` (which sets the `response-outparam`, writes the body and finishes it), and only
/// then, when the credential is due ([`Lakebase::refresh_due`]), refreshes it. wasmCloud's
/// `wash host` and `wasmtime serve` run the handler until it returns, after the client has its
/// answer: no request waits for a rotation's mint or for a failing workspace, only a cold start
/// does.
///
/// Use it for every request of the component (it configures the instance's client to leave
/// refreshes to it); `wasmtime serve -Wtimeout` bounds the refresh too.
///
/// ```no_run
/// # use wasip2::http::types::{IncomingRequest, ResponseOutparam};
/// # fn send(out: ResponseOutparam, status: u16, text: String) {}
/// fn handle(request: IncomingRequest, out: ResponseOutparam) {
///     lakebase_wasi::serve_then_refresh(
///         async {
///             match lakebase_wasi::connect().await {
///                 Ok(_db) => (200, "connected".to_owned()),
///                 Err(e) => (503, e.kind().as_str().to_owned()),
///             }
///         },
///         |(status, text)| send(out, status, text),
///     );
/// }
/// ```
pub fn serve_then_refresh<T>(serve: impl std::future::Future<Output = T>, respond: impl FnOnce(T)) {
    REFRESH_AFTER_RESPONSE.store(true, std::sync::atomic::Ordering::Relaxed);
    respond(block_on(serve));
    if let Some(lb) = INSTANCE.get()
        && lb.refresh_due()
    {
        runtime::block_on_same_request(lb.refresh());
    }
}

/// This instance's open connection, kept for its next requests.
struct Kept {
    client: Arc<tokio_postgres::Client>,
    /// The credential it logged in with: a new request gets the connection only while this is
    /// the credential to use (see [`connect`]).
    credential: Credential,
    /// The request ([`block_on`]) it was last handed to.
    request: u64,
    /// When the session was last reset by [`last_use`] (the reset answered, nothing ran since):
    /// a later request takes it without a round trip of its own while this is recent.
    clean_since: Option<Instant>,
}

static CONNECTION: Mutex<Option<Kept>> = Mutex::new(None);

/// How long the reset of a kept connection may take (then it is closed and a new one opened).
const RESET_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a session reset by [`last_use`] is taken by a later request without a round trip
/// that checks it still answers. A server that ended the session (`idle_session_timeout`, a
/// revoked token, a restart) has said so on the socket by then and is seen without one; what
/// only a round trip finds is a path that dropped the connection silently, which load
/// balancers and NAT do after minutes of quiet, not seconds.
const CLEAN_FOR: Duration = Duration::from_secs(30);

/// What ends a session's state, as deadpool-postgres's `Clean` recycling does: held cursors
/// closed, `SET SESSION AUTHORIZATION` and every `SET` (`role` and `search_path` included) back
/// to the login's values (those of the connection string stay, such as `idle_session_timeout`),
/// `LISTEN` ended, session advisory locks released, temporary tables and sequences' `currval`
/// dropped. Prepared statements stay (no `DEALLOCATE ALL`): tokio-postgres keeps its type lookups
/// as prepared statements on the client, which must go on working.
macro_rules! clean_session {
    () => {
        "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
         SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
    };
}

/// What a kept connection is sent when a new request takes it: one simple query, one round
/// trip, that checks the session still answers and resets it. `BEGIN; ROLLBACK` ends a
/// transaction the last request left open (the server then logs "there is already a
/// transaction in progress") and is silent otherwise, where a lone `ROLLBACK` would have the
/// server log "there is no transaction in progress" on every request.
const SESSION_RESET: &str = concat!("BEGIN; ROLLBACK; ", clean_session!());

/// The reset of a session in a failed transaction, which refuses [`SESSION_RESET`]'s `BEGIN`
/// (SQLSTATE 25P02): a second round trip, only then.
const FAILED_SESSION_RESET: &str = concat!("ROLLBACK; ", clean_session!());

/// A Lakebase Postgres connection (in the guest, over `wasi:sockets`), one per instance, kept
/// open for the instance's next requests. Call it inside [`block_on`]; each `block_on` is a
/// request:
/// - within one request every call returns the same session as the caller left it (a
///   transaction it opened stays open);
/// - the first call of a later request reuses the kept connection while the credential it logged
///   in with is fresh ([`Credential::is_fresh`]: at most 45 minutes after minting, less for a
///   short-lived token) — past that only while the library still serves that very credential
///   because its refresh fails for a transient reason ([`Credential::serve_until`]) — after one
///   round trip (two after a failed transaction) that checks it and resets the session: an
///   open or failed transaction rolled back, `SET`s undone, temporary tables, held cursors,
///   `LISTEN` and session advisory locks dropped. Then `source` is `memory`. A request that
///   ended with [`last_use`] had the reset sent behind its last statement: the next one, within
///   30 s, takes the connection without that round trip;
/// - otherwise (a newer credential, a session that ended or does not answer within 2 s) the
///   kept connection is closed and a new one opened with the current credential, a rejected
///   token re-minted once. So a rotated credential, or a revoked principal, takes effect on a
///   kept connection by its credential's reuse limit at the latest. When no credential can be
///   had, the kept connection is closed and the error returned.
///
/// Not reset: statements prepared with SQL `PREPARE` (`DEALLOCATE` them in the request that
/// made them).
pub async fn connect() -> Result<Connected<Arc<tokio_postgres::Client>>, Error> {
    let request = runtime::request();
    let kept = CONNECTION.lock().unwrap_or_else(|p| p.into_inner()).take();
    // The credential obtained while judging a stale kept connection, and where it came from.
    let mut current = None;
    if let Some(mut kept) = kept {
        let clean = kept
            .clean_since
            .take()
            .is_some_and(|t| t.elapsed() < CLEAN_FOR);
        let usable = if kept.request == request {
            !kept.client.is_closed()
        } else if kept.credential.is_fresh(WasiClock.now()) {
            if clean {
                still_open(&kept.client).await
            } else {
                reset(&kept.client).await
            }
        } else {
            // Past its reuse limit: the library mints or finds a newer credential (then the
            // connection is replaced), or serves this one through a failing refresh. An error
            // drops the kept connection on return.
            let got = lakebase().await?.credential().await?;
            let (credential, source) = (got.credential, got.source);
            let same = credential.token == kept.credential.token;
            current = Some((credential, source));
            same && reset(&kept.client).await
        };
        if usable {
            kept.request = request;
            let connected = Connected {
                connection: kept.client.clone(),
                credential: kept.credential.clone(),
                source: CredentialSource::Memory,
            };
            *CONNECTION.lock().unwrap_or_else(|p| p.into_inner()) = Some(kept);
            return Ok(connected);
        }
        // Closed now, before the new login: the client's last handle going away makes its
        // connection task send Terminate and close the socket.
        drop(kept);
    }
    let db = lakebase().await?.connect(&WasiPg).await?;
    // A credential minted (or read from the store) just above is in memory by now: say where it
    // came from on this request.
    let source = match current {
        Some((credential, source)) if credential.token == db.credential.token => source,
        _ => db.source,
    };
    let client = Arc::new(db.connection);
    *CONNECTION.lock().unwrap_or_else(|p| p.into_inner()) = Some(Kept {
        client: client.clone(),
        credential: db.credential.clone(),
        request,
        clean_since: None,
    });
    Ok(Connected {
        connection: client,
        credential: db.credential,
        source,
    })
}

/// Runs `last`, the caller's last use of `connection` in this request, with the session's
/// reset ([`connect`]) sent right behind it, in the same flight: the next request then takes
/// the connection without the round trip its reset would cost (within 30 s; after that it
/// checks the session first, as without this). The answer is `last`'s; the reset's outcome
/// decides only whether the connection is kept (a failed transaction costs one more round
/// trip to roll back; a reset that fails closes the connection).
///
/// `last` must send its one request when first polled: a tokio-postgres `query_typed` or
/// `query_typed_raw` (SQL text parsed, bound and run in one flight: the whole request is one
/// round trip), a `query`, `execute` or `query_raw` of a prepared
/// [`tokio_postgres::Statement`], a `batch_execute`, a `simple_query` or a `prepare`, awaited
/// directly. A future that awaits one request before sending another (a `query` with SQL text
/// prepares first) would have the reset overtake it and leave its session state for the next
/// request. `last` runs to the end either way. A prepared `Statement` dropped afterwards sends
/// its `Close` in a flight of its own: keep statements for the connection's life, or use
/// `query_typed`, to keep a request at one round trip.
pub async fn last_use<T>(
    connection: &Arc<tokio_postgres::Client>,
    last: impl std::future::Future<Output = T>,
) -> T {
    // `join` polls `last` first, so its request goes out ahead of the reset. No timer of its
    // own: the server answers the reset right after `last`, which has none either.
    let (answer, reset) = futures::future::join(last, connection.simple_query(SESSION_RESET)).await;
    let clean = after_reset(connection, reset).await;
    let mut kept = CONNECTION.lock().unwrap_or_else(|p| p.into_inner());
    if kept
        .as_ref()
        .is_some_and(|k| Arc::ptr_eq(&k.client, connection))
    {
        if clean {
            if let Some(k) = kept.as_mut() {
                k.clean_since = Some(Instant::now());
            }
        } else {
            // Dropped once the caller lets go of it: the next request logs in anew.
            *kept = None;
        }
    }
    answer
}

/// Whether a kept connection's session is still open, without a round trip: the runtime runs
/// its connection task first, which reads an end the server already sent (a `FATAL` such as
/// `idle_session_timeout`, then the socket's close).
async fn still_open(client: &tokio_postgres::Client) -> bool {
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
    !client.is_closed()
}

/// Checks that a kept connection still answers and resets its session ([`SESSION_RESET`]), in
/// one round trip (two after a failed transaction). A session the server ended, or a network
/// that dropped it, fails here instead of in the caller's query.
async fn reset(client: &tokio_postgres::Client) -> bool {
    if client.is_closed() {
        return false;
    }
    let reset = std::pin::pin!(async {
        let answer = client.simple_query(SESSION_RESET).await;
        after_reset(client, answer).await
    });
    let timer = std::pin::pin!(WasiClock.sleep(RESET_TIMEOUT));
    match futures::future::select(reset, timer).await {
        futures::future::Either::Left((reset, _)) => reset,
        futures::future::Either::Right(_) => false,
    }
}

/// Whether the session is clean after [`SESSION_RESET`] answered `answer`: a failed
/// transaction refused it, and is rolled back now (one more round trip).
async fn after_reset<T>(
    client: &tokio_postgres::Client,
    answer: Result<T, tokio_postgres::Error>,
) -> bool {
    match answer {
        Ok(_) => true,
        Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {
            client.simple_query(FAILED_SESSION_RESET).await.is_ok()
        }
        Err(_) => false,
    }
}
