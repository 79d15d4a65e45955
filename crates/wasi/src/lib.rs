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

use std::sync::OnceLock;

use lakebase_spin::{Config, Connected, Error, Lakebase};

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

/// Opens a Lakebase Postgres connection (in the guest, over `wasi:sockets`) with a cached or
/// fresh credential; a rejected token is re-minted once. Call it inside [`block_on`].
pub async fn connect() -> Result<Connected<tokio_postgres::Client>, Error> {
    lakebase().await?.connect(&WasiPg).await
}
