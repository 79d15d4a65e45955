//! Serving the app on a TCP port (HTTP/1.1); instances are reused as `instances.rs` says.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Devhost;

/// A running server; stops when dropped.
pub struct ServeHandle {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServeHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Stops accepting connections.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Devhost {
    /// Serves on `addr` (port 0: a free port).
    pub async fn serve(&self, addr: SocketAddr) -> Result<ServeHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let host = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let host = host.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let host = host.clone();
                        async move { Ok::<_, Infallible>(host.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(ServeHandle { addr, task })
    }

    async fn answer(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let started = std::time::Instant::now();
        let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return plain(400, format!("could not read the request body: {e}")),
        };
        let response = match self.handle(http::Request::from_parts(parts, body)).await {
            Ok(r) => r.map(Full::new),
            Err(e) => {
                // As Spin: an empty 500, the reason in the host's log only.
                eprintln!("devhost: {method} {path}: the component failed: {e:#}");
                plain(500, String::new())
            }
        };
        eprintln!(
            "devhost: {method} {path} -> {} in {:.1} ms",
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        response
    }
}

fn plain(status: u16, text: String) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}
