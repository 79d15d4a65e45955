//! The Spin host: `spin:variables`, `spin:key-value`, outbound `wasi:http` and `spin:postgres`
//! behind the core's seams, and the per-instance client.

use std::sync::OnceLock;

use spin_sdk::http::body::IncomingBodyExt as _;

use lakebase::adapter::{MAX_BODY, not_in_memory};
use lakebase::host::{
    ConnectError, Connector, ConnectorNow, HostError, Http, HttpRequest, HttpResponse, Kv, Vars,
};
use lakebase::{Config, ConnectOptions, Connected, Error, Lakebase, Secret};

use crate::clock::SystemClock;

/// Outbound HTTP through `wasi:http` (Spin checks `allowed_outbound_hosts`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinHttp;

impl Http for SpinHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HostError> {
        let (mut parts, body) = request.into_parts();
        // Without an explicit length a body is sent chunked, which some token endpoints refuse.
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, body.len().into());
        let request = http::Request::from_parts(
            parts,
            spin_sdk::http::FullBody::new(bytes::Bytes::from(body)),
        );
        let response = spin_sdk::http::send(request)
            .await
            .map_err(HostError::from_wasi_http)?;
        let (parts, body) = response.into_parts();
        // Read at most one byte past the cap: the core refuses a larger answer.
        let too_large = || HostError::from(format!("answer larger than {} bytes", MAX_BODY));
        if parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n > MAX_BODY)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        let mut chunks = body.stream();
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            let chunk = chunk.map_err(HostError::from_wasi_http)?;
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(http::Response::from_parts(parts, bytes))
    }
}

/// A Spin key-value store by label (`default` unless configured otherwise).
#[derive(Clone, Debug)]
pub struct SpinKv {
    label: String,
}

impl Default for SpinKv {
    fn default() -> Self {
        SpinKv {
            label: "default".to_owned(),
        }
    }
}

impl SpinKv {
    /// The store with this label; it must be listed in the component's `key_value_stores`.
    pub fn new(label: impl Into<String>) -> Self {
        SpinKv {
            label: label.into(),
        }
    }

    async fn store(&self) -> Result<spin_sdk::key_value::Store, HostError> {
        spin_sdk::key_value::Store::open(&self.label)
            .await
            .map_err(|e| {
                HostError::from_store(e).context(|m| {
                    format!(
                        "cannot open key-value store `{}` ({m}); list it in `key_value_stores`",
                        self.label
                    )
                })
            })
    }
}

impl Kv for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.store()
            .await?
            .get(key)
            .await
            .map_err(HostError::from_store)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.store()
            .await?
            .set(key, value)
            .await
            .map_err(HostError::from_store)
    }

    async fn delete(&self, key: &str) -> Result<(), HostError> {
        self.store()
            .await?
            .delete(key)
            .await
            .map_err(HostError::from_store)
    }
}

/// Component variables through `spin:variables`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinVars;

impl Vars for SpinVars {
    async fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        match spin_sdk::variables::get(name).await {
            Ok(v) => Ok(Some(v)),
            Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
            Err(e) => Err(format!("{e:?}").into()),
        }
    }
}

/// Postgres through `spin:postgres`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinPg;

impl Connector for SpinPg {
    type Connection = spin_sdk::pg::Connection;

    async fn open(
        &self,
        address: &Secret,
        ca_root: Option<&str>,
    ) -> Result<Self::Connection, ConnectError> {
        let options = spin_sdk::pg::OpenOptions {
            ca_root: ca_root.map(|pem| spin_sdk::pg::Certificate::Text(pem.to_owned())),
        };
        // Spin reports every connect failure as text (`connection-failed`), SQLSTATE inside.
        spin_sdk::pg::Connection::open_with_options(address.expose(), options)
            .await
            .map_err(|e| ConnectError::from_text(e.to_string()))
    }
}

/// The client type on Spin.
pub type SpinLakebase = Lakebase<SpinHttp, SpinKv, SystemClock>;

static INSTANCE: OnceLock<SpinLakebase> = OnceLock::new();

/// This instance's client, configured from the Spin variables on first use. A configuration
/// error is returned (and re-checked on the next call) rather than cached.
///
/// When the credential in memory is due for a refresh ahead ([`Lakebase::refresh_due`]), this
/// also starts [`Lakebase::refresh`] as a task of the current request, which goes on after the
/// handler has answered (a WASIp3 handler's instance lives until its tasks end): no request
/// waits for a rotation's mint, only a cold start does.
pub async fn lakebase() -> Result<&'static SpinLakebase, Error> {
    let lb = match INSTANCE.get() {
        Some(lb) => lb,
        None => {
            let config = Config::load(&SpinVars).await?;
            // Spin 4.1 keeps a WASIp3 instance until its spawned tasks end: the refresh below
            // runs after the response, past the reuse limit too.
            let lb = Lakebase::new(config, SpinHttp, SpinKv::default(), SystemClock)
                .with_refresh_after_response();
            INSTANCE.get_or_init(|| lb)
        }
    };
    if lb.refresh_due() {
        wit_bindgen::spawn(lb.refresh());
    }
    Ok(lb)
}

/// Opens a Lakebase Postgres connection with a cached or fresh credential.
///
/// ```no_run
/// # async fn run() -> Result<(), lakebase_spin::Error> {
/// let db = lakebase_spin::spin::connect().await?;
/// let rows = db.connection.query("SELECT 1", &[]).await?;
/// # Ok(()) }
/// ```
pub async fn connect() -> Result<Connected<spin_sdk::pg::Connection>, Error> {
    lakebase().await?.connect(&SpinPg).await
}

/// [`Lakebase::connect_now`] with this instance's client: opens a connection without waiting,
/// for a synchronous caller, with the credential an earlier asynchronous call of this instance
/// left in memory (also configured the client). Fails with a clear error otherwise.
pub fn connect_now<X: ConnectorNow>(
    connector: &X,
    options: &ConnectOptions,
) -> Result<Connected<X::Connection>, Error> {
    INSTANCE
        .get()
        .ok_or_else(not_in_memory)?
        .connect_now(connector, options)
}
