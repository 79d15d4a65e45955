//! A local Databricks workspace for tests and local runs.
//!
//! It speaks the wire format of the real APIs (OIDC token with HTTP Basic client auth, PATs, the
//! Autoscaling and Provisioned credential APIs, endpoint and instance look-ups, SCIM `Me`), and
//! puts a login proxy in front of a real PostgreSQL: every database token it mints works as the
//! Postgres password until its own expiry (checked at login only), while older unexpired tokens
//! keep working, as on Lakebase. Workspace tokens and PATs are refused as passwords (`28P01`).
//!
//! Tests can count calls per route, script faults, revoke tokens (cutting their sessions), and
//! change token lifetimes. Nothing it logs contains a token or secret: only fingerprints.

mod http_api;
mod proxy;
pub use proxy::{CLIENT_TURNS, LOGINS_ACCEPTED, LOGINS_REFUSED_OPTIONS, LOGINS_REJECTED};
pub mod token;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The real PostgreSQL behind the login proxy.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Host of the real server.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// A superuser, to create roles and the database.
    pub admin_user: String,
    /// Its password.
    pub admin_password: String,
}

/// What the emulated workspace holds.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// HTTP listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// Login proxy listen address.
    pub pg_listen: SocketAddr,
    /// The real PostgreSQL.
    pub backend: Backend,
    /// Service principals: (client id, client secret).
    pub service_principals: Vec<(String, String)>,
    /// Personal access tokens: (token, user name).
    pub pats: Vec<(String, String)>,
    /// Autoscaling endpoints, `projects/<p>/branches/<b>/endpoints/<e>`.
    pub endpoints: Vec<String>,
    /// Provisioned instance names.
    pub instances: Vec<String>,
    /// Lifetime of database tokens.
    pub db_token_ttl: Duration,
    /// `expires_in` of OAuth workspace tokens.
    pub workspace_token_ttl: Duration,
    /// Fractional-second digits in `expire_time` (0, 3, 6 or 9).
    pub fraction_digits: usize,
    /// The database to create in the backend (Lakebase's default name).
    pub database: String,
    /// Print log lines to stderr as well.
    pub echo_log: bool,
    /// Offer TLS on the login proxy (certificate for 127.0.0.1, localhost and
    /// `host.wasmcloud.internal`, signed by a CA made at start: see [`Emulator::ca_pem`]).
    pub tls: bool,
    /// What the login proxy does with a client's `options` startup parameter.
    pub startup_options: StartupOptions,
}

/// What the login proxy does with the `options` startup parameter (`-c name=value` settings):
/// the three answers proxies in front of Postgres are known to give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartupOptions {
    /// Passed on to PostgreSQL, which applies the settings.
    #[default]
    Forward,
    /// Silently left out (the settings never reach the server).
    Drop,
    /// The login is refused with FATAL 08P01 naming the parameter, before authentication, as
    /// PgBouncer 1.20+ does for a `-c` setting it does not track.
    Refuse,
}

impl StartupOptions {
    /// `forward`, `drop` or `refuse`.
    pub fn parse(text: &str) -> Option<StartupOptions> {
        match text {
            "forward" => Some(StartupOptions::Forward),
            "drop" => Some(StartupOptions::Drop),
            "refuse" => Some(StartupOptions::Refuse),
            _ => None,
        }
    }
}

impl EmulatorOptions {
    /// A workspace with one service principal, one PAT user, one endpoint and one instance.
    pub fn new(backend: Backend) -> Self {
        EmulatorOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            pg_listen: "127.0.0.1:0".parse().unwrap(),
            backend,
            service_principals: vec![(DEFAULT_CLIENT_ID.into(), DEFAULT_CLIENT_SECRET.into())],
            pats: vec![(DEFAULT_PAT.into(), DEFAULT_PAT_USER.into())],
            endpoints: vec![DEFAULT_ENDPOINT.into()],
            instances: vec![DEFAULT_INSTANCE.into()],
            db_token_ttl: Duration::from_secs(3600),
            workspace_token_ttl: Duration::from_secs(3600),
            fraction_digits: 6,
            database: "databricks_postgres".into(),
            echo_log: false,
            tls: false,
            startup_options: StartupOptions::Forward,
        }
    }
}

/// Default service principal (its client id is its Postgres role).
pub const DEFAULT_CLIENT_ID: &str = "6f1c2a3e-5b7d-4c1e-9a8f-0123456789ab";
/// Its secret.
pub const DEFAULT_CLIENT_SECRET: &str = "dose-emulator-client-secret-0123456789";
/// Default personal access token.
pub const DEFAULT_PAT: &str = "dapi-emulator-0123456789abcdef";
/// Its user.
pub const DEFAULT_PAT_USER: &str = "someone@example.com";
/// Default Autoscaling endpoint.
pub const DEFAULT_ENDPOINT: &str = "projects/demo/branches/production/endpoints/primary";
/// Default Provisioned instance.
pub const DEFAULT_INSTANCE: &str = "demo-instance";

/// A fault to inject into the next `count` requests whose `"METHOD /path"` starts with `route`.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Route prefix, e.g. `"POST /api/2.0/postgres/credentials"`.
    pub route: String,
    /// How many requests it applies to.
    pub count: u32,
    /// What happens.
    pub kind: FaultKind,
}

/// What a fault does.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status, a Databricks error body and an optional `Retry-After`.
    Status {
        /// HTTP status.
        status: u16,
        /// `error_code` of the body.
        error_code: String,
        /// `message` of the body.
        message: String,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// Wait, then answer normally.
    Latency(Duration),
    /// Answer normally, but send the body one byte per interval (the headers at once).
    Trickle(Duration),
    /// Close the connection without an answer.
    Drop,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 502 with an HTML page, as a proxy in front of the workspace would.
    Html,
}

#[derive(Default)]
pub(crate) struct State {
    pub counts: BTreeMap<String, u64>,
    pub faults: VecDeque<Fault>,
    /// Live OAuth workspace tokens → (client id, expiry unix seconds).
    pub workspace_tokens: HashMap<String, (String, i64)>,
    pub revoked: HashSet<String>,
    pub log: Vec<String>,
    pub db_token_ttl: Duration,
    pub workspace_token_ttl: Duration,
    pub fraction_digits: usize,
    /// Minted token ids, to revoke "all".
    pub minted: Vec<String>,
    /// When each database credential was minted (both APIs), in order.
    pub mint_times: Vec<Instant>,
    /// Every token handed out (database and OAuth workspace tokens), for secret scans.
    pub issued: Vec<String>,
    pub request_ids: HashSet<String>,
    pub startup_options: StartupOptions,
}

pub(crate) struct Shared {
    pub opts: EmulatorOptions,
    pub key: Vec<u8>,
    pub base_url: String,
    pub pg_addr: SocketAddr,
    /// Password of every emulated role in the backend.
    pub backend_role_password: String,
    pub state: Mutex<State>,
    /// Bumped on every revocation; live sessions re-check their token when it changes.
    pub revocations: watch::Sender<u64>,
    /// The proxy's TLS, when enabled.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// PEM of the CA that signed the proxy's certificate.
    pub ca_pem: Option<String>,
    /// Sessions the proxy relays to the backend right now.
    pub sessions_open: AtomicU64,
    /// The most open at once since start or the last [`Emulator::reset_sessions_max`].
    pub sessions_max: AtomicU64,
}

impl Shared {
    pub fn log(&self, line: String) {
        if self.opts.echo_log {
            eprintln!("emulator: {line}");
        }
        self.state.lock().unwrap().log.push(line);
    }
}

/// A running emulator. Stops when dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Prepares the backend (database, roles) and starts the HTTP server and the login proxy.
    pub async fn start(opts: EmulatorOptions) -> Result<Emulator> {
        let http = TcpListener::bind(opts.listen)
            .await
            .context("binding the HTTP listener")?;
        let pg = TcpListener::bind(opts.pg_listen)
            .await
            .context("binding the Postgres proxy listener")?;
        let http_addr = http.local_addr()?;
        let pg_addr = pg.local_addr()?;
        let backend_role_password = format!("role-{}", uuid::Uuid::new_v4().simple());
        let (revocations, _) = watch::channel(0);
        let (tls, ca_pem) = if opts.tls {
            let (acceptor, ca) = proxy_tls()?;
            (Some(acceptor), Some(ca))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            tls,
            ca_pem,
            key: uuid::Uuid::new_v4().as_bytes().to_vec(),
            base_url: format!("http://{http_addr}"),
            pg_addr,
            backend_role_password,
            state: Mutex::new(State {
                db_token_ttl: opts.db_token_ttl,
                startup_options: opts.startup_options,
                workspace_token_ttl: opts.workspace_token_ttl,
                fraction_digits: opts.fraction_digits,
                ..State::default()
            }),
            revocations,
            opts,
            sessions_open: AtomicU64::new(0),
            sessions_max: AtomicU64::new(0),
        });
        prepare_backend(&shared).await?;
        let tasks = vec![
            tokio::spawn(http_api::serve(http, shared.clone())),
            tokio::spawn(proxy::serve(pg, shared.clone())),
        ];
        Ok(Emulator {
            shared,
            http_addr,
            tasks,
        })
    }

    /// `http://127.0.0.1:<port>`: the workspace URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Where the login proxy listens (the Postgres host and port to configure).
    pub fn pg_addr(&self) -> SocketAddr {
        self.shared.pg_addr
    }

    /// PEM of the CA of the proxy's certificate (when TLS is on): the `lakebase_ca_root` to use.
    pub fn ca_pem(&self) -> Option<&str> {
        self.shared.ca_pem.as_deref()
    }

    /// Calls per route (`"POST /oidc/v1/token"` → n).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.state.lock().unwrap().counts.clone()
    }

    /// Calls of one route.
    pub fn count(&self, route: &str) -> u64 {
        self.counts().get(route).copied().unwrap_or(0)
    }

    /// Every token handed out so far, database and OAuth workspace tokens: what a test scans
    /// responses, logs and stores for.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().issued.clone()
    }

    /// Database credentials minted so far (both APIs).
    pub fn mints(&self) -> u64 {
        self.count("POST /api/2.0/postgres/credentials")
            + self.count("POST /api/2.0/database/credentials")
    }

    /// When each database credential was minted so far (both APIs), oldest first: a load run
    /// compares its requests' start times with them.
    pub fn mint_times(&self) -> Vec<Instant> {
        self.shared.state.lock().unwrap().mint_times.clone()
    }

    /// Database sessions the login proxy relays right now: counted from the backend's
    /// `AuthenticationOk` until the relay ends for any reason (either side closed, an error,
    /// the token revoked).
    pub fn sessions_open(&self) -> u64 {
        self.shared.sessions_open.load(Ordering::SeqCst)
    }

    /// The most sessions open at once since start or the last [`Emulator::reset_sessions_max`].
    pub fn sessions_max(&self) -> u64 {
        self.shared.sessions_max.load(Ordering::SeqCst)
    }

    /// Starts a new maximum from the sessions open now.
    pub fn reset_sessions_max(&self) {
        let open = self.shared.sessions_open.load(Ordering::SeqCst);
        self.shared.sessions_max.store(open, Ordering::SeqCst);
    }

    /// Forgets all counts.
    pub fn reset_counts(&self) {
        self.shared.state.lock().unwrap().counts.clear();
    }

    /// Queues a fault.
    pub fn fault(&self, fault: Fault) {
        self.shared.state.lock().unwrap().faults.push_back(fault);
    }

    /// Drops every queued fault (an outage ends).
    pub fn clear_faults(&self) {
        self.shared.state.lock().unwrap().faults.clear();
    }

    /// Revokes every database token minted so far and cuts the sessions that logged in with one.
    pub fn revoke_all(&self) {
        let mut s = self.shared.state.lock().unwrap();
        let minted = std::mem::take(&mut s.minted);
        let n = minted.len();
        s.revoked.extend(minted);
        drop(s);
        self.shared.log(format!("revoked {n} database tokens"));
        self.shared.revocations.send_modify(|v| *v += 1);
    }

    /// Changes what the login proxy does with `options` for logins from now on.
    pub fn set_startup_options(&self, mode: StartupOptions) {
        self.shared.state.lock().unwrap().startup_options = mode;
    }

    /// Changes the lifetime of tokens minted from now on.
    pub fn set_db_token_ttl(&self, ttl: Duration) {
        self.shared.state.lock().unwrap().db_token_ttl = ttl;
    }

    /// Drops `role` from the backend (a principal whose database role was never created, or
    /// was removed): its logins are refused by PostgreSQL itself, counted as rejected.
    pub async fn drop_role(&self, role: &str) -> Result<()> {
        let (client, conn_task) = admin_client(&self.shared, "postgres").await?;
        let r = quote_ident(role);
        let db = quote_ident(&self.shared.opts.database);
        client
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {db} FROM {r}; DROP ROLE {r}"
            ))
            .await?;
        drop(client);
        let _ = conn_task.await;
        Ok(())
    }

    /// Creates the principals' roles again (after [`Emulator::drop_role`]: the operator created
    /// the role).
    pub async fn restore_roles(&self) -> Result<()> {
        prepare_backend(&self.shared).await
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().log.clone()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A session with the backend's `database` as its superuser, and the task that drives it.
async fn admin_client(
    shared: &Shared,
    database: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let b = &shared.opts.backend;
    let (client, conn) = tokio_postgres::Config::new()
        .host(&b.host)
        .port(b.port)
        .user(&b.admin_user)
        .password(&b.admin_password)
        .dbname(database)
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the backend PostgreSQL as its superuser")?;
    Ok((
        client,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

/// Creates the database and one login role per principal, with a password only the proxy knows.
async fn prepare_backend(shared: &Shared) -> Result<()> {
    let (client, conn_task) = admin_client(shared, "postgres").await?;
    let db = &shared.opts.database;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[db])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(db)))
            .await?;
    }
    let mut roles: Vec<String> = shared
        .opts
        .service_principals
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    roles.extend(shared.opts.pats.iter().map(|(_, user)| user.clone()));
    for role in roles {
        let r = quote_ident(&role);
        let pw = quote_literal(&shared.backend_role_password);
        let has = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await?
            .is_some();
        let verb = if has { "ALTER" } else { "CREATE" };
        client
            .batch_execute(&format!("{verb} ROLE {r} LOGIN PASSWORD {pw}"))
            .await?;
        client
            .batch_execute(&format!("GRANT ALL ON DATABASE {} TO {r}", quote_ident(db)))
            .await?;
    }
    drop(client);
    let _ = conn_task.await;
    // PostgreSQL 15: `public` is not writable by everyone any more; Lakebase roles may create tables.
    let (client, conn_task) = admin_client(shared, db).await?;
    client
        .batch_execute("GRANT ALL ON SCHEMA public TO PUBLIC")
        .await?;
    drop(client);
    let _ = conn_task.await;
    Ok(())
}

/// A CA and a server certificate signed by it for 127.0.0.1, localhost and
/// `host.wasmcloud.internal`: the name under which a guest of a real wasmCloud host (`wash host
/// --allow-host-loopback`) reaches the machine's loopback, where the proxy listens.
fn proxy_tls() -> Result<(tokio_rustls::TlsAcceptor, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "lakebase-emulator test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "host.wasmcloud.internal".to_owned(),
    ])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "lakebase-emulator proxy");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let cert = leaf.signed_by(&key, &issuer)?;
    let chain = vec![cert.der().clone()];
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("server key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert.pem(),
    ))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
