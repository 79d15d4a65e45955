//! The login proxy: answers the Postgres startup and password exchange itself, checks that the
//! password is a live database token for that role, logs in to the real server with the role's
//! backend password (SCRAM-SHA-256), then relays bytes both ways.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Shared;
use crate::token::{self, Invalid};

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const PROTOCOL_3: i32 = 196608;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, &shared).await {
                shared.log(format!("proxy: session ended: {e}"));
            }
        });
    }
}

/// Reads one startup-phase packet (no type byte): length, then payload.
async fn read_startup<S: AsyncRead + Unpin>(stream: &mut S) -> Result<BytesMut> {
    let len = stream.read_i32().await? as usize;
    if !(8..=10_000).contains(&len) {
        bail!("bad startup packet length {len}");
    }
    let mut buf = BytesMut::zeroed(len - 4);
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Reads one regular message: type byte, length, payload.
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(u8, BytesMut)> {
    let tag = stream.read_u8().await?;
    let len = stream.read_i32().await? as usize;
    if !(4..=1_000_000).contains(&len) {
        bail!("bad message length {len}");
    }
    let mut buf = BytesMut::zeroed(len - 4);
    stream.read_exact(&mut buf).await?;
    Ok((tag, buf))
}

fn message(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((payload.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn error_response(code: &str, text: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', text)] {
        p.push(field);
        p.extend_from_slice(value.as_bytes());
        p.push(0);
    }
    p.push(0);
    message(b'E', &p)
}

fn cstr(buf: &mut BytesMut) -> Option<String> {
    let end = buf.iter().position(|b| *b == 0)?;
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + 1);
    Some(s)
}

async fn session(mut client: TcpStream, shared: &Shared) -> Result<()> {
    client.set_nodelay(true)?;
    // Startup: TLS when enabled; GSS encryption refused (the client then continues in clear).
    let startup = loop {
        let mut packet = read_startup(&mut client).await?;
        let code = packet.get_i32();
        match code {
            SSL_REQUEST if shared.tls.is_some() => {
                client.write_all(b"S").await?;
                let tls = shared
                    .tls
                    .as_ref()
                    .unwrap()
                    .accept(client)
                    .await
                    .context("TLS handshake")?;
                return login(tls, None, shared).await;
            }
            SSL_REQUEST | GSSENC_REQUEST => client.write_all(b"N").await?,
            CANCEL_REQUEST => return Ok(()),
            PROTOCOL_3 => break packet,
            other => bail!("unsupported protocol {other}"),
        }
    };
    login(client, Some(startup), shared).await
}

/// One relayed session in `Shared::sessions_open` (and `sessions_max`), for as long as it lives.
struct OpenSession<'a>(&'a Shared);

impl<'a> OpenSession<'a> {
    fn new(shared: &'a Shared) -> Self {
        let open = shared.sessions_open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.sessions_max.fetch_max(open, Ordering::SeqCst);
        OpenSession(shared)
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.sessions_open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The rest of a session: startup message (unless already read), password, backend, relay.
/// The count key of logins the proxy accepted (`Emulator::count`).
pub const LOGINS_ACCEPTED: &str = "PG login accepted";
/// The count key of logins the proxy refused with `28P01`.
pub const LOGINS_REJECTED: &str = "PG login rejected";
/// Counter of logins refused for their `options` startup parameter
/// ([`StartupOptions::Refuse`](crate::StartupOptions::Refuse)).
pub const LOGINS_REFUSED_OPTIONS: &str = "PG login refused for its options";
/// The count key of round trips on logged-in sessions: each time a client sends after the
/// server last spoke (a client that pipelines several statements makes one).
pub const CLIENT_TURNS: &str = "PG client turns";

/// Relays a logged-in session both ways until either side closes, counting [`CLIENT_TURNS`].
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    server: &mut TcpStream,
    shared: &Shared,
) -> Result<()> {
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut server_rx, mut server_tx) = server.split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    // The login ended with the server's ReadyForQuery: the client's first bytes are a turn.
    let mut server_spoke = true;
    loop {
        tokio::select! {
            n = client_rx.read(&mut up) => {
                let n = n?;
                if n == 0 {
                    let _ = server_tx.shutdown().await;
                    return Ok(());
                }
                if std::mem::take(&mut server_spoke) {
                    *shared.state.lock().unwrap().counts.entry(CLIENT_TURNS.to_owned()).or_insert(0) += 1;
                }
                server_tx.write_all(&up[..n]).await?;
            }
            n = server_rx.read(&mut down) => {
                let n = n?;
                if n == 0 {
                    let _ = client_tx.shutdown().await;
                    return Ok(());
                }
                server_spoke = true;
                client_tx.write_all(&down[..n]).await?;
            }
        }
    }
}

async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    startup: Option<BytesMut>,
    shared: &Shared,
) -> Result<()> {
    let mut startup = match startup {
        Some(s) => s,
        None => loop {
            let mut packet = read_startup(&mut client).await?;
            match packet.get_i32() {
                PROTOCOL_3 => break packet,
                GSSENC_REQUEST => client.write_all(b"N").await?,
                other => bail!("unsupported protocol {other} inside TLS"),
            }
        },
    };
    let mut params = Vec::new();
    while let Some(key) = cstr(&mut startup) {
        if key.is_empty() {
            break;
        }
        let value = cstr(&mut startup).unwrap_or_default();
        params.push((key, value));
    }
    let mode = shared.state.lock().unwrap().startup_options;
    if params.iter().any(|(k, _)| k == "options") {
        match mode {
            crate::StartupOptions::Forward => {}
            crate::StartupOptions::Drop => {
                params.retain(|(k, _)| k != "options");
                shared.log("proxy: dropped the options startup parameter".to_owned());
            }
            crate::StartupOptions::Refuse => {
                let setting = params
                    .iter()
                    .find(|(k, _)| k == "options")
                    .map(|(_, v)| v.trim_start_matches("-c").trim().to_owned())
                    .unwrap_or_default();
                let name = setting.split('=').next().unwrap_or_default().to_owned();
                *shared
                    .state
                    .lock()
                    .unwrap()
                    .counts
                    .entry(LOGINS_REFUSED_OPTIONS.to_owned())
                    .or_insert(0) += 1;
                shared.log(format!("proxy: refused a login for its options ({name})"));
                client
                    .write_all(&error_response(
                        "08P01",
                        &format!("unsupported startup parameter in options: {name}"),
                    ))
                    .await?;
                return Ok(());
            }
        }
    }
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();

    // Ask for the password in clear (it is a token; TLS protects it on Lakebase).
    client
        .write_all(&message(b'R', &3i32.to_be_bytes()))
        .await?;
    let (tag, mut payload) = read_message(&mut client).await?;
    if tag != b'p' {
        bail!("expected a password message");
    }
    let password = cstr(&mut payload).unwrap_or_default();
    let fp = token::fingerprint(&password);
    let rejected = |reason: &str| format!("proxy: login as {user} with {fp} rejected: {reason}");
    let failure = match token::verify(&shared.key, &password) {
        Err(Invalid::NotJwt) => Some((
            "Provided authentication token is not a valid JWT encoding".to_owned(),
            "not a JWT",
        )),
        Err(Invalid::BadSignature) => Some((
            format!("password authentication failed for user \"{user}\""),
            "bad signature",
        )),
        Ok(claims) => {
            let revoked = shared.state.lock().unwrap().revoked.contains(&claims.jti);
            if claims.sub != user {
                Some((
                    format!("password authentication failed for user \"{user}\""),
                    "token of another role",
                ))
            } else if claims.exp <= chrono::Utc::now().timestamp() {
                Some((
                    format!("password authentication failed for user \"{user}\""),
                    "expired",
                ))
            } else if revoked {
                Some((
                    format!("password authentication failed for user \"{user}\""),
                    "revoked",
                ))
            } else {
                None
            }
        }
    };
    let count = |key: &str| {
        let mut state = shared.state.lock().unwrap();
        *state.counts.entry(key.to_owned()).or_insert(0) += 1;
    };
    if let Some((text, reason)) = failure {
        count(LOGINS_REJECTED);
        shared.log(rejected(reason));
        client.write_all(&error_response("28P01", &text)).await?;
        return Ok(());
    }
    let claims = token::verify(&shared.key, &password).expect("verified above");

    // Log in to the real server as the same role.
    let b = &shared.opts.backend;
    let mut server = TcpStream::connect((b.host.as_str(), b.port))
        .await
        .context("connecting to the backend")?;
    server.set_nodelay(true)?;
    let mut sp = BytesMut::new();
    sp.put_i32(PROTOCOL_3);
    for (k, v) in &params {
        sp.extend_from_slice(k.as_bytes());
        sp.put_u8(0);
        sp.extend_from_slice(v.as_bytes());
        sp.put_u8(0);
    }
    sp.put_u8(0);
    let mut packet = ((sp.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&sp);
    server.write_all(&packet).await?;
    let mut scram: Option<ScramSha256> = None;
    loop {
        let (tag, mut body) = read_message(&mut server).await?;
        match tag {
            b'R' => {
                let code = body.get_i32();
                match code {
                    0 => {
                        // AuthenticationOk: from here on, the client talks to the server.
                        client
                            .write_all(&message(b'R', &0i32.to_be_bytes()))
                            .await?;
                        break;
                    }
                    10 => {
                        let s = ScramSha256::new(
                            shared.backend_role_password.as_bytes(),
                            ChannelBinding::unsupported(),
                        );
                        let mut p = Vec::new();
                        p.extend_from_slice(SCRAM_SHA_256.as_bytes());
                        p.push(0);
                        let first = s.message().to_vec();
                        p.extend_from_slice(&(first.len() as i32).to_be_bytes());
                        p.extend_from_slice(&first);
                        server.write_all(&message(b'p', &p)).await?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().context("SASL continue before start")?;
                        s.update(&body)?;
                        server.write_all(&message(b'p', s.message())).await?;
                    }
                    12 => {
                        scram
                            .take()
                            .context("SASL final before start")?
                            .finish(&body)?;
                    }
                    other => bail!("backend asked for unsupported authentication {other}"),
                }
            }
            b'E' => {
                // e.g. the role or database does not exist: pass the server's error on.
                count(LOGINS_REJECTED);
                client.write_all(&message(b'E', &body)).await?;
                shared.log(format!("proxy: backend refused login as {user}"));
                return Ok(());
            }
            other => bail!("unexpected backend message {}", other as char),
        }
    }
    count(LOGINS_ACCEPTED);
    // Counted open from here until this function returns, however the relay ends.
    let _open = OpenSession::new(shared);
    shared.log(format!("proxy: {user} logged in with {fp}"));

    // Relay until either side closes, or the token is revoked.
    let mut revocations = shared.revocations.subscribe();
    let relay = relay(&mut client, &mut server, shared);
    tokio::pin!(relay);
    loop {
        tokio::select! {
            r = &mut relay => return r,
            changed = revocations.changed() => {
                if changed.is_err() || shared.state.lock().unwrap().revoked.contains(&claims.jti) {
                    shared.log(format!("proxy: cut session of {user} ({fp}): token revoked"));
                    return Ok(());
                }
            }
        }
    }
}
