//! The seams between the host-neutral core and a WebAssembly host.
//!
//! The core is generic over these small traits. Host adapters implement them (`lakebase-spin`
//! for Spin, `lakebase-wasi` for standard WASI, or your own); the tests use fakes that count
//! calls. A WebAssembly instance runs one thread, so no `Send` bounds.
#![allow(async_fn_in_trait)]

use std::time::Duration;

use chrono::{DateTime, Utc};

/// An HTTP request of the core: method, absolute URL, headers, body. Mark `authorization` headers
/// sensitive (`HeaderValue::set_sensitive`) so that `Debug` does not print them.
pub type HttpRequest = http::Request<Vec<u8>>;
/// An HTTP response with its whole body read.
pub type HttpResponse = http::Response<Vec<u8>>;

/// Outbound HTTP.
pub trait Http {
    /// Sends one request. `Err` means no HTTP response at all (refused, reset, timed out, not
    /// allowed by the host); the string says why.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, String>;
}

/// A key-value store shared by every instance of the app. No TTL and no compare-and-swap.
pub trait Kv {
    /// The value of `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Sets `key` to `value`.
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Removes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), String>;
}

/// Time. The only source of "now" in the core, so expiry is testable without sleeping.
pub trait Clock {
    /// The current wall-clock time, UTC.
    fn now(&self) -> DateTime<Utc>;
    /// Waits `duration` (a back-off). A test clock advances itself instead.
    async fn sleep(&self, duration: Duration);
}

/// Named configuration values (Spin variables).
pub trait Vars {
    /// The value of `name`; `Ok(None)` when it is undefined or has no value.
    async fn get(&self, name: &str) -> Result<Option<String>, String>;
}

/// Opens Postgres connections. `address` is a full connection string holding a password;
/// `ca_root` the PEM of a CA to trust for its TLS, if one is set.
pub trait Connector {
    /// The open connection.
    type Connection;
    /// Opens a connection; the error is the host's text (Spin reports every connect failure as a
    /// string, with the server's SQLSTATE inside when there was one).
    async fn open(
        &self,
        address: &crate::Secret,
        ca_root: Option<&str>,
    ) -> Result<Self::Connection, String>;
}

/// Opens Postgres connections without waiting, for synchronous callers (see
/// [`crate::Lakebase::connect_now`]). The arguments are those of [`Connector::open`].
pub trait ConnectorNow {
    /// The open connection.
    type Connection;
    /// Opens a connection; the error is the host's text.
    fn open_now(
        &self,
        address: &crate::Secret,
        ca_root: Option<&str>,
    ) -> Result<Self::Connection, String>;
}
