//! The host: compiles the component once, runs instances with Spin's interfaces (variables,
//! key-value, postgres, outbound HTTP), and serves `wasi:http` through them, reusing instances
//! as Spin does (`instances.rs`). A WASIp3 component (`wasi:http/handler@0.3.0`, spin-sdk 7)
//! gets Spin 4.1's interfaces; a WASIp2 one (`wasi:http/incoming-handler@0.2.x`, spin-sdk 5.2)
//! gets Spin's WASIp2 interfaces too, on the same backends, and a fresh instance per request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{
    Accessor, Component, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::handler::{ErrorCode, ProxyHandler, ProxyPre};
use wasmtime_wasi_http::p3::{WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::instances::{InstanceReuse, Instances};

use crate::bindings::fermyon::spin::key_value as kv2;
use crate::bindings::fermyon::spin::variables as var2;
use crate::bindings::spin::key_value::key_value as kvw;
use crate::bindings::spin::postgres4_2_0::postgres as pgw;
use crate::bindings::spin::variables::variables as varw;
use crate::kv;
use crate::manifest::{AllowedHost, App};
use crate::pg;

/// How to run an app.
#[derive(Clone, Debug, Default)]
pub struct DevhostOptions {
    /// `spin.toml`, or the directory holding it.
    pub manifest: PathBuf,
    /// Where the default key-value store lives (default `.spin` beside the manifest).
    pub state_dir: Option<PathBuf>,
    /// `--variable name=value` pairs.
    pub variables: HashMap<String, String>,
    /// Environment to read `SPIN_VARIABLE_*` from (`None`: the process environment).
    pub env: Option<HashMap<String, String>>,
    /// Runtime config file (`[key_value_store.<label>]`).
    pub runtime_config: Option<PathBuf>,
    /// Shift of the guest's wall clock.
    pub clock_offset: Duration,
    /// The deny adapter for dependencies that do not inherit configuration (default: where
    /// `cargo build --target wasm32-wasip2 --release -p lakebase-deny-adapter` puts it).
    pub deny_adapter: Option<PathBuf>,
    /// How instances are reused (default: as Spin 4.1 does).
    pub reuse: InstanceReuse,
    /// Model Spin 4.0.0 to 4.0.2: a synchronous `spin:postgres` `query` that matches no rows
    /// never returns (spinframework/spin#3671, fixed by #3673 after 4.0.2). Also on when
    /// [`DevhostOptions::spin_version`] is one of those releases.
    pub empty_query_hangs: bool,
    /// The Spin release to model (default 4.1): its manifest schema and the interfaces it
    /// serves (see [`SpinVersion`](crate::SpinVersion)).
    pub spin_version: crate::SpinVersion,
}

/// Which `wasi:http` a component exports, as Spin tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpFlavour {
    /// `wasi:http/incoming-handler@0.2.x` (spin-sdk 5.x, Spin's `http-rust-p2` template): a
    /// fresh instance per request, as Spin 3.4 - 4.1 do.
    WasiP2,
    /// `wasi:http/handler@0.3.0` (spin-sdk 7): instances reused as Spin 4.1 does.
    WasiP3,
}

impl HttpFlavour {
    /// The flavour of a component, from its exports.
    pub fn of(engine: &Engine, component: &Component) -> Result<HttpFlavour> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if exports.iter().any(|e| e == "wasi:http/handler@0.3.0") {
            Ok(HttpFlavour::WasiP3)
        } else if exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2.") && !e.contains("-rc-"))
        {
            Ok(HttpFlavour::WasiP2)
        } else {
            bail!(
                "the component exports neither wasi:http/handler@0.3.0 (WASIp3, spin-sdk 7) nor wasi:http/incoming-handler@0.2.x (WASIp2, spin-sdk 5); its exports: {}",
                exports.join(", ")
            )
        }
    }
}

/// Shared by every instance.
pub(crate) struct Shared {
    app: App,
    component_variables: HashMap<String, String>,
    allowed: Vec<AllowedHost>,
    stores: HashMap<String, kv::Backend>,
    pools: pg::Pools,
    secrets: Vec<String>,
    clock_offset_ms: Arc<AtomicI64>,
    /// Linear memory of the most recently created instance at its largest so far, in bytes.
    last_peak_memory: Arc<AtomicU64>,
    /// Instances created so far.
    pub(crate) instances: AtomicU64,
    /// See [`DevhostOptions::empty_query_hangs`].
    pub(crate) empty_query_hangs: bool,
}

/// A loaded, validated app, ready to serve requests.
#[derive(Clone)]
pub struct Devhost {
    engine: Engine,
    flavour: HttpFlavour,
    handler: ProxyHandler<Instances>,
    shared: Arc<Shared>,
}

/// Per-instance state.
pub struct Ctx {
    pub(crate) memory: MemoryUse,
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    shared: Arc<Shared>,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl wasmtime_wasi_http::p2::WasiHttpView for Ctx {
    fn http(&mut self) -> wasmtime_wasi_http::p2::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p2::WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Outbound HTTP: only to allowed hosts.
struct Hooks {
    shared: Arc<Shared>,
}

impl Hooks {
    /// Whether `uri` is allowed; if not, says so in the log, naming the entry to add.
    fn allowed(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https").to_owned();
        let host = uri.host().unwrap_or("").to_owned();
        let port = uri
            .port_u16()
            .or(crate::manifest::default_port(&scheme))
            .unwrap_or(0);
        let allowed = self
            .shared
            .allowed
            .iter()
            .any(|a| a.allows(&scheme, &host, port));
        if !allowed {
            eprintln!(
                "devhost: a component tried to make an HTTP request to {scheme}://{host}:{port}, which is not allowed: add \"{scheme}://{host}:{port}\" to allowed_outbound_hosts in spin.toml"
            );
        }
        allowed
    }
}

/// Outbound `wasi:http@0.2` (WASIp2 components): the same check, then wasmtime-wasi-http's
/// own client.
impl wasmtime_wasi_http::p2::WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        config: wasmtime_wasi_http::p2::types::OutgoingRequestConfig,
    ) -> wasmtime_wasi_http::p2::HttpResult<wasmtime_wasi_http::p2::types::HostFutureIncomingResponse>
    {
        if !self.allowed(request.uri()) {
            return Err(
                wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::HttpRequestDenied.into(),
            );
        }
        Ok(wasmtime_wasi_http::p2::default_send_request(
            request, config,
        ))
    }
}

type HttpBody = http_body_util::combinators::UnsyncBoxBody<
    Bytes,
    wasmtime_wasi_http::p3::bindings::http::types::ErrorCode,
>;

impl WasiHttpHooks for Hooks {
    #[allow(clippy::type_complexity)]
    fn send_request(
        &mut self,
        request: http::Request<HttpBody>,
        options: Option<wasmtime_wasi_http::p3::RequestOptions>,
        fut: Box<
            dyn Future<
                    Output = Result<(), wasmtime_wasi_http::p3::bindings::http::types::ErrorCode>,
                > + Send,
        >,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<HttpBody>,
                        Box<
                            dyn Future<
                                    Output = Result<
                                        (),
                                        wasmtime_wasi_http::p3::bindings::http::types::ErrorCode,
                                    >,
                                > + Send,
                        >,
                    ),
                    wasmtime_wasi::TrappableError<
                        wasmtime_wasi_http::p3::bindings::http::types::ErrorCode,
                    >,
                >,
            > + Send,
    > {
        use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
        let allowed = self.allowed(request.uri());
        drop(fut);
        Box::new(async move {
            if !allowed {
                return Err(ErrorCode::HttpRequestDenied.into());
            }
            let (res, io) = wasmtime_wasi_http::p3::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Counts an instance's linear memory (all memories of all its core instances), to show that a
/// large result is streamed rather than buffered. The peak is published to `report`.
pub(crate) struct MemoryUse {
    total: usize,
    peak: usize,
    report: Arc<AtomicU64>,
}

impl wasmtime::ResourceLimiter for MemoryUse {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.total += desired.saturating_sub(current);
        self.peak = self.peak.max(self.total);
        self.report.store(self.peak as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// A wall clock shifted by the devhost's offset, so 45-minute expiry can be tested in seconds.
struct OffsetClock(Arc<AtomicI64>);

impl wasmtime_wasi::HostWallClock for OffsetClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let offset = self.0.load(Ordering::Relaxed);
        if offset >= 0 {
            real + Duration::from_millis(offset as u64)
        } else {
            real.saturating_sub(Duration::from_millis(offset.unsigned_abs()))
        }
    }
}

/// The marker type that binds Spin's interfaces to [`Ctx`].
pub struct SpinHost;

impl HasData for SpinHost {
    type Data<'a> = &'a mut Ctx;
}

fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    Engine::new(&config).map_err(w)
}

/// wasmtime's error type is not anyhow's: keep its full report.
pub(crate) fn w(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

impl Devhost {
    /// Loads and validates the app (variables, allowed hosts, stores), and compiles the component.
    pub fn load(opts: DevhostOptions) -> Result<Devhost> {
        let app = App::load_as(&opts.manifest, opts.spin_version)?;
        let env = opts
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        let values = app.resolve_variables(&opts.variables, &env)?;
        let component_variables = app.component_variables(&values)?;
        let allowed = app.allowed_hosts(&values)?;
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| app.dir.join(".spin"));
        let stores = configure_stores(&app, &state_dir, opts.runtime_config.as_deref())?;
        let engine = engine()?;
        let wasm = std::fs::read(&app.source).with_context(|| {
            format!("reading the component {} (build it first: spin build, or cargo build --target wasm32-wasip2 --release)", app.source.display())
        })?;
        let deny_adapter = opts
            .deny_adapter
            .clone()
            .unwrap_or_else(crate::compose::default_deny_adapter_path);
        // What the modelled Spin serves, checked on the app and on each dependency as they
        // are (the devhost's own deny adapter, composed in below, is not Spin's).
        let own = crate::compose::import_names(&app.component_id, &wasm)?;
        opts.spin_version
            .check_imports(own.iter().map(String::as_str))
            .with_context(|| format!("loading {}", app.source.display()))?;
        for dep in &app.dependencies {
            let bytes = std::fs::read(&dep.path)
                .with_context(|| format!("reading the dependency {}", dep.path.display()))?;
            let imports = crate::compose::import_names(&dep.name, &bytes)?;
            opts.spin_version
                .check_imports(imports.iter().map(String::as_str))
                .with_context(|| format!("loading the dependency {}", dep.path.display()))?;
        }
        let wasm = crate::compose::compose(&app.component_id, wasm, &app.dependencies, || {
            std::fs::read(&deny_adapter).with_context(|| {
                format!(
                    "reading the deny adapter {} (build it: cargo build --target wasm32-wasip2 --release -p lakebase-deny-adapter)",
                    deny_adapter.display()
                )
            })
        })?;
        let component = Component::new(&engine, &wasm)
            .map_err(w)
            .with_context(|| format!("compiling {}", app.source.display()))?;
        let flavour = HttpFlavour::of(&engine, &component)?;
        let mut linker: Linker<Ctx> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(w)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(w)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(w)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(w)?;
        crate::bindings::SpinHost::add_to_linker::<Ctx, SpinHost>(&mut linker, |c| c).map_err(w)?;
        let pre = linker.instantiate_pre(&component).map_err(w)?;
        let (pre, reuse) = match flavour {
            HttpFlavour::WasiP3 => (
                ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre).map_err(w)?),
                opts.reuse,
            ),
            // Spin 3.4 - 4.1 give a WASIp2 component one instance per request, whatever the
            // reuse flags say.
            HttpFlavour::WasiP2 => (
                ProxyPre::P2(wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(w)?),
                InstanceReuse::FRESH,
            ),
        };
        let secrets = app.secret_values(&values);
        let shared = Arc::new(Shared {
            app,
            component_variables,
            allowed,
            stores,
            pools: pg::Pools::default(),
            secrets,
            last_peak_memory: Default::default(),
            instances: AtomicU64::new(0),
            clock_offset_ms: Arc::new(AtomicI64::new(opts.clock_offset.as_millis() as i64)),
            empty_query_hangs: opts.empty_query_hangs || opts.spin_version.empty_query_hangs(),
        });
        let handler = ProxyHandler::new(Instances {
            engine: engine.clone(),
            pre,
            shared: shared.clone(),
            reuse,
        });
        Ok(Devhost {
            engine,
            flavour,
            handler,
            shared,
        })
    }

    /// Which `wasi:http` the component exports (WASIp2 components get a fresh instance per
    /// request).
    pub fn flavour(&self) -> HttpFlavour {
        self.flavour
    }

    /// Instances created so far (one per request with [`InstanceReuse::FRESH`]).
    pub fn instances_created(&self) -> u64 {
        self.shared.instances.load(Ordering::Relaxed)
    }

    /// Moves the guest's wall clock (for all instances created from now on).
    pub fn set_clock_offset(&self, offset: Duration) {
        self.shared
            .clock_offset_ms
            .store(offset.as_millis() as i64, Ordering::Relaxed);
    }

    /// The largest linear memory so far, in bytes, of the most recently created instance (all
    /// its components together); with [`InstanceReuse::FRESH`], of the last request's.
    pub fn last_peak_memory(&self) -> u64 {
        self.shared.last_peak_memory.load(Ordering::Relaxed)
    }

    /// The app's HTTP route.
    pub fn route(&self) -> &str {
        &self.shared.app.route
    }

    /// The id of the component that serves the route.
    pub fn component_id(&self) -> &str {
        &self.shared.app.component_id
    }

    /// The engine (tests inspect the component's imports with it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Handles one request: in an instance that is free to take it, else in a new one (see
    /// [`InstanceReuse`]). An instance that traps fails every request it had accepted.
    pub async fn handle(&self, mut request: http::Request<Bytes>) -> Result<http::Response<Bytes>> {
        // wasi:http@0.2's incoming request needs an authority (a client always sends `Host`).
        if self.flavour == HttpFlavour::WasiP2
            && request.uri().authority().is_none()
            && !request.headers().contains_key(http::header::HOST)
        {
            request.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let request = request.map(|body| {
            Full::new(body)
                .map_err(|never: std::convert::Infallible| -> ErrorCode { match never {} })
                .boxed_unsync()
        });
        let response = self.handler.handle((), request).await.map_err(w)?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(w)?.to_bytes();
        Ok(http::Response::from_parts(parts, bytes))
    }
}

/// A store for a new instance.
pub(crate) fn new_store(engine: &Engine, shared: &Arc<Shared>) -> Store<Ctx> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdout().inherit_stderr();
    wasi.wall_clock(OffsetClock(shared.clock_offset_ms.clone()));
    shared.last_peak_memory.store(0, Ordering::Relaxed);
    Store::new(
        engine,
        Ctx {
            memory: MemoryUse {
                total: 0,
                peak: 0,
                report: shared.last_peak_memory.clone(),
            },
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                shared: shared.clone(),
            },
            shared: shared.clone(),
        },
    )
}

fn configure_stores(
    app: &App,
    state_dir: &std::path::Path,
    runtime_config: Option<&std::path::Path>,
) -> Result<HashMap<String, kv::Backend>> {
    let mut stores = HashMap::new();
    if let Some(path) = runtime_config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(kvs) = value.get("key_value_store").and_then(|v| v.as_table()) {
            for (label, cfg) in kvs {
                let kind = cfg.get("type").and_then(|t| t.as_str()).unwrap_or("");
                let backend = match kind {
                    "spin" => {
                        let p = cfg
                            .get("path")
                            .and_then(|p| p.as_str())
                            .unwrap_or("sqlite_key_value.db");
                        let p = path.parent().unwrap_or(std::path::Path::new(".")).join(p);
                        kv::Backend::sqlite(&p)?
                    }
                    "redis" => kv::Backend::redis(
                        cfg.get("url")
                            .and_then(|u| u.as_str())
                            .context("key_value_store: type = \"redis\" needs url")?,
                    )?,
                    other => bail!(
                        "key_value_store.{label}: type `{other}` is not supported by the devhost (use \"spin\" or \"redis\")"
                    ),
                };
                stores.insert(label.clone(), backend);
            }
        }
    }
    if !stores.contains_key("default") {
        stores.insert(
            "default".into(),
            kv::Backend::sqlite(&state_dir.join("sqlite_key_value.db"))?,
        );
    }
    for label in &app.key_value_stores {
        if !stores.contains_key(label) {
            bail!(
                "component `{}` uses key-value store `{label}`, which is not configured: add [key_value_store.{label}] to a runtime config file",
                app.component_id
            );
        }
    }
    Ok(stores)
}

// ---- spin:variables -------------------------------------------------------------------------

impl Shared {
    /// A component variable, or the `undefined` message (one resolution for every version).
    fn variable(&self, name: &str) -> Result<String, String> {
        match self.component_variables.get(name) {
            Some(v) => Ok(v.clone()),
            None => Err(format!("no variable for \"{name}\"")),
        }
    }
}

impl varw::HostWithStore<Ctx> for SpinHost {
    async fn get(
        accessor: &Accessor<Ctx, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, varw::Error>> {
        let shared = accessor.with(|mut a| a.get().shared.clone());
        Ok(shared.variable(&name).map_err(varw::Error::Undefined))
    }
}
impl varw::Host for Ctx {}

/// `fermyon:spin/variables@2.0.0` (WASIp2): the same variables.
impl var2::Host for Ctx {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, var2::Error>> {
        Ok(self.shared.variable(&name).map_err(var2::Error::Undefined))
    }
}

// ---- spin:key-value -------------------------------------------------------------------------

/// An open store (a guest resource).
pub struct StoreHandle {
    label: String,
    backend: kv::Backend,
}

fn store_of(
    accessor: &Accessor<Ctx, SpinHost>,
    r: &Resource<StoreHandle>,
) -> wasmtime::Result<(String, kv::Backend)> {
    accessor.with(|mut a| a.get().store(r))
}

fn kv_other(e: anyhow::Error) -> kvw::Error {
    kvw::Error::Other(format!("{e:#}"))
}

/// Why a store does not open (one check for every version of the interface).
enum OpenDenied {
    AccessDenied,
    NoSuchStore,
}

impl Ctx {
    /// After a synchronous `query`: never returns when `hang` (it matched no rows and the
    /// devhost models Spin 4.0.0 to 4.0.2, [`DevhostOptions::empty_query_hangs`]), as those Spins never
    /// answer it.
    pub(crate) async fn empty_query_answered(hang: bool) {
        if hang {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the devhost models Spin 4.0.0 to 4.0.2's `query` ([`DevhostOptions::empty_query_hangs`]).
    pub(crate) fn empty_query_hangs(&self) -> bool {
        self.shared.empty_query_hangs
    }

    /// Opens the store `label`: only a store listed in `key_value_stores`, and configured.
    fn open_store(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, OpenDenied>> {
        if !self.shared.app.key_value_stores.contains(&label) {
            return Ok(Err(OpenDenied::AccessDenied));
        }
        let Some(backend) = self.shared.stores.get(&label).cloned() else {
            return Ok(Err(OpenDenied::NoSuchStore));
        };
        Ok(Ok(self.table.push(StoreHandle { label, backend })?))
    }

    fn store(&self, r: &Resource<StoreHandle>) -> wasmtime::Result<(String, kv::Backend)> {
        let s = self.table.get(r)?;
        Ok((s.label.clone(), s.backend.clone()))
    }
}

impl kvw::HostStoreWithStore<Ctx> for SpinHost {
    async fn open(
        accessor: &Accessor<Ctx, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, kvw::Error>> {
        accessor.with(|mut a| {
            Ok(a.get().open_store(label)?.map_err(|e| match e {
                OpenDenied::AccessDenied => kvw::Error::AccessDenied,
                OpenDenied::NoSuchStore => kvw::Error::NoSuchStore,
            }))
        })
    }

    async fn get(
        accessor: &Accessor<Ctx, Self>,
        s: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kvw::Error>> {
        let (label, b) = store_of(accessor, &s)?;
        Ok(b.get(&label, &key).await.map_err(kv_other))
    }

    async fn set(
        accessor: &Accessor<Ctx, Self>,
        s: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kvw::Error>> {
        let (label, b) = store_of(accessor, &s)?;
        Ok(b.set(&label, &key, value).await.map_err(kv_other))
    }

    async fn delete(
        accessor: &Accessor<Ctx, Self>,
        s: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), kvw::Error>> {
        let (label, b) = store_of(accessor, &s)?;
        Ok(b.delete(&label, &key).await.map_err(kv_other))
    }

    async fn exists(
        accessor: &Accessor<Ctx, Self>,
        s: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kvw::Error>> {
        let (label, b) = store_of(accessor, &s)?;
        Ok(b.get(&label, &key)
            .await
            .map(|v| v.is_some())
            .map_err(kv_other))
    }

    async fn get_keys(
        accessor: &Accessor<Ctx, Self>,
        s: Resource<StoreHandle>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), kvw::Error>>)> {
        let (label, b) = store_of(accessor, &s)?;
        let result = b.keys(&label).await;
        accessor.with(|mut a| {
            let (keys, outcome) = match result {
                Ok(k) => (k, Ok(())),
                Err(e) => (Vec::new(), Err(kv_other(e))),
            };
            let stream = StreamReader::new(&mut a, keys)?;
            let future = FutureReader::new(&mut a, async move { wasmtime::error::Ok(outcome) })?;
            Ok((stream, future))
        })
    }
}

impl kvw::HostStore for Ctx {
    async fn drop(&mut self, r: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}
impl kvw::Host for Ctx {}

/// `fermyon:spin/key-value@2.0.0` (WASIp2): the same stores, so a WASIp2 and a WASIp3
/// component on one store see each other's values.
fn kv2_other(e: anyhow::Error) -> kv2::Error {
    kv2::Error::Other(format!("{e:#}"))
}

impl kv2::HostStore for Ctx {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, kv2::Error>> {
        Ok(self.open_store(label)?.map_err(|e| match e {
            OpenDenied::AccessDenied => kv2::Error::AccessDenied,
            OpenDenied::NoSuchStore => kv2::Error::NoSuchStore,
        }))
    }

    async fn get(
        &mut self,
        s: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv2::Error>> {
        let (label, b) = self.store(&s)?;
        Ok(b.get(&label, &key).await.map_err(kv2_other))
    }

    async fn set(
        &mut self,
        s: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv2::Error>> {
        let (label, b) = self.store(&s)?;
        Ok(b.set(&label, &key, value).await.map_err(kv2_other))
    }

    async fn delete(
        &mut self,
        s: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv2::Error>> {
        let (label, b) = self.store(&s)?;
        Ok(b.delete(&label, &key).await.map_err(kv2_other))
    }

    async fn exists(
        &mut self,
        s: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv2::Error>> {
        let (label, b) = self.store(&s)?;
        Ok(b.get(&label, &key)
            .await
            .map(|v| v.is_some())
            .map_err(kv2_other))
    }

    async fn get_keys(
        &mut self,
        s: Resource<StoreHandle>,
    ) -> wasmtime::Result<Result<Vec<String>, kv2::Error>> {
        let (label, b) = self.store(&s)?;
        Ok(b.keys(&label).await.map_err(kv2_other))
    }

    async fn drop(&mut self, r: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}
impl kv2::Host for Ctx {}

// ---- spin:postgres --------------------------------------------------------------------------

impl Ctx {
    pub(crate) async fn open_pg(
        &mut self,
        address: &str,
        ca_root: Option<&str>,
    ) -> wasmtime::Result<Result<Resource<pg::Connection>, pgw::Error>> {
        let shared = self.shared.clone();
        match shared
            .pools
            .get(
                address,
                ca_root,
                &shared.allowed,
                &shared.secrets_with(address),
            )
            .await
        {
            Ok(client) => Ok(Ok(self.table.push(pg::Connection { client })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    pub(crate) fn client(&self, r: &Resource<pg::Connection>) -> wasmtime::Result<pg::Client> {
        Ok(self.table.get(r)?.client.clone())
    }
}

impl Shared {
    /// Secrets to scrub from messages about `address`: its password and the secret variables.
    fn secrets_with(&self, address: &str) -> Vec<String> {
        let mut s = self.secrets.clone();
        if let Ok(c) = tokio_postgres::Config::from_str_ok(address)
            && let Some(pw) = c.get_password()
        {
            s.push(String::from_utf8_lossy(pw).into_owned());
        }
        s
    }
}

trait FromStrOk: Sized {
    fn from_str_ok(s: &str) -> Result<Self, ()>;
}
impl FromStrOk for tokio_postgres::Config {
    fn from_str_ok(s: &str) -> Result<Self, ()> {
        s.parse().map_err(|_| ())
    }
}

pub(crate) async fn run_query(
    client: pg::Client,
    statement: String,
    params: Vec<pgw::ParameterValue>,
) -> Result<(Vec<pgw::Column>, Vec<Vec<pgw::DbValue>>), pgw::Error> {
    let params = pg::params(params)?;
    let refs: Vec<&(dyn postgres_types::ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn postgres_types::ToSql + Sync))
        .collect();
    let stmt = client.prepare(&statement).await.map_err(pg::query_error)?;
    let rows = client.query(&stmt, &refs).await.map_err(pg::query_error)?;
    let columns = pg::columns(stmt.columns());
    let rows = rows
        .iter()
        .map(pg::row_values)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((columns, rows))
}

pub(crate) async fn run_execute(
    client: pg::Client,
    statement: String,
    params: Vec<pgw::ParameterValue>,
) -> Result<u64, pgw::Error> {
    let params = pg::params(params)?;
    let refs: Vec<&(dyn postgres_types::ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn postgres_types::ToSql + Sync))
        .collect();
    client
        .execute(&statement, &refs)
        .await
        .map_err(pg::query_error)
}

impl pgw::HostConnection for Ctx {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<pg::Connection>, pgw::Error>> {
        self.open_pg(&address, None).await
    }

    async fn query(
        &mut self,
        r: Resource<pg::Connection>,
        statement: String,
        params: Vec<pgw::ParameterValue>,
    ) -> wasmtime::Result<Result<pgw::RowSet, pgw::Error>> {
        let client = self.client(&r)?;
        let answer = run_query(client, statement, params).await;
        let empty = matches!(&answer, Ok((_, rows)) if rows.is_empty());
        Ctx::empty_query_answered(empty && self.empty_query_hangs()).await;
        Ok(answer.map(|(columns, rows)| pgw::RowSet { columns, rows }))
    }

    async fn execute(
        &mut self,
        r: Resource<pg::Connection>,
        statement: String,
        params: Vec<pgw::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, pgw::Error>> {
        let client = self.client(&r)?;
        Ok(run_execute(client, statement, params).await)
    }

    async fn drop(&mut self, r: Resource<pg::Connection>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl pgw::HostConnectionWithStore<Ctx> for SpinHost {
    async fn open_async(
        accessor: &Accessor<Ctx, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<pg::Connection>, pgw::Error>> {
        let shared = accessor.with(|mut a| a.get().shared.clone());
        match shared
            .pools
            .get(
                &address,
                None,
                &shared.allowed,
                &shared.secrets_with(&address),
            )
            .await
        {
            Ok(client) => {
                accessor.with(|mut a| Ok(Ok(a.get().table.push(pg::Connection { client })?)))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    #[allow(clippy::type_complexity)]
    async fn query_async(
        accessor: &Accessor<Ctx, Self>,
        r: Resource<pg::Connection>,
        statement: String,
        params: Vec<pgw::ParameterValue>,
    ) -> wasmtime::Result<
        Result<
            (
                Vec<pgw::Column>,
                StreamReader<pgw::Row>,
                FutureReader<Result<(), pgw::Error>>,
            ),
            pgw::Error,
        >,
    > {
        let client = accessor.with(|mut a| a.get().client(&r))?;
        let (columns, rows) = match run_query(client, statement, params).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut a| {
            let stream = StreamReader::new(&mut a, rows)?;
            let future = FutureReader::new(&mut a, async {
                wasmtime::error::Ok(Ok::<(), pgw::Error>(()))
            })?;
            Ok(Ok((columns, stream, future)))
        })
    }

    async fn execute_async(
        accessor: &Accessor<Ctx, Self>,
        r: Resource<pg::Connection>,
        statement: String,
        params: Vec<pgw::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, pgw::Error>> {
        let client = accessor.with(|mut a| a.get().client(&r))?;
        Ok(run_execute(client, statement, params).await)
    }
}

impl pgw::HostConnectionBuilder for Ctx {
    async fn new(&mut self, address: String) -> wasmtime::Result<Resource<pg::ConnectionBuilder>> {
        Ok(self.table.push(pg::ConnectionBuilder {
            address,
            ca_root: None,
        })?)
    }

    async fn set_ca_root(
        &mut self,
        r: Resource<pg::ConnectionBuilder>,
        certificate: String,
    ) -> wasmtime::Result<Result<(), pgw::Error>> {
        self.table.get_mut(&r)?.ca_root = Some(certificate);
        Ok(Ok(()))
    }

    async fn build(
        &mut self,
        r: Resource<pg::ConnectionBuilder>,
    ) -> wasmtime::Result<Result<Resource<pg::Connection>, pgw::Error>> {
        let b = self.table.get(&r)?;
        let (address, ca) = (b.address.clone(), b.ca_root.clone());
        self.open_pg(&address, ca.as_deref()).await
    }

    async fn drop(&mut self, r: Resource<pg::ConnectionBuilder>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl pgw::HostConnectionBuilderWithStore<Ctx> for SpinHost {
    async fn build_async(
        accessor: &Accessor<Ctx, Self>,
        r: Resource<pg::ConnectionBuilder>,
    ) -> wasmtime::Result<Result<Resource<pg::Connection>, pgw::Error>> {
        let (shared, address, ca) = accessor.with(|mut a| -> wasmtime::Result<_> {
            let ctx = a.get();
            let b = ctx.table.get(&r)?;
            Ok((ctx.shared.clone(), b.address.clone(), b.ca_root.clone()))
        })?;
        match shared
            .pools
            .get(
                &address,
                ca.as_deref(),
                &shared.allowed,
                &shared.secrets_with(&address),
            )
            .await
        {
            Ok(client) => {
                accessor.with(|mut a| Ok(Ok(a.get().table.push(pg::Connection { client })?)))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

impl pgw::Host for Ctx {}

/// Silences an unused warning for the mutex import on some cfgs.
#[allow(dead_code)]
type Unused = Mutex<()>;

/// The import and export names of a component (e.g. `spin:postgres/postgres@4.2.0`).
pub fn component_world(wasm_path: &std::path::Path) -> Result<(Vec<String>, Vec<String>)> {
    let engine = engine()?;
    let component = Component::from_file(&engine, wasm_path).map_err(w)?;
    let ty = component.component_type();
    let imports = ty
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports = ty
        .exports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    Ok((imports, exports))
}
