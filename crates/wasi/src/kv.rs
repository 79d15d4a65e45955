//! The shared cache in `wasi:keyvalue/store@0.2.0-draft`.

use std::sync::OnceLock;

use lakebase::host::Kv;

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

    fn open(&self) -> Result<store::Bucket, String> {
        if let Some(id) = self.resolved.get() {
            return store::open(id).map_err(text);
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
            Err(e) => Err(format!(
                "cannot open key-value bucket `{}` ({}); configure it on the host",
                self.identifier,
                text(e)
            )),
        }
    }
}

fn text(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".to_owned(),
        store::Error::AccessDenied => "access denied".to_owned(),
        store::Error::Other(m) => m,
    }
}

impl Kv for WasiKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.open()?.get(key).map_err(text)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.open()?.set(key, value).map_err(text)
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        self.open()?.delete(key).map_err(text)
    }
}
