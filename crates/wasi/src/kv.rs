//! The shared cache in `wasi:keyvalue/store@0.2.0-draft`.

use std::sync::OnceLock;

use lakebase::host::{HostError, HostFailure, Kv};

use crate::bindings::wasi::keyvalue::store;

/// A `wasi:keyvalue` bucket, opened for each operation (a bucket handle is not kept across
/// requests). The bucket is `default`; a host that knows no such bucket but answers to the
/// empty identifier (wasmtime 47's in-memory store accepts only `""`) gets that one.
#[derive(Clone, Debug)]
pub struct WasiKv {
    identifier: String,
    /// The identifier that opened, once one did.
    resolved: OnceLock<String>,
}

impl Default for WasiKv {
    fn default() -> Self {
        WasiKv::new("default")
    }
}

impl WasiKv {
    /// The bucket with this identifier.
    pub fn new(identifier: impl Into<String>) -> Self {
        WasiKv {
            identifier: identifier.into(),
            resolved: OnceLock::new(),
        }
    }

    fn open(&self) -> Result<store::Bucket, HostError> {
        if let Some(id) = self.resolved.get() {
            return store::open(id).map_err(error);
        }
        let opened = match store::open(&self.identifier) {
            Err(store::Error::NoSuchStore) if !self.identifier.is_empty() => store::open("")
                .map(|b| (b, String::new()))
                .map_err(|_| store::Error::NoSuchStore),
            other => other.map(|b| (b, self.identifier.clone())),
        };
        match opened {
            Ok((bucket, id)) => {
                let _ = self.resolved.set(id);
                Ok(bucket)
            }
            Err(e) => Err(error(e).context(|m| {
                format!(
                    "cannot open key-value bucket `{}` ({m}); configure it on the host",
                    self.identifier
                )
            })),
        }
    }
}

fn error(e: store::Error) -> HostError {
    match e {
        store::Error::NoSuchStore => HostError::new(HostFailure::NotFound, "no such store"),
        store::Error::AccessDenied => HostError::new(HostFailure::NotAllowed, "access denied"),
        store::Error::Other(m) => m.into(),
    }
}

impl Kv for WasiKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.open()?.get(key).map_err(error)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.open()?.set(key, value).map_err(error)
    }

    async fn delete(&self, key: &str) -> Result<(), HostError> {
        self.open()?.delete(key).map_err(error)
    }
}
