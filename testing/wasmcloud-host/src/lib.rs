//! A test host that serves a `wasi:http/incoming-handler@0.2` component the way wasmCloud 2.7's
//! host (`wash`) does where it matters to this project: **a new instance for every request**
//! (its memory never outlives the request, so the key-value record is the only cache),
//! `wasi:config/store@0.2.0-rc.1` from the workload's config map, `wasi:keyvalue/store@0.2.0-draft`
//! on a real NATS JetStream or Redis ([`keyvalue`]), and wasmtime-wasi's standard `wasi:sockets`,
//! `wasi:http` outbound, clocks and random. It is a model, not wash: see README.md.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::p2::{
    HttpResult, WasiHttpCtxView, WasiHttpHooks, WasiHttpView, default_send_request,
};

pub mod allowed_hosts;
pub mod keyvalue;

pub use allowed_hosts::AllowedHost;
pub use keyvalue::KeyValue;

mod bindings {
    wasmtime::component::bindgen!({
        path: [
            "../../wit/deps/wasi-keyvalue@0.2.0-draft",
            "../../wit/deps/wasi-config@0.2.0-rc.1",
        ],
        inline: "
            package lakebase:wasmcloud-host;
            world host {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:config/store@0.2.0-rc.1;
            }
        ",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        },
    });
}

use bindings::wasi::config::store as config_store;
use bindings::wasi::keyvalue::store as kv_store;

/// What to serve.
#[derive(Debug)]
pub struct HostOptions {
    /// The component (`.wasm`).
    pub component: PathBuf,
    /// The workload's config map, read through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// The key-value backend behind `wasi:keyvalue/store`.
    pub keyvalue: KeyValue,
    /// Where wasmtime keeps compiled code between runs (`None`: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// The workload's `allowedHosts` for outbound `wasi:http` (`None`: anywhere, as `wash dev`
    /// without a list; `Some(vec![])`: nowhere, as a `wash host` workload started without one).
    pub allowed_hosts: Option<Vec<AllowedHost>>,
}

struct Shared {
    config: BTreeMap<String, String>,
    allowed_hosts: Option<Vec<AllowedHost>>,
    keyvalue: KeyValue,
    instances: AtomicU64,
}

/// A loaded component, ready to serve.
#[derive(Clone)]
pub struct WasmcloudHost {
    pre: ProxyPre<Ctx>,
    shared: Arc<Shared>,
}

/// The state of one instance (one request).
pub struct Ctx {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    shared: Arc<Shared>,
}

/// Outbound `wasi:http`: the workload's `allowedHosts`, then wasmtime-wasi-http's own client.
struct Hooks {
    shared: Arc<Shared>,
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: hyper::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        if !allowed_hosts::allows(self.shared.allowed_hosts.as_deref(), request.uri()) {
            // wash's words, so that a log reads the same on both.
            eprintln!(
                "wasmcloud-host: outgoing request to host '{}' denied by allowed_hosts policy",
                request.uri().host().unwrap_or("")
            );
            return Err(ErrorCode::HttpRequestDenied.into());
        }
        Ok(default_send_request(request, config))
    }
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
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// wasmtime's error type is not anyhow's: keep its whole report.
fn w(e: wasmtime::Error) -> anyhow::Error {
    anyhow!("{e:?}")
}

impl WasmcloudHost {
    /// Compiles the component and links it; fails when it imports what this host does not
    /// provide.
    pub fn load(opts: HostOptions) -> Result<WasmcloudHost> {
        let mut config = Config::new();
        if let Some(dir) = &opts.cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache).map_err(w)?));
        }
        let engine = Engine::new(&config).map_err(w)?;
        let component = Component::from_file(&engine, &opts.component)
            .map_err(w)
            .with_context(|| format!("compiling {}", opts.component.display()))?;
        let mut linker: Linker<Ctx> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(w)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(w)?;
        kv_store::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c).map_err(w)?;
        config_store::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c).map_err(w)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(w)
            .context("linking the component (an import this host does not provide?)")?;
        let pre = ProxyPre::new(pre)
            .map_err(w)
            .context("the component does not export wasi:http/incoming-handler@0.2")?;
        Ok(WasmcloudHost {
            pre,
            shared: Arc::new(Shared {
                config: opts.config,
                allowed_hosts: opts.allowed_hosts,
                keyvalue: opts.keyvalue,
                instances: AtomicU64::new(0),
            }),
        })
    }

    /// Instances created so far: one per request.
    pub fn instances_created(&self) -> u64 {
        self.shared.instances.load(Ordering::Relaxed)
    }

    /// Handles one request in a new instance, dropped when the response body is done.
    pub async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout()
            .inherit_stderr()
            .inherit_network()
            .allow_ip_name_lookup(true);
        let mut store = Store::new(
            self.pre.engine(),
            Ctx {
                table: ResourceTable::new(),
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                hooks: Hooks {
                    shared: self.shared.clone(),
                },
                shared: self.shared.clone(),
            },
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(w)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(w)?;
        let pre = self.pre.clone();
        let shared = self.shared.clone();
        // The guest runs on a task of its own: it may go on writing the body after the head.
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            shared.instances.fetch_add(1, Ordering::Relaxed);
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(anyhow!("the component answered with an error: {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(anyhow!("the component set no response")),
                Ok(Err(e)) => Err(w(e).context("the component failed")),
                Err(e) => Err(anyhow!(e).context("the component's task failed")),
            },
        }
    }

    /// Serves HTTP/1.1 on `addr` (port 0: a free one) until the returned task is dropped or
    /// aborted; one log line per request on stderr (method, path, status, time).
    pub async fn serve(
        &self,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let host = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let host = host.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let host = host.clone();
                        async move { Ok::<_, Infallible>(host.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(wasmtime_wasi_http::io::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok((local, task))
    }

    async fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let started = std::time::Instant::now();
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let response = match self.handle(req).await {
            Ok(r) => r,
            Err(e) => {
                // An empty 500; the reason in the host's log only.
                eprintln!("wasmcloud-host: {method} {path}: {e:#}");
                let body = http_body_util::Empty::new()
                    .map_err(|never: Infallible| match never {})
                    .boxed_unsync();
                let mut r = hyper::Response::new(body);
                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        };
        eprintln!(
            "wasmcloud-host: {method} {path} -> {} in {:.1} ms",
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        response
    }
}

use http_body_util::BodyExt as _;

// ---- wasi:config/store -----------------------------------------------------------------------

impl config_store::Host for Ctx {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config_store::Error>> {
        Ok(Ok(self.shared.config.get(&key).cloned()))
    }
}

// ---- wasi:keyvalue/store ---------------------------------------------------------------------

impl kv_store::Host for Ctx {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<keyvalue::Bucket>, kv_store::Error>> {
        match self.shared.keyvalue.open(&identifier).await {
            Ok(bucket) => Ok(Ok(self.table.push(bucket)?)),
            Err(e) => Ok(Err(kv_store::Error::Other(e))),
        }
    }
}

impl kv_store::HostBucket for Ctx {
    async fn get(
        &mut self,
        bucket: Resource<keyvalue::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv_store::Error>> {
        let bucket = self.table.get(&bucket)?;
        Ok(bucket.get(&key).await.map_err(kv_store::Error::Other))
    }

    async fn set(
        &mut self,
        bucket: Resource<keyvalue::Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv_store::Error>> {
        let bucket = self.table.get(&bucket)?;
        Ok(bucket
            .set(&key, value)
            .await
            .map_err(kv_store::Error::Other))
    }

    async fn delete(
        &mut self,
        bucket: Resource<keyvalue::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv_store::Error>> {
        let bucket = self.table.get(&bucket)?;
        Ok(bucket.delete(&key).await.map_err(kv_store::Error::Other))
    }

    async fn drop(&mut self, bucket: Resource<keyvalue::Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
