//! The client: serves a credential from memory, the key-value store or a fresh mint, and opens
//! Postgres connections with it, recovering once from a rejected token.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Mutex;

use crate::cache::{self, Cache, Lease};
use crate::config::{Config, WorkspaceAuth, var};
use crate::conn_string::connection_string;
use crate::credential::{Credential, CredentialSource};
use crate::deadline::{CONNECT_TIMEOUT, LOAD_TIMEOUT, TimedKv, within};
use crate::error::{Cause, Error, ErrorKind};
use crate::flight::{Flight, next_poll};
use crate::host::{Clock, Connector, Http, Kv};
use crate::log;
use crate::retry::RetryPolicy;
use crate::secret::{Secret, scrub};

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
    pub(crate) config: Config,
    pub(crate) http: H,
    pub(crate) kv: K,
    pub(crate) clock: C,
    pub(crate) cache: Cache,
    pub(crate) retry: RetryPolicy,
    pub(crate) workspace_token: Mutex<Option<(Secret, DateTime<Utc>)>>,
    memory: Mutex<Option<Credential>>,
    flight: Flight,
    /// Until when (Unix ms) the key-value store is skipped after it timed out.
    kv_skip_until_ms: std::sync::atomic::AtomicI64,
    instance_id: String,
}

impl<H, K, C> std::fmt::Debug for Lakebase<H, K, C> {
    /// The configuration (secrets shown as set, never their value) and whether a credential is
    /// in memory; never a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_memory = self.memory.lock().map(|m| m.is_some()).unwrap_or(false);
        f.debug_struct("Lakebase")
            .field("config", &self.config)
            .field("credential_in_memory", &in_memory)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// An open connection and the credential it logged in with.
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
}

impl ConnectOptions {
    /// Logs in to `database` instead of the configured one.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }
}

/// What a failed login means.
#[derive(Debug, PartialEq, Eq)]
enum LoginFailure {
    /// The token was rejected (`28P01`): drop it and mint once more.
    Rejected,
    /// Someone must change something; do not retry.
    Fatal(ErrorKind, Option<&'static str>),
    /// May pass on its own (refused, reset, a scale-to-zero endpoint waking up).
    Transient,
}

fn classify_login_failure(message: &str) -> LoginFailure {
    let m = message.to_ascii_lowercase();
    if m.contains("28p01")
        || m.contains("password authentication failed")
        || m.contains("not a valid jwt")
    {
        LoginFailure::Rejected
    } else if m.contains("28000") || (m.contains("role") && m.contains("does not exist")) {
        LoginFailure::Fatal(ErrorKind::Permission, Some(var::PGUSER))
    } else if m.contains("3d000") || (m.contains("database") && m.contains("does not exist")) {
        LoginFailure::Fatal(ErrorKind::NotFound, Some(var::PGDATABASE))
    } else if m.contains("not allowed")
        || m.contains("not permitted")
        || m.contains("allowed_outbound_hosts")
        || m.contains("invalid connection string")
        || m.contains("invalid configuration")
    {
        LoginFailure::Fatal(ErrorKind::Configuration, Some(var::PGHOST))
    } else if m.contains("certificate") || m.contains("unknownissuer") || m.contains("invalid peer")
    {
        LoginFailure::Fatal(ErrorKind::Configuration, Some(var::LAKEBASE_CA_ROOT))
    } else {
        LoginFailure::Transient
    }
}

impl<H: Http, K: Kv, C: Clock> Lakebase<H, K, C> {
    /// A client for `config` over the given host seams.
    pub fn new(config: Config, http: H, kv: K, clock: C) -> Self {
        Lakebase {
            cache: Cache::new(&config),
            config,
            http,
            kv,
            clock,
            retry: RetryPolicy::default(),
            workspace_token: Mutex::new(None),
            memory: Mutex::new(None),
            flight: Flight::default(),
            kv_skip_until_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            instance_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Replaces the retry policy (tests use a short one).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
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
        let mark = self.flight.mark();
        let started = self.clock.now();
        let mut poll = None;
        loop {
            if let Some(c) = self.fresh_in_memory() {
                return Ok((c, CredentialSource::Memory));
            }
            if let Some(e) = self.flight.failure_since(mark) {
                return Err(e);
            }
            if let Some(ticket) = self.flight.try_begin() {
                // Looked again under the ticket: a load may have ended since the first look.
                if let Some(c) = self.fresh_in_memory() {
                    return Ok((c, CredentialSource::Memory));
                }
                let result = within(&self.clock, LOAD_TIMEOUT, self.load())
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
            if elapsed(started, self.clock.now()) >= IN_INSTANCE_WAIT {
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
            self.clock.sleep(wait).await;
        }
    }

    /// The store, every operation bounded by a deadline.
    pub(crate) fn kv(&self) -> TimedKv<'_, K, C> {
        TimedKv {
            kv: &self.kv,
            clock: &self.clock,
            skip_until_ms: &self.kv_skip_until_ms,
        }
    }

    /// The credential in memory, if it may be served now.
    fn fresh_in_memory(&self) -> Option<Credential> {
        let now = self.clock.now();
        self.memory().as_ref().filter(|c| c.is_fresh(now)).cloned()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Option<Credential>> {
        // Never held across an await; a poisoned lock (a panic elsewhere) still holds plain data.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key-value store, else a mint; called by the one request that holds the ticket.
    async fn load(&self) -> Result<(Credential, CredentialSource), Error> {
        if let Some(c) = self.fresh_from_kv().await {
            *self.memory() = Some(c.clone());
            return Ok((c, CredentialSource::Kv));
        }
        if let Some(c) = self.wait_for_other_minter().await {
            *self.memory() = Some(c.clone());
            return Ok((c, CredentialSource::Kv));
        }
        // Claim the mint, let racing claims settle, and defer to whoever won.
        self.write_own_lease().await;
        self.clock.sleep(LEASE_SETTLE).await;
        if let Some(c) = self.wait_for_other_minter().await {
            *self.memory() = Some(c.clone());
            return Ok((c, CredentialSource::Kv));
        }
        let minted = self.mint().await;
        // The record first, then the lease: a waiter that sees the lease gone finds the record.
        if let Ok(c) = &minted {
            if c.is_fresh(self.clock.now()) {
                self.cache.write_credential(&self.kv(), c).await;
                *self.memory() = Some(c.clone());
            } else {
                log::warn(
                    "the new credential is already past its reuse limit (clock skew?); not caching it",
                );
            }
        }
        cache::delete(&self.kv(), &self.cache.keys.lease, "mint lease").await;
        let c = minted?;
        Ok((c, CredentialSource::Minted))
    }

    /// The credential in this instance's memory, if it may still be served, without waiting
    /// for anything (no key-value read, no mint). For callers that cannot wait: the plugin's
    /// synchronous `open`.
    pub fn cached_credential(&self) -> Option<Credential> {
        self.fresh_in_memory()
    }

    /// Forgets `rejected` in memory and in the key-value store, unless another credential has
    /// already replaced it there.
    pub async fn invalidate(&self, rejected: &Credential) {
        {
            let mut memory = self.memory();
            if memory.as_ref().is_some_and(|c| c.token == rejected.token) {
                *memory = None;
            }
        }
        if let Some(stored) = self.cache.read_credential(&self.kv()).await
            && stored.token == rejected.token
        {
            cache::delete(&self.kv(), &self.cache.keys.credential, "credential").await;
        }
    }

    /// Like [`Lakebase::invalidate`], for a caller that only has the rejected password (the
    /// plugin's `credentials.invalidate`). Returns whether a cached credential was dropped.
    pub async fn invalidate_password(&self, password: &str) -> bool {
        let mut dropped = false;
        {
            let mut memory = self.memory();
            if memory
                .as_ref()
                .is_some_and(|c| c.token.expose() == password)
            {
                *memory = None;
                dropped = true;
            }
        }
        if let Some(stored) = self.cache.read_credential(&self.kv()).await
            && stored.token.expose() == password
        {
            cache::delete(&self.kv(), &self.cache.keys.credential, "credential").await;
            dropped = true;
        }
        dropped
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
    /// endpoint, say). The credential is the same: a token is valid for every database.
    pub async fn connect_with<X: Connector>(
        &self,
        connector: &X,
        options: &ConnectOptions,
    ) -> Result<Connected<X::Connection>, Error> {
        let (credential, source) = self.credential_for(options).await?;
        match self.open(connector, &credential).await {
            Ok(connection) => Ok(Connected {
                connection,
                credential,
                source,
            }),
            Err((LoginFailure::Rejected, _)) => {
                log::info(&format!(
                    "the database rejected credential {} for role {}; minting a new one",
                    credential.token.fingerprint(),
                    credential.user
                ));
                self.invalidate(&credential).await;
                let (fresh, source) = self.credential_for(options).await?;
                match self.open(connector, &fresh).await {
                    Ok(connection) => Ok(Connected { connection, credential: fresh, source }),
                    Err((LoginFailure::Rejected, message)) => Err(Error::new(
                        ErrorKind::Database,
                        format!(
                            "postgres rejected a freshly minted token for role `{}`: check that this role exists for the principal and that `{}` names it",
                            fresh.user,
                            var::PGUSER
                        ),
                    )
                    .with_sqlstate("28P01")
                    .with_source(Cause(message))),
                    Err((failure, message)) => Err(self.login_error(failure, message, &fresh)),
                }
            }
            Err((failure, message)) => Err(self.login_error(failure, message, &credential)),
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
    /// the token).
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
    ) -> Result<X::Connection, (LoginFailure, String)> {
        let address = self.connection_string(c);
        let start = self.clock.now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let opened = within(
                &self.clock,
                CONNECT_TIMEOUT,
                connector.open(&address, self.config.ca_root.as_deref()),
            )
            .await
            .unwrap_or_else(|| {
                Err(format!(
                    "no answer within {} s (timed out)",
                    CONNECT_TIMEOUT.as_secs()
                ))
            });
            let message = match opened {
                Ok(conn) => return Ok(conn),
                Err(e) => log::cap(&scrub(&e, &[&c.token, &address])),
            };
            let failure = classify_login_failure(&message);
            if failure != LoginFailure::Transient {
                return Err((failure, message));
            }
            let elapsed = (self.clock.now() - start)
                .to_std()
                .unwrap_or(Duration::ZERO);
            match self.retry.next_delay(attempt, elapsed, None) {
                Some(delay) => {
                    log::info(&format!(
                        "connecting to {}:{} failed ({message}); retrying",
                        c.host, c.port
                    ));
                    self.clock.sleep(delay).await;
                }
                None => {
                    return Err((
                        LoginFailure::Transient,
                        format!("{message} (after {attempt} attempts)"),
                    ));
                }
            }
        }
    }

    fn login_error(&self, failure: LoginFailure, message: String, c: &Credential) -> Error {
        let (kind, text) = match failure {
            LoginFailure::Fatal(ErrorKind::Permission, _) => (
                ErrorKind::Permission,
                format!(
                    "postgres role `{}` does not exist or may not log in: create the role for this principal in Lakebase, or set `{}`",
                    c.user,
                    var::PGUSER
                ),
            ),
            LoginFailure::Fatal(ErrorKind::NotFound, _) => (
                ErrorKind::NotFound,
                format!(
                    "database `{}` does not exist: check `{}`",
                    c.database,
                    var::PGDATABASE
                ),
            ),
            LoginFailure::Fatal(ErrorKind::Configuration, Some(var::LAKEBASE_CA_ROOT)) => (
                ErrorKind::Configuration,
                format!(
                    "the TLS certificate of {}:{} is not trusted: set `{}` to the CA's PEM (or check `{}`)",
                    c.host,
                    c.port,
                    var::LAKEBASE_CA_ROOT,
                    var::PGSSLMODE
                ),
            ),
            LoginFailure::Fatal(kind, _) => (
                kind,
                format!(
                    "the host refused to connect to postgres://{}:{}: add it to `allowed_outbound_hosts` in spin.toml, and check `{}`/`{}`",
                    c.host,
                    c.port,
                    var::PGHOST,
                    var::PGPORT
                ),
            ),
            LoginFailure::Transient | LoginFailure::Rejected => (
                ErrorKind::Unavailable,
                format!("could not connect to postgres at {}:{}", c.host, c.port),
            ),
        };
        let sqlstate = ["28000", "3D000"].into_iter().find(|s| message.contains(s));
        let mut e = Error::new(kind, text).with_source(Cause(message));
        if let Some(s) = sqlstate {
            e = e.with_sqlstate(s);
        }
        e
    }

    /// The shared record, if it fits this configuration and may be served now.
    async fn fresh_from_kv(&self) -> Option<Credential> {
        let c = self.cache.read_credential(&self.kv()).await?;
        let now = self.clock.now();
        if let Err(why) = self.fits(&c, now) {
            self.cache
                .warn_once(&format!("ignoring a cached credential: {why}"));
            return None;
        }
        c.is_fresh(now).then_some(c)
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
        let lease = self.cache.read_lease(&self.kv()).await?;
        let now = self.clock.now();
        let until = DateTime::from_timestamp_millis(lease.until_ms)?
            .min(now.checked_add_signed(LEASE_TTL)?);
        if lease.holder == self.instance_id || now >= until {
            return None;
        }
        while self.clock.now() < until {
            self.clock.sleep(LEASE_POLL).await;
            if let Some(c) = self.fresh_from_kv().await {
                return Some(c);
            }
            // Gone: the holder finished (its record was written first) or gave up. Look once
            // more, then decide afresh instead of waiting out the lease.
            if self.cache.read_lease(&self.kv()).await.is_none() {
                return self.fresh_from_kv().await;
            }
        }
        None
    }

    async fn write_own_lease(&self) {
        let Some(until) = self.clock.now().checked_add_signed(LEASE_TTL) else {
            return;
        };
        let lease = Lease {
            holder: self.instance_id.clone(),
            until_ms: until.timestamp_millis(),
        };
        self.cache.write_lease(&self.kv(), &lease).await;
    }

    /// Host and user (configured, else looked up), then a new database token.
    async fn mint(&self) -> Result<Credential, Error> {
        let host = match &self.config.pghost {
            Some(h) => h.clone(),
            None => self.lookup_host().await?,
        };
        let user = match (&self.config.pguser, &self.config.auth) {
            (Some(u), _) => u.clone(),
            (None, WorkspaceAuth::OAuthM2M { client_id, .. }) => client_id.clone(),
            (None, WorkspaceAuth::Pat(_)) => self.lookup_user().await?,
        };
        let minted_at = self.clock.now();
        let minted = self.mint_token().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_failures_are_classified() {
        use LoginFailure::*;
        let cases = [
            (
                "db error: FATAL: password authentication failed for user \"x\"",
                Rejected,
            ),
            ("Error { code: SqlState(E28P01) }", Rejected),
            (
                "FATAL: Provided authentication token is not a valid JWT encoding",
                Rejected,
            ),
            (
                "FATAL: role \"x\" does not exist",
                Fatal(ErrorKind::Permission, Some("pguser")),
            ),
            (
                "FATAL: database \"x\" does not exist",
                Fatal(ErrorKind::NotFound, Some("pgdatabase")),
            ),
            (
                "destination not allowed: postgres://h:1",
                Fatal(ErrorKind::Configuration, Some("pghost")),
            ),
            (
                "invalid connection string",
                Fatal(ErrorKind::Configuration, Some("pghost")),
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                Fatal(ErrorKind::Configuration, Some("lakebase_ca_root")),
            ),
            ("Connection refused (os error 111)", Transient),
            ("", Transient),
        ];
        for (message, want) in cases {
            assert_eq!(classify_login_failure(message), want, "{message}");
        }
    }
}
