//! The one public error type, grouped by who must act.

use std::fmt;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Who must act on an error. The names are part of the app's JSON (`{"error":{"kind":…}}`).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A variable is missing or malformed: the operator fixes the app's configuration.
    Configuration,
    /// The workspace rejected the client id/secret or the personal access token.
    WorkspaceAuth,
    /// The principal lacks a permission on the workspace, endpoint or database.
    Permission,
    /// The endpoint, instance or row does not exist.
    NotFound,
    /// Databricks or the database could not be reached in time (429/5xx/network), after retries.
    Unavailable,
    /// The database answered with an error (SQLSTATE kept).
    Database,
    /// The request itself was invalid (bad input, or a 400 from the API).
    BadRequest,
}

impl ErrorKind {
    /// The stable lower-case name, e.g. `"workspace_auth"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Configuration => "configuration",
            ErrorKind::WorkspaceAuth => "workspace_auth",
            ErrorKind::Permission => "permission",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Database => "database",
            ErrorKind::BadRequest => "bad_request",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of this library. `Display` is one lower-case sentence for this layer; the cause, if
/// any, is in [`std::error::Error::source`]. No token, secret or connection string is ever part of
/// either.
pub struct Error {
    kind: ErrorKind,
    message: String,
    variable: Option<&'static str>,
    sqlstate: Option<String>,
    source: Option<Source>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            variable: None,
            sqlstate: None,
            source: None,
        }
    }

    /// A configuration error about one variable; the message must name it.
    pub(crate) fn config(variable: &'static str, message: impl Into<String>) -> Self {
        let mut e = Error::new(ErrorKind::Configuration, message);
        e.variable = Some(variable);
        e
    }

    /// The same error with the SQLSTATE the database answered (an adapter's query errors keep
    /// it, so that [`Error::sqlstate`] and [`Error::is_auth`] work on them).
    pub fn with_sqlstate(mut self, code: impl Into<String>) -> Self {
        let code = code.into();
        if !code.is_empty() {
            self.sqlstate = Some(code);
        }
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A copy for another request that waited on the same load: the same kind, message,
    /// variable and SQLSTATE, with the cause flattened to its text.
    pub(crate) fn shared_copy(&self) -> Self {
        Error {
            kind: self.kind,
            message: self.message.clone(),
            variable: self.variable,
            sqlstate: self.sqlstate.clone(),
            source: self
                .source
                .as_ref()
                .map(|s| Box::new(Cause(s.to_string())) as Source),
        }
    }

    /// An error of `kind` with a message, for code built on this crate (e.g. an app that
    /// reports its own failures in the same shape). The message must not contain secrets.
    pub fn from_message(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::new(kind, message)
    }

    /// A `configuration` error about one variable of the configuration table (so that
    /// [`Error::variable`] names it), for adapters that refuse a value the core accepts (e.g.
    /// `lakebase_ca_root` on a host that takes no CA). The message must name the variable.
    pub fn for_variable(variable: &'static str, message: impl Into<String>) -> Self {
        Error::config(variable, message)
    }

    /// Who must act.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message of this layer (same as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For configuration errors: the Spin variable to fix.
    pub fn variable(&self) -> Option<&'static str> {
        self.variable
    }

    /// The Postgres SQLSTATE, when the database gave one (e.g. `28P01`, `42P01`).
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// True when trying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }

    /// True when credentials were rejected: by the workspace, or by Postgres at login (`28P01`).
    pub fn is_auth(&self) -> bool {
        self.kind == ErrorKind::WorkspaceAuth || self.sqlstate.as_deref() == Some("28P01")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(v) = self.variable {
            d.field("variable", &v);
        }
        if let Some(s) = &self.sqlstate {
            d.field("sqlstate", s);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// A plain-text cause for `source()`, for host errors that are only strings.
#[derive(Debug)]
pub(crate) struct Cause(pub String);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cause {}

/// A `spin:postgres` error is a [`Error`] of kind `database` (SQLSTATE kept), so Spin handlers
/// can use `?` on queries. Feature `with-spin-sdk`, which `lakebase-spin` turns on: Rust's
/// orphan rule lets this impl live only beside [`Error`].
#[cfg(feature = "with-spin-sdk")]
impl From<spin_sdk::pg::Error> for Error {
    fn from(e: spin_sdk::pg::Error) -> Self {
        use spin_sdk::pg::{PgError, QueryError};
        match e {
            spin_sdk::pg::Error::PgError(PgError::QueryFailed(QueryError::DbError(db))) => {
                Error::new(
                    ErrorKind::Database,
                    format!("the database refused the query: {}", db.message),
                )
                .with_sqlstate(db.code.clone())
                .with_source(Cause(db.as_text))
            }
            other => Error::new(ErrorKind::Database, "the database query failed")
                .with_source(Cause(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_is_one_layer_and_cause_is_in_source() {
        let e = Error::new(ErrorKind::Unavailable, "databricks did not answer")
            .with_source(Cause("connection reset".into()));
        assert_eq!(e.to_string(), "databricks did not answer");
        assert_eq!(e.source().unwrap().to_string(), "connection reset");
        assert!(e.is_retryable());
        assert!(!e.is_auth());
    }

    #[test]
    fn kinds_have_stable_names() {
        let all = [
            (ErrorKind::Configuration, "configuration"),
            (ErrorKind::WorkspaceAuth, "workspace_auth"),
            (ErrorKind::Permission, "permission"),
            (ErrorKind::NotFound, "not_found"),
            (ErrorKind::Unavailable, "unavailable"),
            (ErrorKind::Database, "database"),
            (ErrorKind::BadRequest, "bad_request"),
        ];
        for (kind, name) in all {
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn sqlstate_28p01_is_auth() {
        let e = Error::new(ErrorKind::Database, "login rejected").with_sqlstate("28P01");
        assert!(e.is_auth());
        assert_eq!(e.sqlstate(), Some("28P01"));
    }
}
