//! TLS for tokio-postgres by rustls: the small adapter between the two (tokio-postgres's own
//! TLS crates need its `runtime` feature, which does not build for WebAssembly).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;

/// A TLS handshake with one server, verified by the client configuration's roots.
pub(crate) struct RustlsConnect {
    connector: TlsConnector,
    server: ServerName<'static>,
}

impl RustlsConnect {
    pub fn new(config: rustls::ClientConfig, host: &str) -> Result<Self, String> {
        let server = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("invalid server name {host}: {e}"))?;
        Ok(RustlsConnect {
            connector: TlsConnector::from(Arc::new(config)),
            server,
        })
    }
}

impl TlsConnect<TcpStream> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.server, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS stream to the server. No channel binding: SCRAM-SHA-256 without `-PLUS`.
pub(crate) struct RustlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
