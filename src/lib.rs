//! Databricks Lakebase Postgres from Spin components.
//!
//! Lakebase passwords are OAuth tokens that live one hour. This crate mints them over outbound
//! HTTP (OAuth M2M or a personal access token, then the Autoscaling or Provisioned credential
//! API), caches them in the Spin key-value store for every instance to share (reused for at most
//! 45 minutes, never past the server's expiry), and opens `spin:postgres` connections with them,
//! minting once more when the database rejects a token.
//!
//! ```no_run
//! # #[cfg(feature = "spin")]
//! # async fn handler() -> Result<(), lakebase_spin::Error> {
//! // Configured by Spin variables: databricks_host, databricks_client_id,
//! // databricks_client_secret, lakebase_endpoint, ... (see the README).
//! let db = lakebase_spin::spin::connect().await?;
//! let rows = db
//!     .connection
//!     .query("SELECT current_user::text", &[])
//!     .await?
//!     .collect()
//!     .await?;
//! println!("{} rows, credential from {}", rows.len(), db.source.as_str());
//! # Ok(()) }
//! ```
//!
//! The decisions (expiry, retry, error classification, connection strings) are the
//! host-neutral crate [`lakebase`], re-exported here (every `lakebase_spin::X` is
//! `lakebase::X`) and generic over the small traits in [`host`]; the `spin` module (default
//! feature `spin`) implements them for Spin. Without that feature this crate builds without
//! spin-sdk, as nothing but the re-exports; depend on `lakebase` directly instead.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

#[cfg(feature = "spin")]
mod clock;
#[cfg(feature = "spin")]
pub mod spin;

#[cfg(feature = "spin")]
pub use clock::SystemClock;
/// The plugins' glue to their generated credentials bindings (see `lakebase::credentials_glue`).
#[doc(hidden)]
pub use lakebase::credentials_glue;
pub use lakebase::{
    Config, ConfigBuilder, ConnectOptions, Connected, Credential, CredentialSource, Error,
    ErrorKind, Lakebase, Obtained, RetryPolicy, Secret, SslMode, Target, adapter, host, log,
};

// The READMEs' examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
#[cfg(doctest)]
#[doc = include_str!("../crate-README.md")]
struct CrateReadmeExamples;
