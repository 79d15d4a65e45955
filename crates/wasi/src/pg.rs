//! Postgres spoken by the component itself: a TCP connection over `wasi:sockets` (tokio), TLS by
//! rustls inside the guest, the login by tokio-postgres (cleartext password or SCRAM).
//!
//! `sslmode` means what it means on Spin: `require` and `prefer` verify the server's certificate
//! against the webpki roots plus `lakebase_ca_root`; `prefer` goes without TLS only when the
//! server offers none (the core allows `prefer`/`disable` only toward loopback addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use lakebase::host::{ConnectError, ConnectFailure, Connector};
use lakebase::{Error, ErrorKind, Secret};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::NoTls;
use wasip2::sockets::instance_network;
use wasip2::sockets::ip_name_lookup::{self, ErrorCode, IpAddress};

use crate::tls::RustlsConnect;
use crate::wait;

/// Opens Postgres connections in the guest. The connection's I/O runs as a task on the
/// instance's runtime ([`crate::block_on`]); it ends when the `Client` is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasiPg;

impl Connector for WasiPg {
    type Connection = tokio_postgres::Client;

    async fn open(
        &self,
        address: &Secret,
        ca_root: Option<&str>,
    ) -> Result<tokio_postgres::Client, ConnectError> {
        let refused = |text: &str| ConnectError::new(ConnectFailure::NotAllowed, text);
        // Not echoed: the address holds the password.
        let config: tokio_postgres::Config = address
            .expose()
            .parse()
            .map_err(|_| refused("invalid connection string"))?;
        let (Some(Host::Tcp(host)), Some(&port)) =
            (config.get_hosts().first(), config.get_ports().first())
        else {
            return Err(refused(
                "invalid connection string: one TCP host and port are needed",
            ));
        };
        let stream = tcp_connect(host, port).await?;
        let (client, connection) = match config.get_ssl_mode() {
            SslMode::Disable => {
                let (client, connection) = config
                    .connect_raw(stream, NoTls)
                    .await
                    .map_err(|e| connect_error(&e))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                return Ok(client);
            }
            _ => {
                let tls_setup = |text: String| ConnectError::new(ConnectFailure::Tls, text);
                let tls = RustlsConnect::new(tls_config(ca_root).map_err(tls_setup)?, host)
                    .map_err(ConnectError::from_text)?;
                config
                    .connect_raw(stream, tls)
                    .await
                    .map_err(|e| connect_error(&e))?
            }
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// A TCP connection to the first address of `host` that answers (names resolved through
/// `wasi:sockets/ip-name-lookup`).
async fn tcp_connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, ConnectError> {
    // A failed lookup is left to the text: "not permitted" (a host that denies lookups) is
    // configuration, a resolver's hiccup is not.
    let addresses = resolve(host).await.map_err(|e| {
        ConnectError::from_text(format!(
            "cannot resolve {host}: {e} (is name lookup allowed on this host?)"
        ))
    })?;
    let mut last = format!("{host} has no address");
    for address in addresses.into_iter().map(|ip| SocketAddr::new(ip, port)) {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("connecting to {address}: {e}"),
        }
    }
    Err(ConnectError::new(ConnectFailure::Network, last))
}

/// The addresses of `host` (an IP literal is its own address), looked up without blocking the
/// instance: the core's connect deadline can cut a lookup that does not answer.
async fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let network = instance_network::instance_network();
    let lookup = ip_name_lookup::resolve_addresses(&network, host).map_err(|e| format!("{e:?}"))?;
    let answered = lookup.subscribe();
    let mut addresses = Vec::new();
    loop {
        match lookup.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => {
                addresses.push(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
            }
            Ok(Some(IpAddress::Ipv6((a, b, c, d, e, f, g, h)))) => {
                addresses.push(IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)));
            }
            Ok(None) => return Ok(addresses),
            Err(ErrorCode::WouldBlock) => wait::ready(&answered).await,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

/// The TLS client: webpki roots, plus the CA root's certificates when one is given.
fn tls_config(ca_root: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_root {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|_| {
                "invalid configuration: `lakebase_ca_root` is not PEM certificates".to_owned()
            })?;
            roots
                .add(cert)
                .map_err(|e| format!("invalid configuration: `lakebase_ca_root`: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A failed login as the core takes it: the server's SQLSTATE, a refused certificate, a TLS
/// failure or a broken connection, with the text for people.
fn connect_error(e: &tokio_postgres::Error) -> ConnectError {
    let text = login_text(e);
    if let Some(db) = e.as_db_error() {
        let sqlstate = db.code().code().to_owned();
        return ConnectError::new(ConnectFailure::Server { sqlstate }, text);
    }
    // rustls' verdict, directly or inside the io::Error tokio-rustls wraps it in.
    let mut source = std::error::Error::source(e);
    let mut io = false;
    while let Some(s) = source {
        let inner = s
            .downcast_ref::<std::io::Error>()
            .inspect(|_| io = true)
            .and_then(|i| i.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if let Some(tls) = inner.unwrap_or(s).downcast_ref::<rustls::Error>() {
            let failure = match tls {
                rustls::Error::InvalidCertificate(_) => ConnectFailure::Certificate,
                _ => ConnectFailure::Tls,
            };
            return ConnectError::new(failure, text);
        }
        source = s.source();
    }
    // tokio-postgres' own TLS failures ("server does not support TLS") say so in its text.
    let failure = if e.to_string().starts_with("error performing TLS handshake") {
        ConnectFailure::Tls
    } else if io || e.is_closed() {
        ConnectFailure::Network
    } else {
        ConnectFailure::Unknown
    };
    ConnectError::new(failure, text)
}

/// The text of a failed login: the server's message with its SQLSTATE, or the transport's error
/// with its cause (what rustls found, for a refused certificate).
fn login_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        text = format!("{text} (SQLSTATE {})", db.code().code());
    }
    if let Some(source) = std::error::Error::source(e) {
        let source = source.to_string();
        if !text.contains(&source) {
            text = format!("{text}: {source}");
        }
    }
    text
}

/// A query error of tokio-postgres as a library [`Error`] of kind `database`, SQLSTATE kept.
pub fn database_error(e: &tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::from_message(
            ErrorKind::Database,
            format!("the database refused the query: {}", db.message()),
        )
        .with_sqlstate(db.code().code()),
        None => Error::from_message(
            ErrorKind::Database,
            format!("the database query failed: {e}"),
        ),
    }
}
