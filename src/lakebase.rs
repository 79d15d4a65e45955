//! The client: serves a credential from memory, the key-value store or a fresh mint, and opens
//! Postgres connections with it, recovering once from a rejected token.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::cache::{self, Cache, Lease};
use crate::config::{Config, WorkspaceAuth};
use crate::conn_string::connection_string;
use crate::credential::{Credential, CredentialSource};
use crate::deadline::{CONNECT_TIMEOUT, LOAD_TIMEOUT, within};
use crate::error::{Error, ErrorKind};
use crate::flight::{Flight, next_poll};
use crate::host::{Clock, Connector, ConnectorNow, Http, Kv};
use crate::log;
use crate::login::{LoginFailure, classify_login_failure, login_error, rejected_twice};
use crate::retry::{self, Attempt, RetryPolicy, Stop};
use crate::seams::Seams;
use crate::secret::{Secret, scrub};
use crate::tier::Tier;
use crate::workspace::WorkspaceClient;

/// A record minted more than this far in the future (by the reader's clock) is not believed.
const MAX_CLOCK_AHEAD: TimeDelta = TimeDelta::minutes(1);
/// How long a mint lease holds off other instances, at most (also when it says longer).
const LEASE_TTL: TimeDelta = TimeDelta::seconds(10);
/// Between writing a lease and checking that it is still ours (lets racing writers settle).
/// Two instances both mint only if one stalls longer than this between reading "no lease" and
/// writing its own: 100 ms covers instances that start together on a loaded host (25 ms did
/// not, once in about ten runs of 64 cold requests through the plugin).
const LEASE_SETTLE: Duration = Duration::from_millis(100);
/// How often a waiting instance looks for the lease holder's record.
const LEASE_POLL: Duration = Duration::from_millis(50);
/// How long a request waits for another request of the same instance to finish a load.
const IN_INSTANCE_WAIT: Duration = Duration::from_secs(30);

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

/// A Lakebase client over a host's HTTP, key-value store and clock.
///
/// One per WebAssembly instance (see [`crate::spin::lakebase`]); concurrent requests in the
/// instance share it and so share one in-flight mint.
pub struct Lakebase<H, K, C> {
    config: Config,
    seams: Seams<H, K, C>,
    workspace: WorkspaceClient,
    /// The database credential: memory, then the shared store.
    credential: Tier<Credential>,
    flight: Flight,
    instance_id: String,
}

impl<H, K, C: Clock> std::fmt::Debug for Lakebase<H, K, C> {
    /// The configuration (secrets shown as set, never their value) and whether a credential is
    /// in memory; never a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lakebase")
            .field("config", &self.config)
            .field(
                "credential_in_memory",
                &self.credential.in_memory().is_some(),
            )
            .field("retry", &self.seams.retry)
            .finish_non_exhaustive()
    }
}

/// An open connection and the credential it logged in with. An adapter that keeps connections
/// open across requests builds one for a connection it reuses.
#[derive(Debug)]
pub struct Connected<T> {
    /// The connection.
    pub connection: T,
    /// The credential used (its token is the password that worked).
    pub credential: Credential,
    /// Where the credential came from on this call.
    pub source: CredentialSource,
}

/// Options of one connection ([`Lakebase::connect_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Database to log in to instead of the configured `pgdatabase`.
    pub database: Option<String>,
    /// PEM of a CA to trust for this connection instead of `lakebase_ca_root`.
    pub ca_root: Option<String>,
}

impl ConnectOptions {
    /// Logs in to `database` instead of the configured one.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// Trusts the CA of this PEM for this connection instead of `lakebase_ca_root`.
    pub fn ca_root(mut self, pem: impl Into<String>) -> Self {
        self.ca_root = Some(pem.into());
        self
    }
}

impl<H: Http, K: Kv, C: Clock> Lakebase<H, K, C> {
    /// A client for `config` over the given host seams.
    pub fn new(config: Config, http: H, kv: K, clock: C) -> Self {
        let cache = Cache::new(&config);
        let workspace = WorkspaceClient::new(&config, cache.keys.workspace_token.clone());
        let credential = Tier::new(cache.keys.credential.clone());
        Lakebase {
            config,
            seams: Seams::new(http, kv, clock, cache),
            workspace,
            credential,
            flight: Flight::default(),
            instance_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Replaces the retry policy of the Databricks API and of Postgres connects.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.seams.retry = retry;
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A credential that may be used now: from this instance's memory, else the shared
    /// key-value store, else minted (and then stored in both). Concurrent callers in one
    /// instance share one load (see `flight.rs`: they wait on host timers, never on each
    /// other); other instances that see a mint in progress wait for it.
    pub async fn credential(&self) -> Result<(Credential, CredentialSource), Error> {
        let clock = &self.seams.clock;
        let mark = self.flight.mark();
        let started = clock.now();
        let mut poll = None;
        loop {
            if let Some(c) = self.credential.fresh_in_memory(clock.now()) {
                return Ok((c, CredentialSource::Memory));
            }
            if let Some(e) = self.flight.failure_since(mark) {
                return Err(e);
            }
            if let Some(ticket) = self.flight.try_begin() {
                // Looked again under the ticket: a load may have ended since the first look.
                if let Some(c) = self.credential.fresh_in_memory(clock.now()) {
                    return Ok((c, CredentialSource::Memory));
                }
                let result = within(clock, LOAD_TIMEOUT, self.load())
                    .await
                    .unwrap_or_else(|| {
                        Err(Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "gave up obtaining a credential after {} s: the workspace or the key-value store did not answer in time",
                                LOAD_TIMEOUT.as_secs()
                            ),
                        ))
                    });
                ticket.finish(&result);
                return result;
            }
            if elapsed(started, clock.now()) >= IN_INSTANCE_WAIT {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "another request of this instance has been minting a credential for over {} s",
                        IN_INSTANCE_WAIT.as_secs()
                    ),
                ));
            }
            let wait = next_poll(poll);
            poll = Some(wait);
            clock.sleep(wait).await;
        }
    }

    /// The key-value store, else a mint; called by the one request that holds the ticket.
    async fn load(&self) -> Result<(Credential, CredentialSource), Error> {
        if let Some(c) = self.fresh_from_kv().await {
            return Ok((c, CredentialSource::Kv));
        }
        if let Some(c) = self.wait_for_other_minter().await {
            return Ok((c, CredentialSource::Kv));
        }
        // Claim the mint, let racing claims settle, and defer to whoever won.
        self.write_own_lease().await;
        self.seams.clock.sleep(LEASE_SETTLE).await;
        if let Some(c) = self.wait_for_other_minter().await {
            return Ok((c, CredentialSource::Kv));
        }
        let minted = self.mint().await;
        // The record first, then the lease: a waiter that sees the lease gone finds the record.
        if let Ok(c) = &minted {
            let kv = self.seams.kv();
            let now = self.seams.clock.now();
            self.credential.keep(&self.seams.cache, &kv, c, now).await;
        }
        let lease = &self.seams.cache.keys.lease;
        cache::delete(&self.seams.kv(), lease, "mint lease").await;
        Ok((minted?, CredentialSource::Minted))
    }

    /// Forgets the credential whose token is `password`, in memory and in the key-value store,
    /// unless another credential has already replaced it there. Returns whether a cached
    /// credential was dropped. [`Lakebase::connect`] does this itself when a login is rejected;
    /// call it when a connection opened otherwise (with [`Lakebase::connection_string`]) is.
    pub async fn invalidate(&self, password: &str) -> bool {
        let matches = |c: &Credential| c.token.expose() == password;
        self.credential
            .forget(&self.seams.cache, &self.seams.kv(), matches)
            .await
    }

    /// Opens a Postgres connection with the current credential. A login rejected with `28P01`
    /// drops that credential, mints a new one and tries once more.
    pub async fn connect<X: Connector>(
        &self,
        connector: &X,
    ) -> Result<Connected<X::Connection>, Error> {
        self.connect_with(connector, &ConnectOptions::default())
            .await
    }

    /// Like [`Lakebase::connect`], with per-connection options (another database of the same
    /// endpoint, another CA root). The credential is the same: a token is valid for every
    /// database.
    pub async fn connect_with<X: Connector>(
        &self,
        connector: &X,
        options: &ConnectOptions,
    ) -> Result<Connected<X::Connection>, Error> {
        let (credential, source) = self.credential_for(options).await?;
        let failure = match self.open(connector, &credential, options).await {
            Ok(connection) => {
                return Ok(Connected {
                    connection,
                    credential,
                    source,
                });
            }
            Err((LoginFailure::Rejected, _)) => credential,
            Err((failure, message)) => return Err(login_error(failure, message, &credential)),
        };
        log::info(&format!(
            "the database rejected credential {} for role {}; minting a new one",
            failure.token.fingerprint(),
            failure.user
        ));
        self.invalidate(failure.token.expose()).await;
        let (fresh, source) = self.credential_for(options).await?;
        match self.open(connector, &fresh, options).await {
            Ok(connection) => Ok(Connected {
                connection,
                credential: fresh,
                source,
            }),
            Err((LoginFailure::Rejected, message)) => Err(rejected_twice(message, &fresh)),
            Err((failure, message)) => Err(login_error(failure, message, &fresh)),
        }
    }

    /// Opens a connection without waiting for anything, for synchronous callers that cannot
    /// (a synchronous component export may not block): only with a credential already in this
    /// instance's memory, put there by an earlier asynchronous call ([`Lakebase::connect`],
    /// [`Lakebase::credential`]). No retry and no re-mint: a rejected token is reported, and the
    /// next asynchronous connect recovers.
    pub fn connect_now<X: ConnectorNow>(
        &self,
        connector: &X,
        options: &ConnectOptions,
    ) -> Result<Connected<X::Connection>, Error> {
        let Some(mut credential) = self.credential.fresh_in_memory(self.seams.clock.now()) else {
            return Err(not_in_memory());
        };
        if let Some(database) = &options.database {
            credential.database = database.clone();
        }
        let address = self.connection_string(&credential);
        let ca_root = options
            .ca_root
            .as_deref()
            .or(self.config.ca_root.as_deref());
        match connector.open_now(&address, ca_root) {
            Ok(connection) => Ok(Connected {
                connection,
                credential,
                source: CredentialSource::Memory,
            }),
            Err(e) => {
                let message = log::cap(&scrub(&e, &[&credential.token, &address]));
                Err(match classify_login_failure(&message) {
                    LoginFailure::Rejected => Error::new(
                        ErrorKind::Database,
                        format!(
                            "postgres rejected the credential in memory for role `{}`: a synchronous connect cannot mint a new one; the next asynchronous connect does",
                            credential.user
                        ),
                    )
                    .with_sqlstate("28P01")
                    .with_source(crate::error::Cause(message)),
                    failure => login_error(failure, message, &credential),
                })
            }
        }
    }

    /// The current credential, adjusted to `options`.
    async fn credential_for(
        &self,
        options: &ConnectOptions,
    ) -> Result<(Credential, CredentialSource), Error> {
        let (mut credential, source) = self.credential().await?;
        if let Some(database) = &options.database {
            credential.database = database.clone();
        }
        Ok((credential, source))
    }

    /// The URL-form connection string of `c` with the configured `sslmode` (a secret: it holds
    /// the token), for a Postgres client that is not a [`Connector`].
    pub fn connection_string(&self, c: &Credential) -> Secret {
        connection_string(
            &c.user,
            &c.token,
            &c.host,
            c.port,
            &c.database,
            self.config.sslmode,
        )
    }

    /// One login, retrying transient failures within the retry policy.
    async fn open<X: Connector>(
        &self,
        connector: &X,
        c: &Credential,
        options: &ConnectOptions,
    ) -> Result<X::Connection, (LoginFailure, String)> {
        let address = self.connection_string(c);
        let ca_root = options
            .ca_root
            .as_deref()
            .or(self.config.ca_root.as_deref());
        let clock = &self.seams.clock;
        let attempt = || async {
            let opened = within(clock, CONNECT_TIMEOUT, connector.open(&address, ca_root))
                .await
                .unwrap_or_else(|| {
                    Err(format!(
                        "no answer within {} s (timed out)",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                });
            let message = match opened {
                Ok(conn) => return Attempt::Done(Ok(conn)),
                Err(e) => log::cap(&scrub(&e, &[&c.token, &address])),
            };
            match classify_login_failure(&message) {
                LoginFailure::Transient => Attempt::Again {
                    failure: format!("connecting to {}:{} failed ({message})", c.host, c.port),
                    hint: None,
                },
                failure => Attempt::Done(Err((failure, message))),
            }
        };
        retry::run(clock, &self.seams.retry, attempt)
            .await
            .map_err(|stop| match stop {
                Stop::Fatal(failure) => failure,
                Stop::GaveUp {
                    failure, attempts, ..
                } => (
                    LoginFailure::Transient,
                    format!("{failure} (after {attempts} attempts)"),
                ),
            })
    }

    /// The shared record, if it fits this configuration and may be served now.
    async fn fresh_from_kv(&self) -> Option<Credential> {
        let now = self.seams.clock.now();
        let fits = |c: &Credential| self.fits(c, now);
        self.credential
            .fresh_from_store(&self.seams.cache, &self.seams.kv(), now, fits)
            .await
    }

    /// Whether a credential read back from the store is one this configuration could have
    /// minted: the same user, port and database, the configured host (or a plain host name),
    /// and not minted in the future. The record is sealed; this is a second line.
    fn fits(&self, c: &Credential, now: DateTime<Utc>) -> Result<(), &'static str> {
        let config = &self.config;
        let expected_user = match (&config.pguser, &config.auth) {
            (Some(u), _) => Some(u.as_str()),
            (None, WorkspaceAuth::OAuthM2M { client_id, .. }) => Some(client_id.as_str()),
            (None, WorkspaceAuth::Pat(_)) => None,
        };
        if expected_user.is_some_and(|u| u != c.user) {
            return Err("its user is not the configured role");
        }
        if c.port != config.pgport || c.database != config.pgdatabase {
            return Err("its port or database differs from the configuration");
        }
        match &config.pghost {
            Some(h) if *h != c.host => return Err("its host is not `pghost`"),
            None if !crate::config::is_plain_host(&c.host) => {
                return Err("its host is not a plain host name");
            }
            _ => {}
        }
        if now
            .checked_add_signed(MAX_CLOCK_AHEAD)
            .is_some_and(|limit| c.minted_at > limit)
        {
            return Err("it says it was minted in the future");
        }
        Ok(())
    }

    /// If another instance holds a live mint lease, waits (polling) for its record until the
    /// lease ends, for at most [`LEASE_TTL`] from now whatever the lease says. Stops waiting
    /// when the lease is deleted (its holder failed). `None`: no such
    /// lease, or it ended without a record.
    async fn wait_for_other_minter(&self) -> Option<Credential> {
        let (clock, cache) = (&self.seams.clock, &self.seams.cache);
        let lease = cache.read_lease(&self.seams.kv()).await?;
        let now = clock.now();
        let until = DateTime::from_timestamp_millis(lease.until_ms)?
            .min(now.checked_add_signed(LEASE_TTL)?);
        if lease.holder == self.instance_id || now >= until {
            return None;
        }
        while clock.now() < until {
            clock.sleep(LEASE_POLL).await;
            if let Some(c) = self.fresh_from_kv().await {
                return Some(c);
            }
            // Gone: the holder finished (its record was written first) or gave up. Look once
            // more, then decide afresh instead of waiting out the lease.
            if cache.read_lease(&self.seams.kv()).await.is_none() {
                return self.fresh_from_kv().await;
            }
        }
        None
    }

    async fn write_own_lease(&self) {
        let Some(until) = self.seams.clock.now().checked_add_signed(LEASE_TTL) else {
            return;
        };
        let lease = Lease {
            holder: self.instance_id.clone(),
            until_ms: until.timestamp_millis(),
        };
        self.seams.cache.write_lease(&self.seams.kv(), &lease).await;
    }

    /// Host and user (configured, else looked up), then a new database token.
    async fn mint(&self) -> Result<Credential, Error> {
        let host = match &self.config.pghost {
            Some(h) => h.clone(),
            None => self.workspace.lookup_host(&self.seams).await?,
        };
        let user = match (&self.config.pguser, &self.config.auth) {
            (Some(u), _) => u.clone(),
            (None, WorkspaceAuth::OAuthM2M { client_id, .. }) => client_id.clone(),
            (None, WorkspaceAuth::Pat(_)) => self.workspace.lookup_user(&self.seams).await?,
        };
        let minted_at = self.seams.clock.now();
        let minted = self.workspace.mint(&self.seams).await?;
        log::info(&format!(
            "minted database credential {} for role {} on {} (expires {})",
            minted.token.fingerprint(),
            user,
            self.config.target.name(),
            minted.expires_at.to_rfc3339()
        ));
        Ok(Credential {
            token: minted.token,
            user,
            host,
            port: self.config.pgport,
            database: self.config.pgdatabase.clone(),
            minted_at,
            expires_at: minted.expires_at,
        })
    }
}

/// The error of a synchronous connect before any credential is in memory.
pub(crate) fn not_in_memory() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "no credential in this instance's memory yet, and a synchronous connect cannot wait to obtain one: make one asynchronous call first (connect or credential)",
    )
}
