//! Databricks Lakebase Postgres from standard-WASI components: the `lakebase-spin` core over
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
//! ```no_run
//! # fn handler() -> Result<(), lakebase_spin::Error> {
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
use std::time::Duration;

use lakebase_spin::host::Clock as _;
use lakebase_spin::{Config, Connected, Credential, CredentialSource, Error, Lakebase};

mod clock;
mod http;
mod kv;
mod pg;
mod runtime;
mod tls;
mod vars;

#[allow(missing_docs, missing_debug_implementations, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "lakebase:postgres/wasi-adapter",
        generate_all,
    });
}

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
    let lb = Lakebase::new(config, WasiHttp, WasiKv::default(), WasiClock);
    Ok(INSTANCE.get_or_init(|| lb))
}

/// This instance's open connection and the credential it logged in with. Reusing it is safe
/// past the token's reuse limit: Lakebase checks the token at login only, so an open session
/// outlives it (as a pool's connections do in the Python and Node drivers).
static CONNECTION: Mutex<Option<(Arc<tokio_postgres::Client>, Credential)>> = Mutex::new(None);

/// How long the check that a kept connection still answers may take.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A Lakebase Postgres connection (in the guest, over `wasi:sockets`): this instance's open one
/// when it still answers (then `source` is `memory`), else a new one with a cached or fresh
/// credential, a rejected token re-minted once. Call it inside [`block_on`].
pub async fn connect() -> Result<Connected<Arc<tokio_postgres::Client>>, Error> {
    let kept = CONNECTION.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((client, credential)) = kept
        && alive(&client).await
    {
        *CONNECTION.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((client.clone(), credential.clone()));
        return Ok(Connected {
            connection: client,
            credential,
            source: CredentialSource::Memory,
        });
    }
    let db = lakebase().await?.connect(&WasiPg).await?;
    let client = Arc::new(db.connection);
    *CONNECTION.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((client.clone(), db.credential.clone()));
    Ok(Connected {
        connection: client,
        credential: db.credential,
        source: db.source,
    })
}

/// Whether a kept connection still answers: an empty query, one round trip (a session the
/// server ended, or a network that dropped it, fails here instead of in the caller's query).
async fn alive(client: &tokio_postgres::Client) -> bool {
    if client.is_closed() {
        return false;
    }
    let ping = std::pin::pin!(client.simple_query(""));
    let timer = std::pin::pin!(WasiClock.sleep(ALIVE_TIMEOUT));
    match futures::future::select(ping, timer).await {
        futures::future::Either::Left((answered, _)) => answered.is_ok(),
        futures::future::Either::Right(_) => false,
    }
}
