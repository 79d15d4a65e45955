//! The deny adapter of the devhost: exports Spin's interfaces with every entry point failing
//! with `"<interface>" is not permitted`, as Spin's own adapter does. The devhost plugs it into
//! the imports of a component dependency that does not inherit its parent's configuration.
//!
//! Methods of resources that can never be obtained (a connection, an open store) are
//! unreachable.

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        inline: "
            package lakebase:deny-adapter;
            world adapter {
                export spin:postgres/postgres@4.2.0;
                export spin:key-value/key-value@3.0.0;
                export spin:variables/variables@3.0.0;
                export fermyon:spin/key-value@2.0.0;
                export fermyon:spin/variables@2.0.0;
            }
        ",
        path: [
            "../../wit/deps/spin-postgres@4.2.0",
            "../../wit/deps/spin-key-value@3.0.0",
            "../../wit/deps/spin-variables@3.0.0",
            "../devhost/wit/fermyon-spin@2.0.0",
        ],
    });
}

use bindings::exports::fermyon::spin::key_value as kv2;
use bindings::exports::fermyon::spin::variables as vars2;
use bindings::exports::spin::key_value::key_value as kv;
use bindings::exports::spin::postgres::postgres as pg;
use bindings::exports::spin::variables::variables as vars;
use spin_sdk::wit_bindgen::{FutureReader, StreamReader};

fn not_permitted(interface: &str) -> String {
    format!("{interface:?} is not permitted")
}

fn pg_denied() -> pg::Error {
    pg::Error::Other(not_permitted("spin:postgres/postgres"))
}

struct Deny;

/// A resource value that is never created.
enum Never {}

impl pg::Guest for Deny {
    type Connection = Never;
    type ConnectionBuilder = Builder;
}

/// Accepts an address and a CA like Spin's, then refuses to build.
struct Builder;

impl pg::GuestConnectionBuilder for Builder {
    fn new(_address: String) -> Self {
        Builder
    }
    fn set_ca_root(&self, _certificate: String) -> Result<(), pg::Error> {
        Ok(())
    }
    fn build(&self) -> Result<pg::Connection, pg::Error> {
        Err(pg_denied())
    }
    async fn build_async(&self) -> Result<pg::Connection, pg::Error> {
        Err(pg_denied())
    }
}

impl pg::GuestConnection for Never {
    fn open(_address: String) -> Result<pg::Connection, pg::Error> {
        Err(pg_denied())
    }
    async fn open_async(_address: String) -> Result<pg::Connection, pg::Error> {
        Err(pg_denied())
    }
    fn query(
        &self,
        _statement: String,
        _params: Vec<pg::ParameterValue>,
    ) -> Result<pg::RowSet, pg::Error> {
        match *self {}
    }
    #[allow(clippy::type_complexity)]
    async fn query_async(
        &self,
        _statement: String,
        _params: Vec<pg::ParameterValue>,
    ) -> Result<
        (
            Vec<pg::Column>,
            StreamReader<pg::Row>,
            FutureReader<Result<(), pg::Error>>,
        ),
        pg::Error,
    > {
        match *self {}
    }
    fn execute(
        &self,
        _statement: String,
        _params: Vec<pg::ParameterValue>,
    ) -> Result<u64, pg::Error> {
        match *self {}
    }
    async fn execute_async(
        &self,
        _statement: String,
        _params: Vec<pg::ParameterValue>,
    ) -> Result<u64, pg::Error> {
        match *self {}
    }
}

impl kv::Guest for Deny {
    type Store = NeverStore;
}

/// A store that is never opened.
enum NeverStore {}

impl kv::GuestStore for NeverStore {
    async fn open(_label: String) -> Result<kv::Store, kv::Error> {
        Err(kv::Error::AccessDenied)
    }
    async fn get(&self, _key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        match *self {}
    }
    async fn set(&self, _key: String, _value: Vec<u8>) -> Result<(), kv::Error> {
        match *self {}
    }
    async fn delete(&self, _key: String) -> Result<(), kv::Error> {
        match *self {}
    }
    async fn exists(&self, _key: String) -> Result<bool, kv::Error> {
        match *self {}
    }
    async fn get_keys(&self) -> (StreamReader<String>, FutureReader<Result<(), kv::Error>>) {
        match *self {}
    }
}

impl vars::Guest for Deny {
    /// As on Spin 4.1 (checked by `tests/e2e_hosts.rs`): a dependency that does not inherit
    /// the variables finds every one undefined, rather than "not permitted".
    async fn get(name: String) -> Result<String, vars::Error> {
        Err(vars::Error::Undefined(format!("no variable for {name:?}")))
    }
}

// The WASIp2 interfaces (`fermyon:spin@2.0.0`, spin-sdk 5.2 components), as Spin 3.6.3's deny-all
// adapter answers them: no store opens (`no-such-store`), every variable is undefined. (The
// devhost does not deny `spin:postgres@4.0.0`: see its README.)

/// A WASIp2 store that is never opened.
enum NeverStore2 {}

impl kv2::Guest for Deny {
    type Store = NeverStore2;
}

impl kv2::GuestStore for NeverStore2 {
    fn open(_label: String) -> Result<kv2::Store, kv2::Error> {
        Err(kv2::Error::NoSuchStore)
    }
    fn get(&self, _key: String) -> Result<Option<Vec<u8>>, kv2::Error> {
        match *self {}
    }
    fn set(&self, _key: String, _value: Vec<u8>) -> Result<(), kv2::Error> {
        match *self {}
    }
    fn delete(&self, _key: String) -> Result<(), kv2::Error> {
        match *self {}
    }
    fn exists(&self, _key: String) -> Result<bool, kv2::Error> {
        match *self {}
    }
    fn get_keys(&self) -> Result<Vec<String>, kv2::Error> {
        match *self {}
    }
}

impl vars2::Guest for Deny {
    fn get(name: String) -> Result<String, vars2::Error> {
        Err(vars2::Error::Undefined(name))
    }
}

bindings::export!(Deny with_types_in bindings);
