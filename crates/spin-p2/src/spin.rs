//! The WASIp2 Spin host: `fermyon:spin/variables@2.0.0`, `fermyon:spin/key-value@2.0.0`,
//! outbound `wasi:http@0.2` and `spin:postgres@4.0.0` behind the core's seams, and the
//! per-instance client. The same shape as `lakebase_spin::spin` (spin-sdk 7).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use lakebase::adapter::{MAX_BODY, not_in_memory};
use lakebase::host::{
    ConnectError, Connector, ConnectorNow, HostError, Http, HttpRequest, HttpResponse, Kv, Vars,
};
use lakebase::{Config, ConnectOptions, Connected, Error, ErrorKind, Lakebase, Secret};

use crate::clock::SystemClock;

/// Outbound HTTP through `wasi:http@0.2` (Spin checks `allowed_outbound_hosts`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinHttp;

impl Http for SpinHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HostError> {
        let (mut parts, body) = request.into_parts();
        // Without an explicit length a body is sent chunked, which some token endpoints refuse.
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, body.len().into());
        let request = http::Request::from_parts(parts, body);
        let response: spin_sdk::http::IncomingResponse =
            spin_sdk::http::send(request).await.map_err(|e| match e {
                spin_sdk::http::SendError::Http(code) => HostError::from_wasi_http(code),
                other => HostError::from(format!("{other:?}")),
            })?;
        let mut answer = http::Response::builder().status(response.status());
        for (name, value) in response.headers().entries() {
            // A header `http` cannot hold is not one the core reads.
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(&value),
            ) {
                answer = answer.header(name, value);
            }
        }
        // Read at most one chunk past the cap: the core refuses a larger answer.
        let too_large = || HostError::from(format!("answer larger than {} bytes", MAX_BODY));
        if answer
            .headers_ref()
            .and_then(|h| h.get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n > MAX_BODY)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        // `response` stays alive while its body is read: dropping it cancels the request.
        let mut chunks = std::pin::pin!(response.take_body_stream());
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            let chunk = chunk.map_err(HostError::from_wasi_http)?;
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        answer.body(bytes).map_err(|e| e.to_string().into())
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

    fn store(&self) -> Result<spin_sdk::key_value::Store, HostError> {
        spin_sdk::key_value::Store::open(&self.label).map_err(|e| {
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
        self.store()?.get(key).map_err(HostError::from_store)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.store()?.set(key, value).map_err(HostError::from_store)
    }

    async fn delete(&self, key: &str) -> Result<(), HostError> {
        self.store()?.delete(key).map_err(HostError::from_store)
    }
}

/// Component variables through `fermyon:spin/variables@2.0.0`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinVars;

impl Vars for SpinVars {
    async fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        match spin_sdk::variables::get(name) {
            Ok(v) => Ok(Some(v)),
            Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
            Err(e) => Err(format!("{e:?}").into()),
        }
    }
}

/// The variable that `spin:postgres@4.0.0` has no place for.
const CA_ROOT_VARIABLE: &str = "lakebase_ca_root";

/// Why a CA root cannot be used here, and what to do instead.
const NO_CA_ROOT: &str = "a custom CA root (`lakebase_ca_root`) cannot be used with WASIp2 Spin components: \
     spin:postgres@4.0.0 (lakebase-spin-p2, spin-p2.toml; Spin 3.4 to 4.0.x) has no way to pass one. \
     Leave `lakebase_ca_root` empty and use a server certificate that Spin's own roots trust, or use \
     lakebase-spin (spin-sdk 7, spin.toml) on Spin 4.1 or later, whose spin:postgres@4.2.0 takes it";

/// Postgres through `spin:postgres@4.0.0`.
///
/// Opening a connection is a synchronous host call in spin-sdk 5.2: it returns when the host
/// has connected (or failed), so the core's connect deadline cannot cut it short; only Spin's
/// own connect timeout bounds it. It refuses a CA root: that interface cannot take one.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinPg;

impl Connector for SpinPg {
    type Connection = spin_sdk::pg4::Connection;

    async fn open(
        &self,
        address: &Secret,
        ca_root: Option<&str>,
    ) -> Result<Self::Connection, ConnectError> {
        self.open_now(address, ca_root)
    }
}

impl ConnectorNow for SpinPg {
    type Connection = spin_sdk::pg4::Connection;

    fn open_now(
        &self,
        address: &Secret,
        ca_root: Option<&str>,
    ) -> Result<Self::Connection, ConnectError> {
        if ca_root.is_some() {
            return Err(ConnectError::from_text(format!(
                "invalid certificate configuration: {NO_CA_ROOT}"
            )));
        }
        // Spin reports a failed connect as text (SQLSTATE inside when the server sent one).
        spin_sdk::pg4::Connection::open(address.expose())
            .map_err(|e| ConnectError::from_text(pg_text(&e)))
    }
}

/// A host error as text: the host's own message where it is one string.
fn pg_text(e: &spin_sdk::pg4::PgError) -> String {
    use spin_sdk::pg4::{PgError, QueryError};
    match e {
        PgError::ConnectionFailed(m) | PgError::Other(m) => m.clone(),
        PgError::QueryFailed(QueryError::DbError(db)) => {
            format!("{} (SQLSTATE {})", db.as_text, db.code)
        }
        other => format!("{other:?}"),
    }
}

/// A `spin:postgres@4.0.0` error (from a query, an execute or a decode) as a library [`Error`]
/// of kind `database`, SQLSTATE kept. `lakebase-spin` has `From` for this; here it is a function,
/// since Rust's orphan rule allows that `From` only beside [`Error`] (the core), which must not
/// depend on spin-sdk 5.2.
///
/// ```no_run
/// # async fn run() -> Result<(), lakebase_spin_p2::Error> {
/// use lakebase_spin_p2::spin::{connect, database_error};
/// let db = connect().await?;
/// let rows = db.connection.query("SELECT 1", &[]).map_err(database_error)?;
/// # Ok(()) }
/// ```
pub fn database_error(e: impl Into<spin_sdk::pg4::Error>) -> Error {
    use spin_sdk::pg4::{PgError, QueryError};
    match e.into() {
        spin_sdk::pg4::Error::PgError(PgError::QueryFailed(QueryError::DbError(db))) => {
            Error::from_message(
                ErrorKind::Database,
                format!("the database refused the query: {}", db.message),
            )
            .with_sqlstate(db.code)
        }
        spin_sdk::pg4::Error::PgError(other) => Error::from_message(
            ErrorKind::Database,
            format!("the database query failed: {}", pg_text(&other)),
        ),
        spin_sdk::pg4::Error::Decode(m) => Error::from_message(
            ErrorKind::Database,
            format!("a value could not be decoded: {m}"),
        ),
    }
}

/// The client type on WASIp2 Spin.
pub type SpinLakebase = Lakebase<SpinHttp, SpinKv, SystemClock>;

static INSTANCE: OnceLock<SpinLakebase> = OnceLock::new();

/// This instance's client, configured from the Spin variables on first use. A configuration
/// error is returned (and re-checked on the next call) rather than cached; a `lakebase_ca_root`
/// that is set is one (see [`SpinPg`]).
///
/// Spin gives WASIp2 components a fresh instance per request, so the credential in memory
/// rarely outlives a request: the shared key-value record is the cache that saves the mints.
/// A handler that answers through [`serve_then_refresh`] also refreshes the credential after
/// its response; one that does not refreshes it in the request that finds it past its reuse
/// limit (within a second when the workspace fails and the credential is still accepted).
pub async fn lakebase() -> Result<&'static SpinLakebase, Error> {
    if let Some(lb) = INSTANCE.get() {
        return Ok(lb);
    }
    refuse_ca_root(&SpinVars).await?;
    let config = Config::load(&SpinVars).await?;
    let mut lb = Lakebase::new(config, SpinHttp, SpinKv::default(), SystemClock);
    if REFRESH_AFTER_RESPONSE.load(Ordering::Relaxed) {
        lb = lb.with_refresh_after_every_response();
    }
    Ok(INSTANCE.get_or_init(|| lb))
}

/// Set by [`serve_then_refresh`] before the handler runs: the client is configured to leave
/// refreshes to the end of the request.
static REFRESH_AFTER_RESPONSE: AtomicBool = AtomicBool::new(false);

/// Runs a handler's `response`, sends it, and only then, when the credential is due
/// ([`Lakebase::refresh_due`]), refreshes it: the client has the whole answer while the instance
/// goes on (Spin 3.4 to 4.0.x and SpinKube, `wasmtime serve` and wasmCloud all run a WASIp2
/// handler until it returns, after its response). So no request waits for a rotation's mint or
/// for a failing workspace: only a cold start does.
///
/// Use it for every request of the component (it configures the instance's client to leave
/// refreshes to it):
///
/// ```no_run
/// use spin_sdk::http::{IncomingRequest, Response, ResponseOutparam};
///
/// #[spin_sdk::http_component]
/// async fn handle(req: IncomingRequest, out: ResponseOutparam) {
///     lakebase_spin_p2::spin::serve_then_refresh(out, app(req)).await
/// }
///
/// async fn app(_req: IncomingRequest) -> Response {
///     match lakebase_spin_p2::spin::connect().await {
///         Ok(_db) => Response::new(200, "connected"),
///         Err(e) => Response::new(503, e.kind().as_str()),
///     }
/// }
/// # fn main() {}
/// ```
pub async fn serve_then_refresh(
    out: spin_sdk::http::ResponseOutparam,
    response: impl std::future::Future<Output = spin_sdk::http::Response>,
) {
    REFRESH_AFTER_RESPONSE.store(true, Ordering::Relaxed);
    let mut response = response.await;
    let body = std::mem::take(response.body_mut());
    match spin_sdk::http::OutgoingResponse::try_from(response) {
        // Returns once the body is written and finished: the client has the whole answer.
        Ok(head) => {
            if let Err(e) = out.set_with_body(head, body).await {
                lakebase::log::warn(&format!("the response could not be sent: {e}"));
            }
        }
        // Nothing set: the host answers 500.
        Err(e) => lakebase::log::warn(&format!("the response could not be built: {e}")),
    }
    if let Some(lb) = INSTANCE.get()
        && lb.refresh_due()
    {
        lb.refresh().await;
    }
}

/// A configuration error when `lakebase_ca_root` is set (a read failure is left to
/// [`Config::load`], which names it).
async fn refuse_ca_root(vars: &impl Vars) -> Result<(), Error> {
    match vars.get(CA_ROOT_VARIABLE).await {
        Ok(Some(pem)) if !pem.trim().is_empty() => {
            Err(Error::for_variable(CA_ROOT_VARIABLE, NO_CA_ROOT))
        }
        _ => Ok(()),
    }
}

/// Opens a Lakebase Postgres connection with a cached or fresh credential.
///
/// ```no_run
/// # async fn run() -> Result<(), lakebase_spin_p2::Error> {
/// use lakebase_spin_p2::spin::database_error;
/// let db = lakebase_spin_p2::spin::connect().await?;
/// let rows = db.connection.query("SELECT 1", &[]).map_err(database_error)?;
/// # Ok(()) }
/// ```
pub async fn connect() -> Result<Connected<spin_sdk::pg4::Connection>, Error> {
    lakebase().await?.connect(&SpinPg).await
}

/// [`connect`] with per-connection options (another database of the same endpoint). A CA root
/// in `options` is refused with a `configuration` error: `spin:postgres@4.0.0` cannot take one.
pub async fn connect_with(
    options: &ConnectOptions,
) -> Result<Connected<spin_sdk::pg4::Connection>, Error> {
    if options.ca_root.is_some() {
        return Err(Error::for_variable(CA_ROOT_VARIABLE, NO_CA_ROOT));
    }
    lakebase().await?.connect_with(&SpinPg, options).await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Variables from a list, counting reads.
    struct FakeVars(Vec<(&'static str, &'static str)>, std::cell::Cell<usize>);

    impl Vars for FakeVars {
        async fn get(&self, name: &str) -> Result<Option<String>, HostError> {
            self.1.set(self.1.get() + 1);
            Ok(self
                .0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned()))
        }
    }

    fn check(vars: &[(&'static str, &'static str)]) -> Result<(), Error> {
        futures::executor::block_on(refuse_ca_root(&FakeVars(
            vars.to_vec(),
            std::cell::Cell::new(0),
        )))
    }

    #[test]
    fn a_set_ca_root_is_a_configuration_error_that_names_it_and_the_flavour_that_takes_it() {
        let e = check(&[(CA_ROOT_VARIABLE, "-----BEGIN CERTIFICATE-----\n…")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Configuration);
        assert_eq!(e.variable(), Some("lakebase_ca_root"));
        let m = e.to_string();
        for needed in [
            "`lakebase_ca_root`",
            "spin:postgres@4.0.0",
            "Spin 4.1",
            "lakebase-spin",
        ] {
            assert!(m.contains(needed), "{needed} missing from: {m}");
        }
        assert!(!m.contains("BEGIN CERTIFICATE"), "{m}");
    }

    #[test]
    fn an_empty_or_unset_ca_root_is_fine() {
        check(&[]).unwrap();
        check(&[(CA_ROOT_VARIABLE, "")]).unwrap();
        check(&[(CA_ROOT_VARIABLE, "  \n")]).unwrap();
    }

    #[test]
    fn a_ca_root_per_connection_is_refused_before_anything_is_opened() {
        let options = ConnectOptions::default().ca_root("pem");
        let e = futures::executor::block_on(connect_with(&options)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Configuration);
        assert!(e.to_string().contains("spin:postgres@4.0.0"), "{e}");
        let e = SpinPg
            .open_now(&Secret::new("postgres://u:p@h/db".to_owned()), Some("pem"))
            .err()
            .unwrap();
        assert!(e.message.contains("lakebase_ca_root"), "{e}");
    }

    #[test]
    fn query_errors_keep_their_sqlstate() {
        use spin_sdk::pg4::{DbError, PgError, QueryError};
        let db = DbError {
            as_text: "ERROR: relation \"x\" does not exist".to_owned(),
            severity: "ERROR".to_owned(),
            code: "42P01".to_owned(),
            message: "relation \"x\" does not exist".to_owned(),
            detail: None,
            extras: vec![],
        };
        let e = database_error(PgError::QueryFailed(QueryError::DbError(db)));
        assert_eq!(e.kind(), ErrorKind::Database);
        assert_eq!(e.sqlstate(), Some("42P01"));
        assert_eq!(
            e.to_string(),
            "the database refused the query: relation \"x\" does not exist"
        );
        let e = database_error(spin_sdk::pg4::Error::Decode("not an int".to_owned()));
        assert_eq!(e.kind(), ErrorKind::Database);
        assert_eq!(e.sqlstate(), None);
    }
}
