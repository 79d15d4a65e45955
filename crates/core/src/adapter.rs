//! What a host adapter needs from the core besides the [`host`](crate::host) traits and the
//! client: the limit the core applies to what the host hands it, the error an adapter
//! reports in the core's words, and the `lakebase:` addresses the plugins take.
//! `lakebase-spin` and `lakebase-wasi` are built on these; so is an adapter of your own.

pub use crate::address::{Address, LAKEBASE_SCHEME};
pub use crate::deadline::MAX_BODY;
pub use crate::lakebase::not_in_memory;

/// The glue between the core and a plugin's generated bindings of a credentials interface
/// (`lakebase:postgres/credentials@0.1.0` or `lakebase:postgres-p2/credentials-sync@0.1.0`,
/// whose `error`, `error-kind`, `source` and `credential` have one shape). Given the generated
/// module, it defines in the calling module:
/// - `wit_error(lakebase::Error) -> <module>::Error`: the kind, the message (never a secret)
///   and the SQLSTATE;
/// - `wit_credential(Obtained, &Secret) -> <module>::Credential`: the credential with the
///   connection string the plugin hands out.
///
/// ```ignore
/// lakebase::credentials_glue!(bindings::exports::lakebase::postgres::credentials);
/// ```
#[macro_export]
macro_rules! credentials_glue {
    ($($wit:ident)::+) => {
        fn wit_error(e: $crate::Error) -> $($wit)::+::Error {
            use $($wit)::+ as wit;
            let kind = match e.kind() {
                $crate::ErrorKind::Configuration => wit::ErrorKind::Configuration,
                $crate::ErrorKind::WorkspaceAuth => wit::ErrorKind::WorkspaceAuth,
                $crate::ErrorKind::Permission => wit::ErrorKind::Permission,
                $crate::ErrorKind::NotFound => wit::ErrorKind::NotFound,
                $crate::ErrorKind::Unavailable => wit::ErrorKind::Unavailable,
                $crate::ErrorKind::Database => wit::ErrorKind::Database,
                _ => wit::ErrorKind::BadRequest,
            };
            wit::Error {
                kind,
                message: e.to_string(),
                sqlstate: e.sqlstate().map(str::to_owned),
            }
        }

        fn wit_credential(
            got: $crate::Obtained,
            connection_string: &$crate::Secret,
        ) -> $($wit)::+::Credential {
            use $($wit)::+ as wit;
            let c = got.credential;
            wit::Credential {
                host: c.host.clone(),
                port: c.port,
                database: c.database.clone(),
                user: c.user.clone(),
                password: c.token.expose().to_owned(),
                expires_at: c.expires_at.timestamp(),
                reuse_until: c.reuse_until().timestamp(),
                connection_string: connection_string.expose().to_owned(),
                source: match got.source {
                    $crate::CredentialSource::Memory => wit::Source::Memory,
                    $crate::CredentialSource::Kv => wit::Source::Kv,
                    _ => wit::Source::Minted,
                },
            }
        }
    };
}
