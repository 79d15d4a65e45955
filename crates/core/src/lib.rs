//! Databricks Lakebase Postgres credentials for WebAssembly components, on any host.
//!
//! Lakebase passwords are OAuth tokens that live one hour. This crate mints them over the host's
//! HTTP (OAuth M2M or a personal access token, then the Autoscaling or Provisioned credential
//! API), caches them in the host's key-value store for every instance to share (sealed, reused
//! for at most 45 minutes, never past the server's expiry), and opens Postgres connections with
//! them, minting once more when the database rejects a token.
//!
//! It is host-neutral: the client [`Lakebase`] is generic over the small traits in [`host`]
//! (HTTP, key-value, clock, variables, Postgres connector), which a host adapter implements:
//! `lakebase-spin` for Spin, `lakebase-wasi` for standard-WASI hosts, or your own
//! (with [`adapter`]).
//!
//! No features are on by default. `with-spin-sdk` (turned on by `lakebase-spin`) adds only
//! `From<spin_sdk::pg::Error> for Error`, which Rust's orphan rule lets live only here. `log`
//! adds `log::to_log`, a sink that hands the library's log lines to the `log` crate.
//!
//! ```no_run
//! use lakebase::host::{Clock, Connector, Http, Kv, Vars};
//! use lakebase::{Config, Lakebase};
//!
//! # async fn handler(
//! #     vars: impl Vars, http: impl Http, kv: impl Kv, clock: impl Clock, pg: impl Connector,
//! # ) -> Result<(), lakebase::Error> {
//! // databricks_host, databricks_client_id, databricks_client_secret, lakebase_endpoint, ...
//! let config = Config::load(&vars).await?;
//! let lb = Lakebase::new(config, http, kv, clock); // keep one per instance
//! let db = lb.connect(&pg).await?; // a cached credential, or a fresh one
//! println!("credential from {}", db.source.as_str());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod adapter;
mod address;
mod cache;
mod config;
mod conn_string;
mod credential;
mod deadline;
mod error;
mod expiry;
mod flight;
pub mod host;
mod lakebase;
pub mod log;
mod login;
mod outage;
#[cfg(test)]
mod props;
mod protocol;
mod rejection;
mod retry;
mod seal;
mod seams;
mod secret;
mod tier;
mod workspace;

pub use config::{Config, ConfigBuilder, SslMode, Target};
pub use credential::{Credential, CredentialSource};
pub use error::{Error, ErrorKind};
pub use lakebase::{ConnectOptions, Connected, Lakebase, Obtained};
pub use retry::RetryPolicy;
pub use secret::Secret;

// The crate README's example compiles as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
