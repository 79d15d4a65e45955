//! Configuration from `wasi:config/store@0.2.0-rc.1`, under the Spin variables' names.

use lakebase::host::{HostError, Vars};

use crate::bindings::wasi::config::store;

/// `wasi:config` values: `databricks_host`, `databricks_client_id`, … (the configuration table of
/// the README). wasmtime: `-S config -S config-var=databricks_host=…`; wasmCloud: the
/// workload's `config`.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasiVars;

impl Vars for WasiVars {
    async fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        store::get(name).map_err(|e| match e {
            store::Error::Upstream(m) | store::Error::Io(m) => m.into(),
        })
    }
}
