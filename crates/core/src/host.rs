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

/// Why a host call (outbound HTTP, the key-value store, a variable) failed, as far as the host
/// can tell. The core decides on this, not on the text: a refusal by configuration is reported
/// as one at once, anything else may pass and is retried or bypassed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostFailure {
    /// The host refuses it by configuration: a destination outside the allowed hosts, a store
    /// the component may not open.
    NotAllowed,
    /// What was named does not exist: a host name that does not resolve, a store the host does
    /// not know.
    NotFound,
    /// The server's TLS certificate or handshake was refused.
    Certificate,
    /// No answer in time.
    Timeout,
    /// Anything else (a reset, a backend that is down, …): the message says what.
    Other,
}

/// A failed host call: what the core decides on, and the host's text for humans (never a
/// secret: adapters pass the host's error, not the request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError {
    /// What kind of failure.
    pub failure: HostFailure,
    /// The host's words.
    pub message: String,
}

impl HostError {
    /// A failure of this kind.
    pub fn new(failure: HostFailure, message: impl Into<String>) -> Self {
        HostError {
            failure,
            message: message.into(),
        }
    }

    /// The same failure, its message rewritten by `f` (to say what was being done).
    pub fn context(self, f: impl FnOnce(&str) -> String) -> Self {
        HostError::new(self.failure, f(&self.message))
    }

    /// An error of `wasi:http`'s `error-code`, from its `Debug` text (`HttpRequestDenied`,
    /// `DnsError(…)`, …): the variant names are the same in every binding of `wasi:http` 0.2 and
    /// 0.3, so the SDKs' distinct generated types classify alike.
    pub fn from_wasi_http(error_code: impl std::fmt::Debug) -> Self {
        let text = format!("{error_code:?}");
        let variant = text.split(['(', ' ', '{']).next().unwrap_or_default();
        let failure = match variant {
            "HttpRequestDenied" => HostFailure::NotAllowed,
            "DnsError" | "DnsTimeout" | "DestinationNotFound" => HostFailure::NotFound,
            "TlsCertificateError" | "TlsProtocolError" | "TlsAlertReceived" => {
                HostFailure::Certificate
            }
            "ConnectionTimeout"
            | "ConnectionReadTimeout"
            | "ConnectionWriteTimeout"
            | "HttpResponseTimeout" => HostFailure::Timeout,
            _ => HostFailure::Other,
        };
        HostError::new(failure, text)
    }

    /// An error of a key-value store (`wasi:keyvalue` or Spin's), from its `Debug` text:
    /// `AccessDenied` and `NoSuchStore` are configuration, the rest may pass.
    pub fn from_store(error: impl std::fmt::Debug) -> Self {
        let text = format!("{error:?}");
        let failure = if text.starts_with("AccessDenied") {
            HostFailure::NotAllowed
        } else if text.starts_with("NoSuchStore") {
            HostFailure::NotFound
        } else {
            HostFailure::Other
        };
        HostError::new(failure, text)
    }
}

/// Text only: [`HostFailure::Other`].
impl From<String> for HostError {
    fn from(message: String) -> Self {
        HostError::new(HostFailure::Other, message)
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

/// Outbound HTTP.
pub trait Http {
    /// Sends one request. `Err` means no HTTP response at all (refused, reset, timed out, not
    /// allowed by the host).
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HostError>;
}

/// A key-value store shared by every instance of the app. No TTL and no compare-and-swap.
pub trait Kv {
    /// The value of `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Sets `key` to `value`.
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), HostError>;
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
    async fn get(&self, name: &str) -> Result<Option<String>, HostError>;
}

/// Why a Postgres connect failed, as far as the host can tell. The core decides on this, not
/// on the text: what to retry, what to re-mint, whom to name in the error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The server refused the login with this SQLSTATE (`28P01`: the token; `28000`: the role;
    /// `3D000`: the database; `57P03`, `53300`, class `08`: busy or starting).
    Server {
        /// The five-character SQLSTATE.
        sqlstate: String,
    },
    /// The host refused the address before connecting: not allowed, or not a connection string
    /// it accepts.
    NotAllowed,
    /// The server's TLS certificate was refused (not trusted, another name, expired).
    Certificate,
    /// TLS could not be set up: the server does not speak it, or the CA root is not usable.
    Tls,
    /// No connection: refused, reset, unreachable, timed out. May pass on its own.
    Network,
    /// The host says only text (Spin's `connection-failed`): the core reads the text.
    Unknown,
}

/// A failed connect: what kind of failure, and the host's text for people (the core scrubs
/// secrets from it and caps its length before it shows it anywhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError {
    /// What kind of failure.
    pub failure: ConnectFailure,
    /// The host's text.
    pub message: String,
}

impl ConnectError {
    /// A failure of a known kind.
    pub fn new(failure: ConnectFailure, message: impl Into<String>) -> Self {
        ConnectError {
            failure,
            message: message.into(),
        }
    }

    /// A failure the host describes only in text ([`ConnectFailure::Unknown`]).
    pub fn from_text(message: impl Into<String>) -> Self {
        Self::new(ConnectFailure::Unknown, message)
    }
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        Self::from_text(message)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Opens Postgres connections. `address` is a full connection string holding a password;
/// `ca_root` the PEM of a CA to trust for its TLS, if one is set.
pub trait Connector {
    /// The open connection.
    type Connection;
    /// Opens a connection. An adapter that knows more than text (a SQLSTATE, a TLS or network
    /// failure) says so in [`ConnectError::failure`]; Spin gives only text
    /// ([`ConnectError::from_text`]).
    async fn open(
        &self,
        address: &crate::Secret,
        ca_root: Option<&str>,
    ) -> Result<Self::Connection, ConnectError>;
}

/// Opens Postgres connections without waiting, for synchronous callers (see
/// [`crate::Lakebase::connect_now`]). The arguments are those of [`Connector::open`].
pub trait ConnectorNow {
    /// The open connection.
    type Connection;
    /// Opens a connection; the error as for [`Connector::open`].
    fn open_now(
        &self,
        address: &crate::Secret,
        ca_root: Option<&str>,
    ) -> Result<Self::Connection, ConnectError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::transport_configuration_error;

    /// The shapes of `wasi:http`'s `error-code` as the SDKs' `Debug` prints them.
    #[derive(Debug)]
    #[allow(dead_code)]
    enum ErrorCode {
        HttpRequestDenied,
        DnsError(DnsErrorPayload),
        DestinationNotFound,
        TlsCertificateError,
        ConnectionTimeout,
        ConnectionRefused,
        InternalError(Option<String>),
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct DnsErrorPayload {
        rcode: Option<String>,
    }

    #[test]
    fn host_errors_are_classified_on_their_kind_not_their_words() {
        let cases = [
            (ErrorCode::HttpRequestDenied, HostFailure::NotAllowed),
            (
                ErrorCode::DnsError(DnsErrorPayload {
                    rcode: Some("NXDOMAIN".into()),
                }),
                HostFailure::NotFound,
            ),
            (ErrorCode::DestinationNotFound, HostFailure::NotFound),
            (ErrorCode::TlsCertificateError, HostFailure::Certificate),
            (ErrorCode::ConnectionTimeout, HostFailure::Timeout),
            (ErrorCode::ConnectionRefused, HostFailure::Other),
            // Words that look like a refusal do not make one.
            (
                ErrorCode::InternalError(Some("HttpRequestDenied by a proxy".into())),
                HostFailure::Other,
            ),
        ];
        for (code, failure) in cases {
            let e = HostError::from_wasi_http(&code);
            assert_eq!(e.failure, failure, "{code:?}");
            assert_eq!(e.message, format!("{code:?}"));
        }
        // The core acts on the kind: a refusal, an unknown name or a refused certificate is
        // configuration at once; a timeout is retried whatever its words.
        // Spin's allow-list and wasmCloud's are both named: the same code is denied on each.
        let denied =
            transport_configuration_error(&HostError::from_wasi_http(ErrorCode::HttpRequestDenied))
                .unwrap();
        assert!(denied.contains("allowed_outbound_hosts") && denied.contains("allowedHosts"));
        assert!(
            transport_configuration_error(&HostError::new(HostFailure::NotFound, "no such host"))
                .unwrap()
                .contains("does not resolve")
        );
        assert_eq!(
            transport_configuration_error(&HostError::new(
                HostFailure::Timeout,
                "certificate not allowed"
            )),
            None
        );
        // A host that gives text only is still read by its words.
        assert!(
            transport_configuration_error(&HostError::from(
                "ErrorCode::HttpRequestDenied".to_owned()
            ))
            .is_some()
        );

        #[derive(Debug)]
        #[allow(dead_code)]
        enum StoreError {
            AccessDenied,
            NoSuchStore,
            Other(String),
        }
        for (e, failure) in [
            (StoreError::AccessDenied, HostFailure::NotAllowed),
            (StoreError::NoSuchStore, HostFailure::NotFound),
            (
                StoreError::Other("connection refused".into()),
                HostFailure::Other,
            ),
        ] {
            assert_eq!(HostError::from_store(&e).failure, failure, "{e:?}");
        }
    }
}
