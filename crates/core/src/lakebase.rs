//! The client: serves a credential from memory, the key-value store or a fresh mint, and opens
//! Postgres connections with it, recovering once from a rejected token.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::cache::{Cache, Lease};
use crate::config::{Config, IdleSession, WorkspaceAuth};
use crate::conn_string::{AddressMemo, connection_string};
use crate::credential::{Credential, CredentialSource};
use crate::deadline::{CONNECT_TIMEOUT, LOAD_TIMEOUT, OpenWatch, SERVE_FIRST_TIMEOUT, within};
use crate::error::{Error, ErrorKind};
use crate::expiry::Expiring as _;
use crate::flight::{Flight, next_poll};
use crate::host::{Clock, ConnectError, ConnectFailure, Connector, ConnectorNow, Http, Kv};
use crate::log;
use crate::login::{LoginFailure, classify, login_error};
use crate::outage::Outage;
use crate::rejection::Rejection;
use crate::retry::{self, Attempt, RetryPolicy, Stop};
use crate::seams::Seams;
use crate::secret::{Secret, scrub};
use crate::tier::Cached as _;
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
/// One per WebAssembly instance (as `lakebase_spin::spin::lakebase` keeps it); concurrent
/// requests in the instance share it and so share one in-flight mint.
pub struct Lakebase<H, K, C> {
    config: Config,
    seams: Seams<H, K, C>,
    workspace: WorkspaceClient,
    /// The database credential: memory, then the shared store.
    credential: Tier<Credential>,
    /// A freshly minted token the database rejected: memory, then the shared store.
    rejection: Tier<Rejection>,
    /// Refreshes that failed while a credential the server still accepts was at hand.
    outage: Outage,
    flight: Flight,
    instance_id: String,
    /// Connection strings of the credentials in use.
    addresses: AddressMemo,
    /// Which opens race a host timer of their own.
    opens: OpenWatch,
    /// The fingerprint of a credential minted after a rejection (a re-mint, or the one try
    /// after a hold): kept in this instance's memory only until a login with it succeeds, so
    /// that no other instance logs in with a token that may be rejected too.
    unverified: std::sync::Mutex<Option<String>>,
    /// Set while a login was just rejected: the next mint of this instance is unverified.
    verify_next_mint: std::sync::atomic::AtomicBool,
    /// Who refreshes after the response, if anyone ([`AfterResponse`]).
    after_response: AfterResponse,
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

/// A credential and where it came from on this call: what [`Lakebase::credential`] returns.
#[derive(Clone, Debug)]
pub struct Obtained {
    /// The credential (its token is the Postgres password).
    pub credential: Credential,
    /// Where it came from on this call.
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
        let rejection = Tier::new(cache.keys.rejection.clone());
        Lakebase {
            config,
            seams: Seams::new(http, kv, clock, cache),
            workspace,
            credential,
            rejection,
            outage: Outage::default(),
            flight: Flight::default(),
            instance_id: uuid::Uuid::new_v4().to_string(),
            addresses: AddressMemo::default(),
            opens: OpenWatch::default(),
            unverified: Default::default(),
            verify_next_mint: Default::default(),
            after_response: AfterResponse::Nobody,
        }
    }

    /// Says that the adapter calls [`Lakebase::refresh`] after the response whenever
    /// [`Lakebase::refresh_due`] is true (a host that lets a request work on after answering,
    /// such as Spin 4.1's WASIp3 handlers). Then a request that finds the credential past its
    /// reuse limit but still accepted by the server is served it at once, and the refresh,
    /// with its back-off, happens after the response instead of before it.
    pub fn with_refresh_after_response(mut self) -> Self {
        self.after_response = AfterResponse::SpawnedTask;
        self
    }

    /// [`Lakebase::with_refresh_after_response`], where the adapter itself calls
    /// [`Lakebase::refresh`] at the end of every request, after the response (a WASIp2 handler
    /// that answers, then goes on: `serve_then_refresh`). Then even an instance that starts with
    /// an empty memory (each request a fresh one) serves a credential past its reuse limit at
    /// once: the refresh at the end of its own request tries the workspace. A spawned task that
    /// a host may drop with a fresh instance is not enough for this.
    pub fn with_refresh_after_every_response(mut self) -> Self {
        self.after_response = AfterResponse::Handler;
        self
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
    ///
    /// Static stability: once a credential is past its reuse limit but the server still accepts
    /// it ([`Credential::serve_until`]), it is served while another request of the instance
    /// refreshes it, and when the refresh fails for a transient reason (the refresh is then tried
    /// again after a back-off, not on every request).
    pub async fn credential(&self) -> Result<Obtained, Error> {
        let (credential, source) = self.current_credential().await?;
        // No login here to verify it with: stored for every instance as any mint is.
        self.verified(&credential).await;
        Ok(Obtained { credential, source })
    }

    /// [`Lakebase::credential`], as the pair the cache's internals pass around.
    async fn current_credential(&self) -> Result<(Credential, CredentialSource), Error> {
        let clock = &self.seams.clock;
        // The warm path: one clock read and one copy.
        if let Some(c) = self.credential.fresh_in_memory(clock.now()) {
            return Ok((c, CredentialSource::Memory));
        }
        let mark = self.flight.mark();
        let started = clock.now();
        let mut poll = None;
        loop {
            let now = clock.now();
            if let Some(c) = self.credential.fresh_in_memory(now) {
                return Ok((c, CredentialSource::Memory));
            }
            let fallback = self
                .credential
                .in_memory()
                .filter(|c| now < c.serve_until());
            if let Some(c) = &fallback
                && (self.flight.is_busy()
                    || self.outage.waiting(now)
                    || self.after_response != AfterResponse::Nobody)
            {
                return Ok((c.clone(), CredentialSource::Memory));
            }
            if let Some(e) = self.flight.failure_since(mark) {
                return Err(e);
            }
            if let Some(ticket) = self.flight.try_begin() {
                // Looked again under the ticket: a load may have ended since the first look.
                if let Some(c) = self.credential.fresh_in_memory(clock.now()) {
                    return Ok((c, CredentialSource::Memory));
                }
                let fallback = fallback.map(|c| (c, CredentialSource::Memory));
                let result = self.load_or_fall_back(fallback, Goal::Serve).await;
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

    /// Whether the credential in this instance's memory is in the last part of its reuse window
    /// ([`Credential::refresh_from`]), or past it but still accepted by the server
    /// ([`Credential::serve_until`]: its refresh failed), and nothing is refreshing it and no
    /// back-off holds. A host that lets a request work on after its response (Spin 4.1's WASIp3
    /// handlers) then runs [`Lakebase::refresh`] there, so that no request waits for the
    /// rotation's mint. Reads memory only.
    pub fn refresh_due(&self) -> bool {
        let now = self.seams.clock.now();
        // Nearly always false on the first test: the credential is not due.
        self.credential
            .in_memory_is(|c| now >= c.refresh_from() && now < c.serve_until())
            && !self.flight.is_busy()
            && !self.outage.waiting(now)
    }

    /// Replaces the credential in memory ahead of its reuse limit, when [`Lakebase::refresh_due`]
    /// says so: a newer record from the key-value store, else a mint (one per instance at a time,
    /// other instances defer to the one holding the mint lease). A failure is logged, never
    /// returned: requests keep the credential they have, and a transient failure backs off.
    pub async fn refresh(&self) {
        let Some(ticket) = self.flight.try_begin() else {
            return;
        };
        let now = self.seams.clock.now();
        let Some(held) = self
            .credential
            .in_memory()
            .filter(|c| now >= c.refresh_from() && now < c.serve_until())
        else {
            return;
        };
        let serve_until = held.serve_until();
        // Ahead of the reuse limit a record that is not due yet will do; past it, any fresh one.
        let goal = if held.is_fresh(now) {
            Goal::Ahead
        } else {
            Goal::Fresh
        };
        let result = self
            .load_or_fall_back(Some((held, CredentialSource::Memory)), goal)
            .await;
        if let Err(e) = result {
            // Not tried again on every request meanwhile, whatever the failure.
            let wait = self.outage.failed(now, serve_until);
            log::warn(&format!(
                "refreshing the database credential ahead failed ({}): {e}; next try in {:.1} s",
                e.kind(),
                wait.as_secs_f32()
            ));
        }
        // Nothing is handed to waiting requests: they serve the credential they have.
        drop(ticket);
    }

    /// One load under the ticket, within [`LOAD_TIMEOUT`]. A transient failure with a `fallback`
    /// at hand (a credential the server still accepts) serves the fallback and backs off.
    async fn load_or_fall_back(
        &self,
        fallback: Option<(Credential, CredentialSource)>,
        goal: Goal,
    ) -> Result<(Credential, CredentialSource), Error> {
        let clock = &self.seams.clock;
        let result = within(clock, LOAD_TIMEOUT, self.load(fallback.clone(), goal))
            .await
            .unwrap_or_else(|| Err(load_timed_out()));
        match (result, fallback) {
            (Ok(loaded), _) => Ok(loaded),
            (Err(e), Some(fallback)) if e.kind() == ErrorKind::Unavailable => {
                let past = self.seams.clock.now() >= fallback.0.serve_until();
                match self.serve_through(e, fallback).await {
                    // The credential in hand ran out during the short attempt: one full
                    // attempt, whose error (if any) says why the workspace failed.
                    Err(_) if past && goal != Goal::Ahead => {
                        within(clock, LOAD_TIMEOUT, self.load(None, goal))
                            .await
                            .unwrap_or_else(|| Err(load_timed_out()))
                    }
                    served => served,
                }
            }
            (Err(e), _) => Err(e),
        }
    }

    /// A refresh failed for a transient reason with `fallback` at hand: logs it, backs off
    /// (this instance by memory, the others by a lease that holds until the next try) and
    /// serves the fallback.
    /// Past [`Credential::serve_until`] (the attempt itself took that long) it is not served:
    /// the error is returned.
    async fn serve_through(
        &self,
        e: Error,
        fallback: (Credential, CredentialSource),
    ) -> Result<(Credential, CredentialSource), Error> {
        let c = &fallback.0;
        let now = self.seams.clock.now();
        if now >= c.serve_until() {
            return Err(e);
        }
        let wait = self.outage.failed(now, c.serve_until());
        log::warn(&format!(
            "refreshing the database credential failed ({}): {e}; serving credential {} until {} at the latest, next try in {:.1} s",
            e.kind(),
            c.token.fingerprint(),
            c.serve_until().to_rfc3339(),
            wait.as_secs_f32()
        ));
        // Every instance (each request a fresh one, on most hosts) waits for the next try too,
        // and the next failure, wherever it happens, doubles the wait.
        self.write_lease(wait, self.outage.delay(), None).await;
        // The next requests of this instance serve it from memory until the next try.
        self.credential.remember(c.clone());
        Ok(fallback)
    }

    /// The key-value store, else a mint; called by the one request that holds the ticket.
    /// `fallback`: a credential the server still accepts, served instead of waiting for another
    /// instance's mint.
    async fn load(
        &self,
        fallback: Option<(Credential, CredentialSource)>,
        goal: Goal,
    ) -> Result<(Credential, CredentialSource), Error> {
        let now = self.seams.clock.now();
        let stored = self.stored_fitting(now).await;
        if let Some(c) = stored.as_ref().filter(|c| goal.met_by(c, now)) {
            self.credential.remember(c.clone());
            self.outage.clear();
            return Ok((c.clone(), CredentialSource::Kv));
        }
        // A cold instance (every request on Spin's WASIp2) has only the store's record.
        let fallback = fallback.or_else(|| {
            stored
                .filter(|c| now < c.serve_until())
                .map(|c| (c, CredentialSource::Kv))
        });
        // Off the happy path: what other instances left in the lease (a back-off, a rejection).
        let lease = self.seams.cache.read_lease(&self.seams.kv()).await;
        let (probing, lease) = match (self.take_in(lease.as_ref(), now), fallback.clone()) {
            // Backing off: served at once, no attempt, whichever instance this is.
            (Verdict::Wait, Some(fallback)) => return Ok(fallback),
            // The adapter refreshes at the end of this request ([`Lakebase::refresh_due`] reads
            // memory): served at once, the workspace is tried after the answer.
            (Verdict::Go, Some(fallback))
                if goal == Goal::Serve && self.after_response == AfterResponse::Handler =>
            {
                self.credential.remember(fallback.0.clone());
                return Ok(fallback);
            }
            // Nothing to serve: waiting on a back-off brings no record; try.
            (Verdict::Wait, None) => (None, None),
            (Verdict::Go, _) => (None, lease),
            (Verdict::Rejected(r), _) => return Err(r.error()),
            (Verdict::Probe(r), _) => (Some(r), None),
        };
        if let Some(found) = self.defer_to_other_minter(fallback.as_ref(), lease).await? {
            return Ok(found);
        }
        // Claim the mint, let racing claims settle, and defer to whoever won. The claim keeps
        // the back-off and the rejection it found, for whoever tries next.
        let carried = probing.as_ref().map(Rejection::to_record);
        self.write_lease(
            LEASE_TTL.to_std().unwrap_or_default(),
            self.outage.delay(),
            carried,
        )
        .await;
        self.seams.clock.sleep(LEASE_SETTLE).await;
        let lease = self.seams.cache.read_lease(&self.seams.kv()).await;
        if let Some(found) = self.defer_to_other_minter(fallback.as_ref(), lease).await? {
            return Ok(found);
        }
        // A record written since the first look, by an instance that minted and let its lease
        // go before this one looked for a lease (cold instances that start a few milliseconds
        // apart, as every request on Spin's WASIp2): taken instead of a second mint.
        let now = self.seams.clock.now();
        if let Some(c) = self
            .stored_fitting(now)
            .await
            .filter(|c| goal.met_by(c, now))
        {
            self.credential.remember(c.clone());
            self.outage.clear();
            return Ok((c, CredentialSource::Kv));
        }
        // With a credential in hand the back-off, not the retry policy, says when the workspace
        // is tried again: one try of each call. A request waiting to serve it waits at most a
        // second; a refresh ahead (after the response, nobody waiting) and a cold start longer.
        let once = fallback.is_some().then(|| self.seams.one_attempt());
        let minted = if fallback.is_some() && goal != Goal::Ahead {
            let clock = &self.seams.clock;
            within(clock, SERVE_FIRST_TIMEOUT, self.mint())
                .await
                .unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the workspace did not answer within {:.1} s",
                            SERVE_FIRST_TIMEOUT.as_secs_f32()
                        ),
                    ))
                })
        } else {
            self.mint().await
        };
        drop(once);
        let minted = match minted {
            Ok(c) => c,
            Err(e) => {
                if let Some(fallback) = fallback.filter(|_| e.kind() == ErrorKind::Unavailable) {
                    return self.serve_through(e, fallback).await;
                }
                let lease = &self.seams.cache.keys.lease;
                self.seams
                    .cache
                    .delete(&self.seams.kv(), lease, "mint lease")
                    .await;
                return Err(e);
            }
        };
        self.outage.clear();
        let after_rejection = self
            .verify_next_mint
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if probing.is_some() || after_rejection {
            // In memory only until a login with it succeeds ([`Lakebase::verified`]); the lease
            // (this instance's) holds the others off meanwhile.
            self.credential.remember(minted.clone());
            *self.unverified_slot() = Some(minted.token.fingerprint());
            return Ok((minted, CredentialSource::Minted));
        }
        // The record first, then the lease: a waiter that sees the lease gone finds the record.
        let (kv, now) = (self.seams.kv(), self.seams.clock.now());
        self.credential
            .keep(&self.seams.cache, &kv, &minted, now)
            .await;
        self.seams
            .cache
            .delete(&kv, &self.seams.cache.keys.lease, "mint lease")
            .await;
        Ok((minted, CredentialSource::Minted))
    }

    fn unverified_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.unverified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `c` is the credential minted after a rejection and not yet verified by a login.
    fn is_unverified(&self, c: &Credential) -> bool {
        self.unverified_slot()
            .as_deref()
            .is_some_and(|f| f == c.token.fingerprint())
    }

    /// A login with `c` succeeded (or nothing can verify it): when it was minted after a
    /// rejection, it now goes to the store for every instance, and the lease that held them off
    /// (with the rejection it carried) is dropped.
    async fn verified(&self, c: &Credential) {
        if !self.is_unverified(c) {
            return;
        }
        *self.unverified_slot() = None;
        let (cache, kv, now) = (&self.seams.cache, self.seams.kv(), self.seams.clock.now());
        self.credential.keep(cache, &kv, c, now).await;
        cache.delete(&kv, &cache.keys.lease, "mint lease").await;
        self.rejection.forget_all(cache, &kv).await;
    }

    /// Takes in what another instance left in `lease`: its back-off (this instance then waits
    /// for the same next try and doubles from it) and its rejection.
    fn take_in(&self, lease: Option<&Lease>, now: DateTime<Utc>) -> Verdict {
        let Some(lease) = lease else {
            return Verdict::Go;
        };
        let until = DateTime::from_timestamp_millis(lease.until_ms).unwrap_or(now);
        let live = lease.holder != self.instance_id && now < until;
        if let Some(r) = lease.rejection() {
            if r.is_fresh(now) {
                self.rejection.remember(r.clone());
            }
            // Held, or past its hold while another instance tries once: the same error, with
            // neither a login nor a mint. Past the hold with nobody trying: try once.
            return if r.is_fresh(now) || live {
                Verdict::Rejected(r)
            } else {
                Verdict::Probe(r)
            };
        }
        if lease.backoff_ms > 0 {
            self.outage
                .adopt(until, Duration::from_millis(lease.backoff_ms));
        }
        if live && lease.backoff_ms > 0 {
            Verdict::Wait
        } else {
            Verdict::Go
        }
    }

    /// When another instance holds a live mint lease (`lease`, just read): the `fallback` at
    /// once if there is one, else its record once it is written (see
    /// [`Lakebase::wait_for_other_minter`]), or the rejection it records instead.
    async fn defer_to_other_minter(
        &self,
        fallback: Option<&(Credential, CredentialSource)>,
        lease: Option<Lease>,
    ) -> Result<Option<(Credential, CredentialSource)>, Error> {
        let lease = lease.filter(|l| self.is_live_elsewhere(l));
        let Some(lease) = lease else {
            return Ok(None);
        };
        if let Some(r) = lease.rejection() {
            return Err(r.error());
        }
        match fallback {
            Some(f) => Ok(Some(f.clone())),
            None => match self.wait_for_other_minter(lease).await {
                Waited::Found(c) => Ok(Some((c, CredentialSource::Kv))),
                Waited::Rejected(r) => Err(r.error()),
                Waited::Nothing => Ok(None),
            },
        }
    }

    /// Whether `lease` is another instance's and still holds.
    fn is_live_elsewhere(&self, lease: &Lease) -> bool {
        let now = self.seams.clock.now();
        lease.holder != self.instance_id
            && DateTime::from_timestamp_millis(lease.until_ms).is_some_and(|u| now < u)
    }

    /// Forgets the credential whose token is `token`, in memory and in the key-value store,
    /// unless another credential has already replaced it there. Returns whether a cached
    /// credential was dropped. [`Lakebase::connect`] does this itself when a login is rejected;
    /// call it when a connection opened otherwise (with [`Lakebase::connection_string`]) is.
    pub async fn invalidate(&self, token: &Secret) -> bool {
        let matches = |c: &Credential| c.token == *token;
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
    ///
    /// When a token minted just now is rejected too, the role is wrong: that is remembered for
    /// 30 s (doubling to 5 minutes while it recurs), in memory and in the key-value store, and
    /// meanwhile every request gets the same `database` error without a mint.
    pub async fn connect_with<X: Connector>(
        &self,
        connector: &X,
        options: &ConnectOptions,
    ) -> Result<Connected<X::Connection>, Error> {
        // The warm path reads the clock once (here) and copies the credential and its
        // connection string out of memory; no host timer is armed unless the open waits.
        let now = self.seams.clock.now();
        if let Some(r) = self.rejection.fresh_in_memory(now) {
            return Err(r.error());
        }
        let (credential, source, started) = match self.credential.fresh_in_memory(now) {
            Some(c) => (with_database(c, options), CredentialSource::Memory, now),
            None => {
                let (c, source) = self.credential_for(options).await?;
                (c, source, self.seams.clock.now())
            }
        };
        let (failure, first_message) =
            match self.open(connector, &credential, options, started).await {
                Ok(connection) => {
                    self.verified(&credential).await;
                    return Ok(Connected {
                        connection,
                        credential,
                        source,
                    });
                }
                Err((LoginFailure::Rejected, message)) => (credential, message),
                Err((failure, message)) => {
                    return Err(login_error(
                        failure,
                        message,
                        &credential,
                        self.ca_root_set(options),
                    ));
                }
            };
        if let Some(r) = self.known_rejection(&failure).await {
            return Err(r.error());
        }
        // The one try after a hold (or a re-mint) rejected again: the role is still wrong.
        if self.is_unverified(&failure) {
            *self.unverified_slot() = None;
            return Err(self.remember_rejection(&failure, first_message).await);
        }
        log::info(&format!(
            "the database rejected credential {} for role {}; minting a new one",
            failure.token.fingerprint(),
            failure.user
        ));
        self.invalidate(&failure.token).await;
        self.verify_next_mint
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let got = self.credential_for(options).await;
        self.verify_next_mint
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let (fresh, source) = got?;
        let started = self.seams.clock.now();
        match self.open(connector, &fresh, options, started).await {
            Ok(connection) => {
                self.verified(&fresh).await;
                Ok(Connected {
                    connection,
                    credential: fresh,
                    source,
                })
            }
            Err((LoginFailure::Rejected, message)) => {
                *self.unverified_slot() = None;
                Err(self.remember_rejection(&fresh, message).await)
            }
            Err((failure, message)) => Err(login_error(
                failure,
                message,
                &fresh,
                self.ca_root_set(options),
            )),
        }
    }

    /// The rejection another request (of any instance) recorded for this very token, if it
    /// still holds; then remembered in memory too.
    async fn known_rejection(&self, rejected: &Credential) -> Option<Rejection> {
        let now = self.seams.clock.now();
        let r = self
            .rejection
            .stored(&self.seams.cache, &self.seams.kv())
            .await
            .filter(|r| r.token == rejected.token.fingerprint() && r.is_fresh(now))?;
        self.rejection.remember(r.clone());
        Some(r)
    }

    /// Records that the database rejected `fresh`, minted just now; returns the error. The
    /// rejection goes to the store twice: as its own record (the doubling of the hold, and
    /// instances that hold that very token in memory), and in the lease that every instance
    /// reads when it finds no credential (the credential's record is dropped): until the hold
    /// ends they answer this error without a login or a mint.
    async fn remember_rejection(&self, fresh: &Credential, message: String) -> Error {
        let (cache, kv) = (&self.seams.cache, self.seams.kv());
        let now = self.seams.clock.now();
        let previous = self.rejection.stored(cache, &kv).await;
        let r = Rejection::new(fresh, message, now, previous.as_ref());
        log::warn(&format!(
            "the database rejected a freshly minted token for role {}: not minting again before {}",
            r.user,
            r.until.to_rfc3339()
        ));
        self.rejection.keep(cache, &kv, &r, now).await;
        self.invalidate(&fresh.token).await;
        let hold = (r.until - now).to_std().unwrap_or_default();
        self.write_lease(hold, Duration::ZERO, Some(r.to_record()))
            .await;
        r.error()
    }

    /// Forgets a remembered rejection (the role was created, `pguser` fixed elsewhere): in this
    /// instance's memory and in the store, so that the next request of any instance logs in
    /// again instead of waiting for the hold to end. Returns whether one was held.
    pub async fn clear_rejection(&self) -> bool {
        let (cache, kv) = (&self.seams.cache, self.seams.kv());
        let now = self.seams.clock.now();
        let mut held = self.rejection.fresh_in_memory(now).is_some();
        if let Some(lease) = cache.read_lease(&kv).await
            && lease.rejected.is_some()
        {
            cache.delete(&kv, &cache.keys.lease, "mint lease").await;
            held = true;
        }
        if self.rejection.stored(cache, &kv).await.is_some() {
            held = true;
        }
        self.rejection.forget_all(cache, &kv).await;
        held
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
        let Some(credential) = self.credential.fresh_in_memory(self.seams.clock.now()) else {
            return Err(not_in_memory());
        };
        let credential = with_database(credential, options);
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
                let (failure, message) = failure_and_text(&e, &[&credential.token, &address]);
                Err(match classify(&failure, &message) {
                    LoginFailure::Rejected => Error::new(
                        ErrorKind::Database,
                        format!(
                            "postgres rejected the credential in memory for role `{}`: a synchronous connect cannot mint a new one; the next asynchronous connect does",
                            credential.user
                        ),
                    )
                    .with_sqlstate("28P01")
                    .with_source(crate::error::Cause(message)),
                    failure => login_error(failure, message, &credential, ca_root.is_some()),
                })
            }
        }
    }

    /// The current credential, adjusted to `options`.
    async fn credential_for(
        &self,
        options: &ConnectOptions,
    ) -> Result<(Credential, CredentialSource), Error> {
        let (credential, source) = self.current_credential().await?;
        Ok((with_database(credential, options), source))
    }

    /// The URL-form connection string of `c` with the configured `sslmode` (a secret: it holds
    /// the token), for a Postgres client of our hosts that is not a [`Connector`] (`verify-full`
    /// is written `require`: [`SslMode::for_host`](crate::SslMode::for_host)).
    ///
    /// It asks the server to close the session after it has been idle for
    /// [`Credential::idle_session_timeout`] (or `lakebase_idle_session_timeout`), so that
    /// sessions a pooling host keeps after the token was replaced do not pile up.
    ///
    /// The string of a credential is built once (percent-encoding a token of about a kilobyte)
    /// and then served from memory while that credential is in use.
    pub fn connection_string(&self, c: &Credential) -> Secret {
        self.addresses
            .get_or_build(c, || self.string_with(c, self.config.sslmode.for_host()))
    }

    /// `c`'s connection string for code we do not control (a component that speaks Postgres
    /// itself, in any language): as [`Lakebase::connection_string`], with `sslmode=verify-full`
    /// where that says `require`, since libpq, psycopg, pgx and node-postgres verify the
    /// server's certificate only then. With `lakebase_ca_root` set, the client must also be
    /// given that CA (libpq: `sslrootcert=<file>`); with Lakebase's public certificates, the
    /// client's trusted roots (libpq 16: `sslrootcert=system`). Spin's `spin:postgres` refuses
    /// this string: give it [`Lakebase::connection_string`].
    pub fn client_connection_string(&self, c: &Credential) -> Secret {
        self.string_with(c, self.config.sslmode.for_clients())
    }

    /// `c`'s connection string with `sslmode`, asking for the configured `idle_session_timeout`.
    fn string_with(&self, c: &Credential, sslmode: crate::SslMode) -> Secret {
        let idle = match self.config.idle_session {
            IdleSession::FromCredential => Some(c.idle_session_timeout()),
            IdleSession::Seconds(secs) => Some(Duration::from_secs(secs.into())),
            IdleSession::Off => None,
        };
        connection_string(
            &c.user,
            &c.token,
            &c.host,
            c.port,
            &c.database,
            sslmode,
            idle,
        )
    }

    /// One login, retrying transient failures within the retry policy (its time budget counted
    /// from `started`, a clock reading the caller already has).
    async fn open<X: Connector>(
        &self,
        connector: &X,
        c: &Credential,
        options: &ConnectOptions,
        started: DateTime<Utc>,
    ) -> Result<X::Connection, (LoginFailure, String)> {
        let address = self.connection_string(c);
        let ca_root = options
            .ca_root
            .as_deref()
            .or(self.config.ca_root.as_deref());
        let clock = &self.seams.clock;
        let first = std::cell::Cell::new(true);
        let started_ms = started.timestamp_millis();
        let attempt = || async {
            // Only a first attempt may go untimed: a retry follows a failure.
            let untimed = if first.replace(false) {
                self.opens.untimed(started_ms)
            } else {
                None
            };
            let open = connector.open(&address, ca_root);
            let opened = match untimed {
                Some(_slot) => open.await,
                None => within(clock, CONNECT_TIMEOUT, open)
                    .await
                    .unwrap_or_else(|| {
                        Err(ConnectError::new(
                            ConnectFailure::Network,
                            format!(
                                "no answer within {} s (timed out)",
                                CONNECT_TIMEOUT.as_secs()
                            ),
                        ))
                    }),
            };
            let message = match opened {
                Ok(conn) => {
                    self.opens.succeeded(started_ms);
                    return Attempt::Done(Ok(conn));
                }
                Err(e) => failure_and_text(&e, &[&c.token, &address]),
            };
            let (failure, message) = message;
            match classify(&failure, &message) {
                LoginFailure::Transient => Attempt::Again {
                    failure: format!("connecting to {}:{} failed ({message})", c.host, c.port),
                    hint: None,
                },
                failure => Attempt::Done(Err((failure, message))),
            }
        };
        retry::run_since(clock, &self.seams.retry, started, attempt)
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

    /// Whether a CA root is given to the connect (`options`' own, else the configuration's).
    fn ca_root_set(&self, options: &ConnectOptions) -> bool {
        options.ca_root.is_some() || self.config.ca_root.is_some()
    }

    /// The shared record, fresh or not, if it fits this configuration (else logged once).
    async fn stored_fitting(&self, now: DateTime<Utc>) -> Option<Credential> {
        let stored = self
            .credential
            .stored(&self.seams.cache, &self.seams.kv())
            .await?;
        match self.fits(&stored, now) {
            Ok(()) => Some(stored),
            Err(why) => {
                self.seams
                    .cache
                    .warn_once(&format!("ignoring a cached credential: {why}"));
                None
            }
        }
    }

    /// The shared record, if it fits this configuration and may be served now.
    async fn fresh_from_kv(&self) -> Option<Credential> {
        let now = self.seams.clock.now();
        let c = self.stored_fitting(now).await.filter(|c| c.is_fresh(now))?;
        self.credential.remember(c.clone());
        Some(c)
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

    /// Another instance holds the live mint `lease`: waits (polling) for its record until the
    /// lease ends, for at most [`LEASE_TTL`] from now whatever the lease says. Stops waiting
    /// when the lease is deleted (its holder failed) or turns into a rejection (the holder's
    /// login was rejected: its error, at once).
    async fn wait_for_other_minter(&self, lease: Lease) -> Waited {
        let (clock, cache) = (&self.seams.clock, &self.seams.cache);
        let now = clock.now();
        let Some(until) = DateTime::from_timestamp_millis(lease.until_ms)
            .and_then(|u| Some(u.min(now.checked_add_signed(LEASE_TTL)?)))
        else {
            return Waited::Nothing;
        };
        while clock.now() < until {
            clock.sleep(LEASE_POLL).await;
            if let Some(c) = self.fresh_from_kv().await {
                return Waited::Found(c);
            }
            match cache.read_lease(&self.seams.kv()).await {
                // Gone: the holder finished (its record was written first) or gave up. Look
                // once more, then decide afresh instead of waiting out the lease.
                None => {
                    return match self.fresh_from_kv().await {
                        Some(c) => Waited::Found(c),
                        None => Waited::Nothing,
                    };
                }
                Some(l) => {
                    if let Some(r) = l.rejection()
                        && r.is_fresh(clock.now())
                    {
                        self.rejection.remember(r.clone());
                        return Waited::Rejected(r);
                    }
                }
            }
        }
        Waited::Nothing
    }

    /// Writes this instance's lease, holding off other instances' mints for `hold`, with the
    /// back-off and the rejection that must outlive this request.
    async fn write_lease(
        &self,
        hold: Duration,
        backoff: Duration,
        rejected: Option<crate::rejection::RejectionRecord>,
    ) {
        let Some(until) = TimeDelta::from_std(hold)
            .ok()
            .and_then(|h| self.seams.clock.now().checked_add_signed(h))
        else {
            return;
        };
        let lease = Lease {
            holder: self.instance_id.clone(),
            until_ms: until.timestamp_millis(),
            backoff_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            rejected,
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

/// A whole load ran past [`LOAD_TIMEOUT`].
fn load_timed_out() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "gave up obtaining a credential after {} s: the workspace or the key-value store did not answer in time",
            LOAD_TIMEOUT.as_secs()
        ),
    )
}

/// What the lease that another instance left means for a load.
enum Verdict {
    /// Nothing stops this instance from trying.
    Go,
    /// A refresh is backing off: serve what there is, do not try.
    Wait,
    /// The role is rejected: answer this, without a login or a mint.
    Rejected(Rejection),
    /// A rejection's hold is over and nobody tries: this instance tries once.
    Probe(Rejection),
}

/// How waiting for another instance's mint ended.
enum Waited {
    Found(Credential),
    Rejected(Rejection),
    Nothing,
}

/// Who runs [`Lakebase::refresh`] after a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterResponse {
    /// Nobody: the request that finds the credential due refreshes it.
    Nobody,
    /// A task the adapter spawns (Spin 4.1's WASIp3), which a host may drop with an instance
    /// that served only one request.
    SpawnedTask,
    /// The handler itself, after it has sent its answer (`serve_then_refresh`): also in an
    /// instance that starts with an empty memory.
    Handler,
}

/// What a load must find in the store to stop there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    /// A credential that may be served now, for a request.
    Serve,
    /// A credential that may be served now, for a refresh (after a response).
    Fresh,
    /// One that is not due for a refresh ahead yet.
    Ahead,
}

impl Goal {
    fn met_by(self, c: &Credential, now: DateTime<Utc>) -> bool {
        match self {
            Goal::Serve | Goal::Fresh => c.is_fresh(now),
            Goal::Ahead => c.is_fresh(now) && now < c.refresh_from(),
        }
    }
}

/// `c` for the database `options` asks for, if any.
fn with_database(mut c: Credential, options: &ConnectOptions) -> Credential {
    if let Some(database) = &options.database {
        c.database.clone_from(database);
    }
    c
}

/// The error of a synchronous connect ([`Lakebase::connect_now`]) when this instance's memory
/// holds no credential yet: kind `unavailable`, saying to make one asynchronous call first. A
/// host adapter that keeps its client in a `static` returns it from its own synchronous connect
/// when that client was never created.
pub fn not_in_memory() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "no credential in this instance's memory yet, and a synchronous connect cannot wait to obtain one: make one asynchronous call first (connect or credential)",
    )
}

/// A connect error's kind, and its text as it may be shown: secrets scrubbed, length capped, and
/// the server's SQLSTATE in it when the kind carries one and the text does not.
fn failure_and_text(e: &ConnectError, secrets: &[&Secret]) -> (ConnectFailure, String) {
    let mut text = log::cap(&scrub(&e.message, secrets));
    if let ConnectFailure::Server { sqlstate } = &e.failure
        && !text.contains(sqlstate.as_str())
    {
        text.push_str(&format!(" (SQLSTATE {sqlstate})"));
    }
    (e.failure.clone(), text)
}
