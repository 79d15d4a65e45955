//! The Lakebase plugin for WASIp2 Spin components (`lakebase_plugin_p2.wasm`).
//!
//! It exports, configured by the Spin variables of the component it is composed into (that
//! component needs `dependencies_inherit_configuration = true`, which every Spin reads; Spin 4.0
//! and later also take `inherit_configuration = true` on the dependency, which Spin 3.x refuses):
//! - `spin:postgres/postgres@4.0.0`, virtualizing the host's: an address `lakebase:` (the
//!   configured database) or `lakebase://<database>` opens a host connection with the cached
//!   token as password, minting once more when the server rejects it (`28P01`); any other
//!   address goes to the host untouched. `query` and `execute` are forwarded.
//! - `lakebase:postgres-p2/credentials-sync@0.1.0` (`wit/p2/lakebase-p2.wit`): `get` and
//!   `invalidate`, synchronous.
//!
//! WASIp2 exports are synchronous, so each export that needs the core's async calls drives them
//! to completion with spin-sdk 5.2's executor (`spin_sdk::http::run`): it waits on the host's
//! pollables (HTTP, timers), which a WASIp2 export may do. Its imports are what spin-sdk 5.2
//! uses: `spin:postgres@4.0.0`, `fermyon:spin` key-value and variables @2.0.0, `wasi:http@0.2`.

// The error type is `spin:postgres`'s, fixed by its WIT.
#![allow(clippy::result_large_err)]

use lakebase_spin_p2::Secret;
use lakebase_spin_p2::adapter::Address;
use lakebase_spin_p2::spin::{connect_with, lakebase};
use spin_sdk::wit::pg4 as hpg;

mod bindings {
    #![allow(missing_docs, clippy::all)]
    wit_bindgen::generate!({
        path: "../../wit/p2",
        world: "lakebase:postgres-p2/plugin-p2",
        // The imported spin:postgres is spin-sdk 5.2's own bindings (`spin_sdk::pg4`'s types),
        // those of lakebase-spin-p2's connector `SpinPg`.
        with: {
            "spin:postgres/postgres@4.0.0": spin_sdk::wit::pg4,
        },
    });
}

mod convert;

use bindings::exports::lakebase::postgres_p2::credentials_sync as wit;
use bindings::exports::spin::postgres::postgres as vpg;

struct Plugin;

/// A library error as `spin:postgres`'s `connection-failed`: who must act and what to do, with
/// the host's (scrubbed) text after it. Never a token or connection string.
fn connect_error(e: lakebase_spin_p2::Error) -> vpg::Error {
    let mut text = format!("lakebase {}: {e}", e.kind().as_str());
    if let Some(cause) = std::error::Error::source(&e) {
        text.push_str(&format!(" ({cause})"));
    }
    vpg::Error::ConnectionFailed(text)
}

/// Opens a host connection for `address`: a `lakebase:` one through the core (cached
/// credential, one re-mint on `28P01`), driven to completion here; any other as it is.
fn open(address: &str) -> Result<hpg::Connection, vpg::Error> {
    match Address::parse(address).map_err(vpg::Error::ConnectionFailed)? {
        Address::PassThrough(address) => hpg::Connection::open(address).map_err(convert::error_out),
        Address::Lakebase(options) => spin_sdk::http::run(connect_with(&options))
            .map(|connected| connected.connection)
            .map_err(connect_error),
    }
}

// ---- the virtualized spin:postgres@4.0.0 ----------------------------------------------------

impl vpg::Guest for Plugin {
    type Connection = Connection;
}

/// A host connection.
struct Connection(hpg::Connection);

impl vpg::GuestConnection for Connection {
    fn open(address: String) -> Result<vpg::Connection, vpg::Error> {
        Ok(vpg::Connection::new(Connection(open(&address)?)))
    }

    fn query(
        &self,
        statement: String,
        params: Vec<vpg::ParameterValue>,
    ) -> Result<vpg::RowSet, vpg::Error> {
        let params: Vec<hpg::ParameterValue> =
            params.into_iter().map(convert::parameter_in).collect();
        self.0
            .query(&statement, &params)
            .map(convert::row_set_out)
            .map_err(convert::error_out)
    }

    fn execute(
        &self,
        statement: String,
        params: Vec<vpg::ParameterValue>,
    ) -> Result<u64, vpg::Error> {
        let params: Vec<hpg::ParameterValue> =
            params.into_iter().map(convert::parameter_in).collect();
        self.0
            .execute(&statement, &params)
            .map_err(convert::error_out)
    }
}

// ---- lakebase:postgres-p2/credentials-sync --------------------------------------------------

lakebase_spin_p2::credentials_glue!(bindings::exports::lakebase::postgres_p2::credentials_sync);

impl wit::Guest for Plugin {
    fn get() -> Result<wit::Credential, wit::Error> {
        spin_sdk::http::run(async {
            let lb = lakebase().await.map_err(wit_error)?;
            let got = lb.credential().await.map_err(wit_error)?;
            let conn = lb.connection_string(&got.credential);
            Ok(wit_credential(got, &conn))
        })
    }

    fn invalidate(password: String) -> bool {
        spin_sdk::http::run(async {
            let Ok(lb) = lakebase().await else {
                return false;
            };
            lb.invalidate(&Secret::new(password)).await
        })
    }
}

bindings::export!(Plugin with_types_in bindings);
