//! Databricks Lakebase Postgres from **WASIp2** Spin components (spin-sdk 5.2): for Spin 3.4 to
//! 4.0.x, SpinKube's shims and other Spins that cannot load spin-sdk 7 (WASIp3) components.
//!
//! The same library as `lakebase-spin`, over the interfaces a WASIp2 Spin component has:
//! outbound `wasi:http@0.2`, key-value and variables of `fermyon:spin@2.0.0`, and
//! `spin:postgres@4.0.0` (Spin 3.4 and later). Credentials are minted over outbound HTTP (OAuth
//! M2M or a personal access token, then the Autoscaling or Provisioned credential API), cached
//! in the Spin key-value store for every instance to share (sealed records, reused for at most
//! 45 minutes, never past the server's expiry), and used as the password of Postgres
//! connections, minting once more when the database rejects a token.
//!
//! ```no_run
//! use lakebase_spin_p2::spin::{connect, database_error};
//!
//! # async fn handler() -> Result<(), lakebase_spin_p2::Error> {
//! // Configured by Spin variables: databricks_host, databricks_client_id,
//! // databricks_client_secret, lakebase_endpoint, ... (the same table as lakebase-spin).
//! let db = connect().await?;
//! let rows = db
//!     .connection
//!     .query("SELECT current_user::text", &[])
//!     .map_err(database_error)?;
//! println!("{} rows, credential from {}", rows.rows.len(), db.source.as_str());
//! # Ok(()) }
//! ```
//!
//! **Why a crate of its own**, not a feature of `lakebase-spin`: spin-sdk 7 (WASIp3) and
//! spin-sdk 5.2 (WASIp2) must never both link into one component (its world would import both
//! `wasi:http@0.3` and `@0.2`, and no Spin serves both), and Cargo unifies features across
//! everything one build compiles, so a `p2` feature beside the default `spin` one would pull
//! spin-sdk 7 back into a WASIp2 component built in the same workspace or dependency graph. For
//! the same reason this crate uses the core `lakebase` without its feature `with-spin-sdk`:
//! query errors convert with [`spin::database_error`] instead of `?`.
//!
//! **What differs from `lakebase-spin`** (all from the WASIp2 host, none from the core):
//! - Spin gives a WASIp2 component a fresh instance per request, so the credential in instance
//!   memory rarely serves a second request: the shared key-value record is the cache that
//!   matters (one key-value read per request, no mint).
//! - A WASIp2 handler has no tasks that outlive it, but Spin runs it until it returns, after
//!   its response: a handler that answers through [`spin::serve_then_refresh`] refreshes the
//!   credential there, so no request waits for a rotation's mint or a failing workspace. One
//!   that does not mints in the request that finds the credential due (waiting at most 1 s on a
//!   failing workspace while the credential is still accepted).
//! - `spin:postgres@4.0.0` has no CA-root option: a configured `lakebase_ca_root` is a
//!   `configuration` error (use `lakebase-spin` on Spin 4.1 or later for a custom CA).
//! - Opening a connection is a synchronous host call in spin-sdk 5.2: the core's connect
//!   deadline cannot cut it short (Spin's own connect timeout bounds it). Outbound HTTP is
//!   asynchronous and keeps the core's deadlines; back-off sleeps wait on a
//!   `wasi:clocks/monotonic-clock` timer without blocking the executor ([`SystemClock`]).
//!
//! The decisions (expiry, retry, error classification, connection strings) are the
//! host-neutral crate [`lakebase`], re-exported here (every `lakebase_spin_p2::X` is
//! `lakebase::X`) and generic over the small traits in [`host`]; the [`spin`] module implements
//! them for WASIp2 Spin.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod clock;
pub mod spin;

pub use clock::SystemClock;
/// The plugins' glue to their generated credentials bindings (see `lakebase::credentials_glue`).
#[doc(hidden)]
pub use lakebase::credentials_glue;
pub use lakebase::{
    Config, ConfigBuilder, ConnectOptions, Connected, Credential, CredentialSource, Error,
    ErrorKind, Lakebase, Obtained, RetryPolicy, Secret, SslMode, Target, adapter, host, log,
};

// The README's example compiles as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
