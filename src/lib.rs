//! Databricks Lakebase Postgres from Spin components.
//!
//! Lakebase passwords are OAuth tokens that live one hour. This crate mints them over outbound
//! HTTP (OAuth M2M or a personal access token, then the Autoscaling or Provisioned credential
//! API), caches them in the Spin key-value store for every instance to share (reused for at most
//! 45 minutes, never past the server's expiry), and opens `spin:postgres` connections with them,
//! minting once more when the database rejects a token.
//!
//! ```no_run
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
//! The decisions (expiry, retry, error classification, connection strings) are host-neutral and
//! generic over the small traits in [`host`]; [`spin`] implements them for Spin.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod cache;
mod clock;
mod config;
mod conn_string;
mod credential;
mod deadline;
mod error;
mod flight;
pub mod host;
mod lakebase;
mod log;
#[cfg(test)]
mod props;
mod protocol;
mod retry;
mod seal;
mod secret;
pub mod spin;
mod workspace;

pub use clock::SystemClock;
pub use config::{Config, SslMode, Target, WorkspaceAuth, var};
pub use conn_string::{connection_string, redacted_connection_string};
pub use credential::{
    Credential, CredentialSource, MAX_REUSE, SERVER_EXPIRY_MARGIN, SHORT_LIFETIME_SHARE, is_fresh,
    reuse_until,
};
pub use error::{Error, ErrorKind};
pub use lakebase::{ConnectOptions, Connected, Lakebase};
pub use retry::RetryPolicy;
pub use secret::{Secret, scrub as scrub_secrets};
pub use workspace::WORKSPACE_TOKEN_MARGIN;
