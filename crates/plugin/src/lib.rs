//! The Lakebase plugin: the library's credentials exported as `lakebase:postgres/credentials`,
//! so that components in any language get cached Lakebase OAuth credentials by composition.
//!
//! Configured by the same Spin variables as the app; the parent component must let it inherit
//! its configuration (variables, allowed hosts, key-value stores).

use lakebase_spin::spin::lakebase;
use lakebase_spin::{CredentialSource, ErrorKind, connection_string};

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        path: "../../wit",
        world: "lakebase:postgres/plugin",
        with: {
            "spin:postgres/postgres@4.2.0": spin_sdk::pg::wit::postgres,
            "spin:key-value/key-value@3.0.0": spin_sdk::key_value::wit::key_value,
            "spin:variables/variables@3.0.0": spin_sdk::variables::wit::variables,
        },
    });
}

use bindings::exports::lakebase::postgres::credentials::{self as wit, Guest};

struct Plugin;

fn wit_error(e: lakebase_spin::Error) -> wit::Error {
    let kind = match e.kind() {
        ErrorKind::Configuration => wit::ErrorKind::Configuration,
        ErrorKind::WorkspaceAuth => wit::ErrorKind::WorkspaceAuth,
        ErrorKind::Permission => wit::ErrorKind::Permission,
        ErrorKind::NotFound => wit::ErrorKind::NotFound,
        ErrorKind::Unavailable => wit::ErrorKind::Unavailable,
        ErrorKind::Database => wit::ErrorKind::Database,
        _ => wit::ErrorKind::BadRequest,
    };
    wit::Error { kind, message: e.to_string(), sqlstate: e.sqlstate().map(str::to_owned) }
}

impl Guest for Plugin {
    fn get() -> Result<wit::Credential, wit::Error> {
        // Sync export over async imports: run the library's future to completion here.
        spin_sdk::wit_bindgen::block_on(async {
            let lb = lakebase().await.map_err(wit_error)?;
            let (c, source) = lb.credential().await.map_err(wit_error)?;
            let conn = connection_string(&c.user, &c.token, &c.host, c.port, &c.database, lb.config().sslmode);
            Ok(wit::Credential {
                host: c.host.clone(),
                port: c.port,
                database: c.database.clone(),
                user: c.user.clone(),
                password: c.token.expose().to_owned(),
                expires_at: c.expires_at.timestamp(),
                reuse_until: c.reuse_until().timestamp(),
                connection_string: conn.expose().to_owned(),
                source: match source {
                    CredentialSource::Memory => wit::Source::Memory,
                    CredentialSource::Kv => wit::Source::Kv,
                    _ => wit::Source::Minted,
                },
            })
        })
    }

    fn invalidate(password: String) -> bool {
        spin_sdk::wit_bindgen::block_on(async move {
            let Ok(lb) = lakebase().await else { return false };
            lb.invalidate_password(&password).await
        })
    }
}

bindings::export!(Plugin with_types_in bindings);
