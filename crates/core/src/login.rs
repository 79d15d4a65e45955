//! What a failed Postgres login means, and the error that says who must act. An adapter that
//! knows the kind of failure says so ([`ConnectFailure`]); Spin reports every connect failure as
//! text (with the server's SQLSTATE inside when there was one), which is then read.

use crate::config::var;
use crate::credential::Credential;
use crate::error::{Cause, Error, ErrorKind};
use crate::host::ConnectFailure;

/// What a failed login means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginFailure {
    /// The token was rejected (`28P01`): drop it and mint once more.
    Rejected,
    /// Someone must change something; do not retry.
    Fatal(ErrorKind, Option<&'static str>),
    /// May pass on its own (refused, reset, a scale-to-zero endpoint waking up).
    Transient,
}

/// What `failure` means; `message` (the host's text) decides only what the kind leaves open.
pub(crate) fn classify(failure: &ConnectFailure, message: &str) -> LoginFailure {
    match failure {
        ConnectFailure::Server { sqlstate } => match sqlstate.as_str() {
            // A proxy that does not take our startup `options` (PgBouncer 1.20+: "unsupported
            // startup parameter in options"): no retry will pass it.
            "08P01" if refuses_options(message) => LoginFailure::Fatal(
                ErrorKind::Configuration,
                Some(var::LAKEBASE_IDLE_SESSION_TIMEOUT),
            ),
            "28P01" => LoginFailure::Rejected,
            "28000" => LoginFailure::Fatal(ErrorKind::Permission, Some(var::PGUSER)),
            "3D000" => LoginFailure::Fatal(ErrorKind::NotFound, Some(var::PGDATABASE)),
            // Busy, starting, shutting down, or the connection broke.
            s if s.starts_with("08") || s.starts_with("53") || s.starts_with("57P") => {
                LoginFailure::Transient
            }
            // Another SQLSTATE: what the text says (a proxy's "not a valid JWT", say).
            _ => classify_login_failure(message),
        },
        ConnectFailure::NotAllowed => {
            LoginFailure::Fatal(ErrorKind::Configuration, Some(var::PGHOST))
        }
        ConnectFailure::Certificate => {
            LoginFailure::Fatal(ErrorKind::Configuration, Some(var::LAKEBASE_CA_ROOT))
        }
        ConnectFailure::Tls => LoginFailure::Fatal(ErrorKind::Configuration, Some(var::PGSSLMODE)),
        ConnectFailure::Network => LoginFailure::Transient,
        ConnectFailure::Unknown => classify_login_failure(message),
    }
}

/// What a failed login means, read from the host's text alone.
pub(crate) fn classify_login_failure(message: &str) -> LoginFailure {
    let m = message.to_ascii_lowercase();
    if refuses_options(message) {
        LoginFailure::Fatal(
            ErrorKind::Configuration,
            Some(var::LAKEBASE_IDLE_SESSION_TIMEOUT),
        )
    } else if m.contains("28p01")
        || m.contains("password authentication failed")
        || m.contains("not a valid jwt")
    {
        LoginFailure::Rejected
    } else if m.contains("28000") || (m.contains("role") && m.contains("does not exist")) {
        LoginFailure::Fatal(ErrorKind::Permission, Some(var::PGUSER))
    } else if m.contains("3d000") || (m.contains("database") && m.contains("does not exist")) {
        LoginFailure::Fatal(ErrorKind::NotFound, Some(var::PGDATABASE))
    } else if m.contains("not allowed")
        || m.contains("not permitted")
        || m.contains("allowed_outbound_hosts")
        || m.contains("invalid connection string")
        || m.contains("invalid configuration")
    {
        LoginFailure::Fatal(ErrorKind::Configuration, Some(var::PGHOST))
    } else if m.contains("certificate") || m.contains("unknownissuer") || m.contains("invalid peer")
    {
        LoginFailure::Fatal(ErrorKind::Configuration, Some(var::LAKEBASE_CA_ROOT))
    } else {
        LoginFailure::Transient
    }
}

/// Whether a login failed because something in front of the server refuses the `options`
/// startup parameter (the `-c idle_session_timeout=…` the connection string carries).
fn refuses_options(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("unsupported startup parameter") || (m.contains("08p01") && m.contains("options"))
}

/// The error of a failed login; `ca_root_set`: whether a CA root was given to the connect.
pub(crate) fn login_error(
    failure: LoginFailure,
    message: String,
    c: &Credential,
    ca_root_set: bool,
) -> Error {
    let (kind, text) = match failure {
        LoginFailure::Fatal(ErrorKind::Permission, _) => (
            ErrorKind::Permission,
            format!(
                "postgres role `{}` does not exist or may not log in: create the role for this principal in Lakebase, or set `{}`",
                c.user,
                var::PGUSER
            ),
        ),
        LoginFailure::Fatal(ErrorKind::NotFound, _) => (
            ErrorKind::NotFound,
            format!(
                "database `{}` does not exist: check `{}`",
                c.database,
                var::PGDATABASE
            ),
        ),
        LoginFailure::Fatal(ErrorKind::Configuration, Some(var::LAKEBASE_CA_ROOT)) => (
            ErrorKind::Configuration,
            if ca_root_set {
                format!(
                    "the TLS certificate of {}:{} was refused with the CA of `{}` ({}): it must hold the CA that signed the server's certificate (not the server's own certificate), and the certificate must name `{}`",
                    c.host,
                    c.port,
                    var::LAKEBASE_CA_ROOT,
                    message,
                    var::PGHOST
                )
            } else {
                format!(
                    "the TLS certificate of {}:{} was refused ({}): if the server uses a private CA, set `{}` to its PEM; check `{}`",
                    c.host,
                    c.port,
                    message,
                    var::LAKEBASE_CA_ROOT,
                    var::PGHOST
                )
            },
        ),
        LoginFailure::Fatal(ErrorKind::Configuration, Some(var::PGSSLMODE)) => (
            ErrorKind::Configuration,
            format!(
                "TLS with postgres at {}:{} could not be set up ({}): the token is sent only over TLS; check `{}`/`{}` (a Lakebase endpoint speaks TLS) and `{}`",
                c.host,
                c.port,
                message,
                var::PGHOST,
                var::PGPORT,
                var::LAKEBASE_CA_ROOT
            ),
        ),
        LoginFailure::Fatal(ErrorKind::Configuration, Some(var::LAKEBASE_IDLE_SESSION_TIMEOUT)) => {
            (
                ErrorKind::Configuration,
                format!(
                    "the login to {}:{} was refused because of the `options` startup parameter ({}): a proxy or pooler in front of the database does not take `-c idle_session_timeout`; set `{}` to 0 to leave it out (idle sessions of replaced tokens are then closed by the server's own settings only)",
                    c.host,
                    c.port,
                    message,
                    var::LAKEBASE_IDLE_SESSION_TIMEOUT
                ),
            )
        }
        LoginFailure::Fatal(kind, _) => (
            kind,
            format!(
                "the host refused to connect to postgres://{}:{}: add it to `allowed_outbound_hosts` in spin.toml, and check `{}`/`{}`",
                c.host,
                c.port,
                var::PGHOST,
                var::PGPORT
            ),
        ),
        LoginFailure::Transient | LoginFailure::Rejected => (
            ErrorKind::Unavailable,
            format!("could not connect to postgres at {}:{}", c.host, c.port),
        ),
    };
    let sqlstate = ["28000", "3D000"]
        .into_iter()
        .find(|s| message.contains(&format!("SQLSTATE {s}")) || message.contains(s));
    let mut e = Error::new(kind, text).with_source(Cause(message));
    if let Some(s) = sqlstate {
        e = e.with_sqlstate(s);
    }
    e
}

/// A login rejected again with a token minted just now: the role, not the token, is wrong.
pub(crate) fn rejected_twice(message: String, user: &str) -> Error {
    Error::new(
        ErrorKind::Database,
        format!(
            "postgres rejected a freshly minted token for role `{}`: check that this role exists for the principal and that `{}` names it",
            user,
            var::PGUSER
        ),
    )
    .with_sqlstate("28P01")
    .with_source(Cause(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_refusing_our_options_is_a_configuration_error_at_once() {
        let refused = ConnectFailure::Server {
            sqlstate: "08P01".to_owned(),
        };
        let text = "unsupported startup parameter in options: idle_session_timeout";
        assert_eq!(
            classify(&refused, text),
            LoginFailure::Fatal(
                ErrorKind::Configuration,
                Some(var::LAKEBASE_IDLE_SESSION_TIMEOUT)
            )
        );
        // Another protocol violation stays transient (a broken connection, say).
        assert_eq!(
            classify(&refused, "unexpected message"),
            LoginFailure::Transient
        );
    }

    #[test]
    fn login_failures_are_classified() {
        use LoginFailure::*;
        let cases = [
            (
                "db error: FATAL: password authentication failed for user \"x\"",
                Rejected,
            ),
            ("Error { code: SqlState(E28P01) }", Rejected),
            (
                "FATAL: Provided authentication token is not a valid JWT encoding",
                Rejected,
            ),
            (
                "FATAL: role \"x\" does not exist",
                Fatal(ErrorKind::Permission, Some("pguser")),
            ),
            (
                "FATAL: database \"x\" does not exist",
                Fatal(ErrorKind::NotFound, Some("pgdatabase")),
            ),
            (
                "destination not allowed: postgres://h:1",
                Fatal(ErrorKind::Configuration, Some("pghost")),
            ),
            (
                "invalid connection string",
                Fatal(ErrorKind::Configuration, Some("pghost")),
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                Fatal(ErrorKind::Configuration, Some("lakebase_ca_root")),
            ),
            (
                "db error: FATAL: unsupported startup parameter in options: idle_session_timeout",
                Fatal(
                    ErrorKind::Configuration,
                    Some("lakebase_idle_session_timeout"),
                ),
            ),
            ("Connection refused (os error 111)", Transient),
            ("", Transient),
        ];
        for (message, want) in cases {
            assert_eq!(classify_login_failure(message), want, "{message}");
        }
    }

    #[test]
    fn typed_failures_are_classified_on_their_kind_not_their_text() {
        use LoginFailure::*;
        let server = |s: &str| ConnectFailure::Server {
            sqlstate: s.to_owned(),
        };
        let cases = [
            (server("28P01"), "", Rejected),
            (
                server("28000"),
                "",
                Fatal(ErrorKind::Permission, Some("pguser")),
            ),
            (
                server("3D000"),
                "",
                Fatal(ErrorKind::NotFound, Some("pgdatabase")),
            ),
            (
                server("57P03"),
                "the database system is starting up",
                Transient,
            ),
            (server("53300"), "too many connections", Transient),
            // An unknown SQLSTATE falls back on the text.
            (
                server("XX000"),
                "Provided authentication token is not a valid JWT encoding",
                Rejected,
            ),
            // Text that would mislead a reader of text alone.
            (
                ConnectFailure::Tls,
                "server does not support TLS",
                Fatal(ErrorKind::Configuration, Some("pgsslmode")),
            ),
            (
                ConnectFailure::Network,
                "certificate store unreachable",
                Transient,
            ),
            (
                ConnectFailure::Certificate,
                "UnknownIssuer",
                Fatal(ErrorKind::Configuration, Some("lakebase_ca_root")),
            ),
            (
                ConnectFailure::NotAllowed,
                "",
                Fatal(ErrorKind::Configuration, Some("pghost")),
            ),
            (
                ConnectFailure::Unknown,
                "password authentication failed",
                Rejected,
            ),
        ];
        for (failure, message, want) in cases {
            assert_eq!(classify(&failure, message), want, "{failure:?} {message}");
        }
    }
}
